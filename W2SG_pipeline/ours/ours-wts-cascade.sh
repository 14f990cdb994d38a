#!/usr/bin/env bash
# Cascade Alice, hop 2 (the trained mid-level model -> student): the four stages in order.
#
#   bash W2SG_pipeline/ours/ours-wts-cascade.sh                      # the paper's example: hotpotqa, qwen2.5 1.5B -> 3B -> 7B
#   bash W2SG_pipeline/ours/ours-wts-cascade.sh --data gsm8k --teacher 0.5B --midlevel 1.5B --student 3B --gpus 0,1
#   DATA=triviaqa NUM_SAMPLES=20 bash W2SG_pipeline/ours/ours-wts-cascade.sh --limit 50
#
# Every setting below can be set by an environment variable of the same name or by `--key value`
# (e.g. --num-samples 20 for NUM_SAMPLES); any other flag (--data-dir, --root, --limit, --max-new-tokens,
# --batch-size, --seed, ...) is passed to all four stages. Needs the trained mid-level model of hop 1
# (teacher -> mid-level: ours-wts-single.sh --teacher T --student MID, then
# training/SFT.py --teacher T --student MID --method ours-wts-stage2 --ours-wts-type cascade1); then train the
# student with training/SFT.py --teacher MID --student S --method ours-wts-stage2 --ours-wts-type cascade2.
set -euo pipefail

METHOD=cascade
TEACHER=${TEACHER:-1.5B}
MIDLEVEL=${MIDLEVEL:-3B}
STUDENT=${STUDENT:-7B}
HELP_LINES=13
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_alice_stages.sh"
