"""Evaluate a model on the test split: greedy answers, graded, written with a summary (accuracy, 95% CI).

    python evaluation.py --data gsm8k --model qwen2.5 --student 7B --method naive
    python evaluation.py --data gsm8k --model qwen2.5 --student 7B --method base
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 1.5B --student 7B --method original-wts --original-wts-type qa
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 1.5B --student 7B --method ours-wts --ours-wts-type singleturn
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 3B --student 7B --method ours-wts --ours-wts-type cascade

For the cascade types pass the mid-level model as --teacher (the teacher of the last hop), as the seed does.
Writes model_outputs/eval/<data>/<run>.jsonl (one row per question) and <run>_summary.json; a rerun with
the same settings prints the stored result, a killed run continues where it stopped.
"""

from __future__ import annotations

from alice import cli, fresh, methods, registry
from alice import data as data_mod
from alice.evaluate import (
    GRADINGS,
    evaluate,
    load_summary,
    model_inputs,
    one_line,
    regrade,
    require_model,
    target,
)
from alice.generation import Generator
from alice.options import DEFAULT_MAX_NEW_TOKENS
from alice.paths import Layout


def build_parser():
    p = cli.parser("Evaluate a model on the test split of a dataset.", roles=("teacher", "student"))
    p.add_argument("--method", required=True, choices=methods.eval_methods())
    p.add_argument("--original-wts-type", choices=methods.eval_types("--original-wts-type"), default=None,
                   help="with --method original-wts (cascade: pass the mid-level as --teacher)")
    p.add_argument("--ours-wts-type", choices=methods.eval_types("--ours-wts-type"), default=None,
                   help="with --method ours-wts (cascade: pass the mid-level as --teacher)")
    p.add_argument("--grading", choices=GRADINGS, default="project",
                   help="which metric to print: the project's graders over every question (default), or the seed's "
                        "evaluation/evaluate.py metric (its lenient matches; gsm8k and CoT-trained ARC runs divide by "
                        "the parsed responses only), to compare with the paper. The summary always holds both.")
    cli.add_generation_args(p)
    return p


@cli.main_guard
def main(argv=None) -> dict:
    p = build_parser()
    args = p.parse_args(argv)
    student_id = cli.resolve(p, args, "student")
    try:  # the registry entry these flags name (alice.methods): a wrong pair is a usage error naming the choices
        m = methods.by_eval_flags(args.method, args.original_wts_type, args.ours_wts_type)
    except methods.MethodError as e:
        p.error(str(e))
    if m.trains == "student" and m.eval_type_flag:  # a weak-to-strong student: its run is named by its teacher
        cli.resolve(p, args, "teacher")
    layout = Layout.default(args.root)
    otype, utype = (m.eval[1] if m.eval_type_flag == f else None for f in ("--original-wts-type", "--ours-wts-type"))
    t = target(layout, args.method, args.model, args.data, args.student, student_id, args.teacher, otype, utype,
               data_dir=args.data_dir)
    pred_path, summary_path = layout.eval_predictions(args.data, t.run), layout.eval_summary(args.data, t.run)
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    settings = {"limit": args.limit, "max_new_tokens": max_new, "seed": args.seed, **cli.generation_options(args).recorded()}

    require_model(t)
    if t.made_by is None:  # an untrained hub model or folder: loadable here, before anything runs
        registry.check_loadable(t.model_path, "--student")
    split = data_mod.spec(args.data).test_split
    test_rows = data_mod.load_test(args.data, args.data_dir)
    if not test_rows:
        raise data_mod.DataError(f"the {args.data} {split} split has no questions: nothing to evaluate (check "
                                 f"--data-dir)")
    rows = test_rows[: args.limit] if args.limit else test_rows
    # what made the answers: the settings, the model (by content or hub revision) and the test rows (by content)
    made_with = dict(settings, data=args.data, split=split)
    inputs = [*model_inputs(t), fresh.Data(args.data, split, args.data_dir)]
    argv_ = fresh.command_line(argv)
    with fresh.lock(summary_path):
        if all([fresh.check_fresh(o, made_with, inputs, overwrite=args.overwrite, argv=argv_, log=log)
                for o, log in ((summary_path, print), (pred_path, lambda m: None))]):
            old = load_summary(summary_path)
            print(f"already evaluated ({summary_path}):")
            old = regrade(args.data, old, test_rows, summary_path, pred_path)  # current graders
            print(one_line(args.data, t.run, old, args.grading))
            return old

        meta = {"data": args.data, "family": args.model, "method": args.method, "run": t.run, "model": t.model_path,
                "student": args.student, "teacher": args.teacher, "original_wts_type": args.original_wts_type,
                "ours_wts_type": args.ours_wts_type, "split": split, "settings": settings}
        for o in (summary_path, pred_path):  # redone: a killed redo leaves no output that looks made
            fresh.forget(o)
            o.unlink(missing_ok=True)
        with Generator.from_options(t.model_path, cli.generation_options(args), p) as engine:
            summary = evaluate(engine, rows, args.data, pred_path, summary_path, max_new_tokens=max_new, meta=meta)
        fresh.record(pred_path, made_with, inputs, argv=argv_)
        fresh.record(summary_path, made_with, inputs, argv=argv_)
    print(one_line(args.data, t.run, summary, args.grading))
    return summary


if __name__ == "__main__":
    main()
