"""Original W2S baseline, step 1: a trained teacher labels the W2S questions (the student trains on the labels).

    python W2SG_pipeline/original/original_weak_to_strong.py --model llama3 --data arc_challenge --teacher 1B --type cot

--type qa|cot     the stage-1 teacher trained on answers only (qa) or on CoT (cot) labels the W2S part
                  -> data/original/<model>_<teacher>_<data>_<type>teacher.jsonl
--type cascade_1  the cot teacher labels the first half of the W2S part (hop 1: teacher -> mid-level)
                  -> data/original_cascade/<data>/<model>_<teacher>_<data>.jsonl
--type cascade_2  the mid-level model trained on the cascade_1 labels (needs --midlevel) labels the second half
                  -> data/original_cascade/<data>/<model>_<midlevel>_<data>.jsonl
Rows: {id, question, answer}. Sampling as the seed: temperature 0.6, top_p 0.95.
"""

from __future__ import annotations

from alice import artifacts, cli, fresh, prompts
from alice import data as data_mod
from alice.generation import Generator, Sampling, clear_resumable, generate_resumable
from alice.jsonl import require_trained
from alice.jsonl import read_jsonl, write_jsonl
from alice.options import SAMPLING
from alice.paths import Layout

TEMPERATURE, TOP_P = SAMPLING["original"].temperature, SAMPLING["original"].top_p
TYPES = ("qa", "cot", "cascade_1", "cascade_2")  # the paper's spellings (artifacts: cascade1 / cascade2)


def build_parser():
    p = cli.parser("Label the W2S questions with a trained teacher (original W2S baseline).",
                   roles=("teacher", "midlevel"))
    p.add_argument("--type", required=True, choices=TYPES, help="which teacher labels which questions")
    cli.add_generation_args(p)
    return p


SUBSETS = {"qa": "w2s_part", "cot": "w2s_part", "cascade_1": "cascade_first", "cascade_2": "cascade_second"}


def plan(layout: Layout, model: str, data: str, teacher: str, type_: str, midlevel: str | None, data_dir: str | None = None):
    """(labelling model folder, the command that trains it, subset name, output file) for ``--type``, from the
    artifact table (``alice.artifacts``)."""
    labeller = artifacts.original_labeller(layout, model, data, teacher, type_, midlevel)
    out = artifacts.original_labels(layout, model, data, teacher, type_, midlevel)
    return labeller.path, labeller.command(layout.root, data_dir), SUBSETS[type_], out.path


@cli.main_guard
def main(argv=None) -> list[dict]:
    p = build_parser()
    args = p.parse_args(argv)
    cli.resolve(p, args, "teacher")
    if args.type == "cascade_2":
        cli.resolve(p, args, "midlevel")
    layout = Layout.default(args.root)
    labeler, made_by, subset, out = plan(layout, args.model, args.data, args.teacher, args.type, args.midlevel, args.data_dir)
    require_trained(labeler, made_by)
    gen = cli.generation_options(args)
    sampling = Sampling.from_options(gen, TEMPERATURE, TOP_P)
    made_with = {"data": args.data, "type": args.type, "limit": args.limit, "max_new_tokens": sampling.max_new_tokens,
                 "seed": sampling.seed, "temperature": TEMPERATURE, "top_p": TOP_P, **gen.recorded()}
    argv_ = fresh.command_line(argv)
    inputs = [labeler, fresh.Data(args.data, "train", args.data_dir)]
    with fresh.lock(out):
        return _make(args, p, gen, sampling, made_with, inputs, argv_, labeler, subset, out)


def _make(args, p, gen, sampling, made_with, inputs, argv_, labeler, subset, out) -> list[dict]:
    if fresh.check_fresh(out, made_with, inputs, overwrite=args.overwrite, argv=argv_):
        rows = read_jsonl(out)
        print(f"already done: {len(rows)} labels -> {out}")
        return rows

    rows = data_mod.load_subset(args.data, subset, args.data_dir)
    if args.limit:
        rows = rows[: args.limit]
    items = [{"id": r["id"], "messages": prompts.question_messages(r["question"])} for r in rows]
    with Generator.from_options(str(labeler), gen, p) as engine:
        texts = generate_resumable(engine, items, sampling, out,
                                   desc=f"label {args.data} ({args.type})")
    labels = [{"id": r["id"], "question": r["question"], "answer": texts[r["id"]][0]} for r in rows]
    write_jsonl(out, labels)
    fresh.record(out, made_with, inputs, argv=argv_)
    clear_resumable(out)
    limit = f" (--limit {args.limit})" if args.limit else ""
    print(f"labelled {len(labels)} {subset} questions with {labeler}{limit} -> {out}")
    return labels


if __name__ == "__main__":
    main()
