"""Alice step 4b: questions with one cluster keep the teacher's answer ('original' rows); for the others the
summarizer LLM states the teacher's uncertainty -> *_uncertainty.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn
"""

from alice import cli
from alice.alice_stages import run_uncertainty, setting_from_args, stage_parser
from alice.registry import SUMMARIZER_HUB_ID, SUMMARIZER_LOCAL_DIR


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    p.add_argument("--summarizer-model", default=None,
                   help=f"LLM that writes the uncertainty statements (default {SUMMARIZER_LOCAL_DIR} when present, "
                        f"else {SUMMARIZER_HUB_ID})")
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    run_uncertainty(setting_from_args(p, args, argv), cli.generation_options(args), summarizer=args.summarizer_model)


if __name__ == "__main__":
    main()
