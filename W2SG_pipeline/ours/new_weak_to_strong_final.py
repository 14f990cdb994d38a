"""Alice step 4d: the student writes its final answer from its own answer, the teacher's and the uncertainty
('new' rows); with the 'original' rows they make the student's training file *_to_*.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_final.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn
"""

from alice import cli
from alice.alice_stages import run_final, setting_from_args, stage_parser
from alice.options import FINAL_TRIES


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    p.add_argument("--final-tries", type=cli.positive_int, default=None,
                   help=f"answers sampled per question (default {FINAL_TRIES}; --seed-exact: 1); the first well-formed "
                        "one (the required final-answer format, reasoning before it) is kept, a question with none is "
                        "dropped (--seed-exact: the one sample is kept whatever its form)")
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.seed_exact and args.final_tries not in (None, 1):
        p.error("--seed-exact samples one final answer per question, kept whatever its form: leave out --final-tries")
    tries = args.final_tries or (1 if args.seed_exact else FINAL_TRIES)
    run_final(setting_from_args(p, args, argv), cli.generation_options(args), final_tries=tries)


if __name__ == "__main__":
    main()
