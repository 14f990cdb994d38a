"""An ablation of Alice's proactive step: its training file, made from single-turn Alice's stage files
-> data/ours/<data>/ablations/<model>_<teacher>_to_<student>_<data>_<ablation>.jsonl (docs/ablations.md)

    python W2SG_pipeline/ours/new_weak_to_strong_ablation.py --data gsm8k --model qwen2.5 --teacher 0.5B --student 1.5B --ablation majority_vote

Then train and evaluate it as a method variant: training/SFT.py --method ours-wts-stage2 --ours-wts-type <ablation>;
evaluation.py --method ours-wts --ours-wts-type <ablation>. ``python -m alice.pipeline --ablations all`` runs all.
"""

from alice import cli
from alice.ablations import NAMES, run_ablation
from alice.alice_stages import setting_from_args, stage_parser


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    p.add_argument("--ablation", required=True, choices=NAMES, help="which ablation (docs/ablations.md)")
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    run_ablation(setting_from_args(p, args, argv), args.ablation, cli.generation_options(args))


if __name__ == "__main__":
    main()
