"""Alice step 4d: the student writes its final answer from its own answer, the teacher's and the uncertainty
('new' rows); with the 'original' rows they make the student's training file *_to_*.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_final.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn
"""

from alice import cli
from alice.alice_stages import run_final, setting_from_args, stage_parser
from alice.options import FINAL_TRIES


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    p.add_argument("--final-tries", type=cli.positive_int, default=FINAL_TRIES,
                   help="answers sampled per question; the first well-formed one (the required final-answer format, "
                        "reasoning before it) is kept, a question with none is dropped")
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    run_final(setting_from_args(p, args, argv), cli.generation_options(args), final_tries=args.final_tries)


if __name__ == "__main__":
    main()
