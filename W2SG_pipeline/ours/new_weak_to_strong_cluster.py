"""Alice step 4a: the trained teacher (cascade: the trained mid-level model) samples N answers per question of
its W2S part and they are clustered -> data/ours[_cascade_halfhalf]/<data>/*_sampled_clustered.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_cluster.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn
"""

from alice import cli
from alice.alice_stages import run_cluster, setting_from_args, stage_parser
from alice.clustering import DEFAULT_EMBEDDING_MODEL, INSTRUCTION_MODES
from alice.options import DEFAULT_NUM_SAMPLES, DEFAULT_THRESHOLD


def build_parser():
    p = stage_parser(__doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=cli.positive_int, default=DEFAULT_NUM_SAMPLES, help="answers sampled per question")
    p.add_argument("--embedding-model", default=None,
                   help=f"sentence-transformers model for hotpotqa/triviaqa (default {DEFAULT_EMBEDDING_MODEL}; "
                        "--seed-exact: the paper's hkunlp/instructor-large with its instruction)")
    p.add_argument("--embedding-instruction", default="auto", choices=INSTRUCTION_MODES,
                   help="prefix the paper's embedding instruction (auto: only for instructor models)")
    p.add_argument("--similarity-threshold", type=cli.similarity, default=DEFAULT_THRESHOLD,
                   help="cosine similarity above which two answers are the same")
    return p


@cli.main_guard
def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.num_samples < 2:
        p.error("--num-samples must be at least 2 (a cluster needs two answers)")
    run_cluster(setting_from_args(p, args, argv), cli.generation_options(args), num_samples=args.num_samples, threshold=args.similarity_threshold,
                embedding_model=args.embedding_model, embedding_instruction=args.embedding_instruction)


if __name__ == "__main__":
    main()
