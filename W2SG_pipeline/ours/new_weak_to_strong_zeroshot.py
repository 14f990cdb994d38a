"""Alice step 4c: the untrained student answers each uncertain question zero-shot -> *_zeroshot.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_zeroshot.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn
"""

from alice import cli
from alice.alice_stages import run_zeroshot, setting_from_args, stage_parser


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    run_zeroshot(setting_from_args(p, args, argv), cli.generation_options(args))


if __name__ == "__main__":
    main()
