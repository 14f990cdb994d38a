"""Step 1: the teacher writes chain-of-thought for the teacher half; keep the answers graded correct.

    python cot/cot_generate_filter.py --model llama3 --data triviaqa --teacher 1B

For hotpotqa, triviaqa and arc_challenge (gsm8k ships its own worked solutions). Writes
data/CoT/<model>_<teacher>_<data>_cot.jsonl (every row: id, question, answer = the teacher's response,
ground_truth_response, correct) and ..._cot_correct.jsonl (the rows graded correct), the input of
``training/SFT.py --method ours-wts-stage1`` (and --method original-wts-stage1 --original-wts-type qa).
"""

from __future__ import annotations

from alice import cli, fresh, grading, prompts, registry
from alice import data as data_mod
from alice.generation import Generator, Sampling, clear_resumable, generate_resumable
from alice.jsonl import read_jsonl, write_jsonl
from alice.options import SAMPLING
from alice.paths import Layout
from alice.records import model_identity

TEMPERATURE, TOP_P = SAMPLING["cot"].temperature, SAMPLING["cot"].top_p  # the seed's sampling for CoT generation


def build_parser():
    p = cli.parser("Generate chain-of-thought for the teacher half and keep the correct ones.", roles=("teacher",))
    p.add_argument("--seed-exact", action="store_true",
                   help="keep the rows the seed's filter keeps (a lower-cased substring test; ARC: the text after the "
                        "first 'My choice is ' up to the next '.') instead of those the project's grader reads correct")
    cli.add_generation_args(p)
    return p


def cot_rows(rows: list[dict], texts: dict[str, list[str]], data: str, seed_exact: bool = False) -> list[dict]:
    """Every row with ``correct``: kept by the filter (``grading.cot_keeps``: the project's grader, or the seed's)."""
    out = []
    for r in rows:
        response = texts[r["id"]][0]
        keep = grading.cot_keeps(data, response, r["answer"], r["gold"], r["question"], seed_exact=seed_exact)
        out.append({"id": r["id"], "question": r["question"], "answer": response,
                    "ground_truth_response": r["answer"], "correct": keep})
    return out


@cli.main_guard
def main(argv=None) -> list[dict]:
    p = build_parser()
    args = p.parse_args(argv)
    if data_mod.spec(args.data).ships_cot:
        raise data_mod.DataError(
            f"{args.data} ships its own chain-of-thought (worked solutions): no CoT generation needed; train the "
            f"teacher directly with `python training/SFT.py --model {args.model} --data {args.data} "
            f"--teacher {args.teacher or 'T'} --method ours-wts-stage1 --ours-wts-type singleturn`"
        )
    teacher_id = cli.resolve(p, args, "teacher")
    layout = Layout.default(args.root)
    out_all, out_correct = layout.cot(args.model, args.teacher, args.data), layout.cot_correct(args.model, args.teacher, args.data)
    gen = cli.generation_options(args)
    sampling = Sampling.from_options(gen, TEMPERATURE, TOP_P)
    made_with = {"data": args.data, "teacher": model_identity(teacher_id), "limit": args.limit,
                 "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed, "temperature": TEMPERATURE, "top_p": TOP_P,
                 **gen.recorded(), **({"seed_exact": True} if args.seed_exact else {})}
    argv_ = fresh.command_line(argv)
    registry.check_loadable(teacher_id, "--teacher")
    inputs = [teacher_id, fresh.Data(args.data, "train", args.data_dir)]
    with fresh.lock(out_correct):
        return _make(args, p, gen, sampling, made_with, inputs, argv_, out_all, out_correct, teacher_id)


def _make(args, p, gen, sampling, made_with, inputs, argv_, out_all, out_correct, teacher_id) -> list[dict]:
    if all([fresh.check_fresh(o, made_with, inputs, overwrite=args.overwrite, argv=argv_)
            for o in (out_all, out_correct)]):
        rows, kept = read_jsonl(out_all), read_jsonl(out_correct)
        print(f"already done: kept {len(kept)}/{len(rows)} correct CoT -> {out_correct}")
        return rows

    rows = data_mod.teacher_half(data_mod.load_train(args.data, args.data_dir))
    if args.limit:
        rows = rows[: args.limit]
    items = [{"id": r["id"], "messages": prompts.cot_messages(args.data, r["question"])} for r in rows]
    with Generator.from_options(teacher_id, gen, p) as engine:
        texts = generate_resumable(engine, items, sampling, out_all,
                                   desc=f"CoT {args.data}")
    out = cot_rows(rows, texts, args.data, seed_exact=args.seed_exact)
    kept = [r for r in out if r["correct"]]
    write_jsonl(out_correct, kept)
    fresh.record(out_correct, made_with, inputs, argv=argv_)
    write_jsonl(out_all, out)
    fresh.record(out_all, made_with, inputs, argv=argv_)
    clear_resumable(out_all)
    limit = f" (--limit {args.limit}: first {len(rows)} questions only)" if args.limit else ""
    print(f"kept {len(kept)}/{len(out)} correct CoT{limit} -> {out_correct}")
    return out


if __name__ == "__main__":
    main()
