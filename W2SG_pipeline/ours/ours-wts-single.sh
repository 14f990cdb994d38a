#!/usr/bin/env bash
# Alice, single-turn (teacher -> student): the four stages in order.
#
#   bash W2SG_pipeline/ours/ours-wts-single.sh                      # the paper's example: hotpotqa, qwen2.5 3B -> 7B
#   bash W2SG_pipeline/ours/ours-wts-single.sh --data gsm8k --teacher 1.5B --student 3B --gpus 0,1
#   DATA=triviaqa NUM_SAMPLES=20 bash W2SG_pipeline/ours/ours-wts-single.sh --limit 50
#
# Every setting below can be set by an environment variable of the same name or by `--key value`
# (e.g. --num-samples 20 for NUM_SAMPLES); any other flag (--data-dir, --root, --limit, --max-new-tokens,
# --batch-size, --seed, ...) is passed to all four stages. Needs the trained teacher
# (training/SFT.py --method ours-wts-stage1 --ours-wts-type singleturn); then train the student with
# training/SFT.py --method ours-wts-stage2 --ours-wts-type singleturn.
set -euo pipefail

METHOD=singleturn
TEACHER=${TEACHER:-3B}
MIDLEVEL=${MIDLEVEL:-}
STUDENT=${STUDENT:-7B}
HELP_LINES=12
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_alice_stages.sh"
