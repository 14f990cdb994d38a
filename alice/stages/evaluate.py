"""Evaluate a model on the test split: greedy answers, graded, written with a summary (accuracy, 95% CI).

Front door: ``evaluation.py`` (the paper's script). Writes model_outputs/eval/<data>/<run>.jsonl (one row per
question) and <run>_summary.json; a rerun with the same settings prints the stored result, a killed run continues
where it stopped. For the cascade types the mid-level model is --teacher (the teacher of the last hop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, fresh, methods, registry
from .. import data as data_mod
from ..evaluate import GRADINGS, evaluate, load_summary, model_inputs, one_line, regrade, require_model, target
from ..generation import Generator
from ..options import DEFAULT_MAX_NEW_TOKENS, GenerationOptions
from ..paths import Layout
from . import common

SCRIPT = artifacts.EVAL


@dataclass(frozen=True, kw_only=True)
class Config(common.StageConfig, GenerationOptions):
    student: str
    method: str
    teacher: str | None = None
    original_wts_type: str | None = None
    ours_wts_type: str | None = None
    grading: str = "project"


def build_parser():
    p = cli.parser("Evaluate a model on the test split of a dataset.", roles=("teacher", "student"), prog=SCRIPT)
    p.add_argument("--method", required=True, choices=methods.eval_methods())
    p.add_argument("--original-wts-type", choices=methods.eval_types("--original-wts-type"), default=None,
                   help="with --method original-wts (cascade: pass the mid-level as --teacher)")
    p.add_argument("--ours-wts-type", choices=methods.eval_types("--ours-wts-type"), default=None,
                   help="with --method ours-wts (cascade: pass the mid-level as --teacher)")
    p.add_argument("--grading", choices=GRADINGS, default=Config.grading,
                   help="which metric to print: the project's graders over every question (default), or the seed's "
                        "evaluation/evaluate.py metric (its lenient matches; gsm8k and CoT-trained ARC runs divide by "
                        "the parsed responses only), to compare with the paper. The summary always holds both.")
    cli.add_generation_args(p)
    common.add_config_arg(p)
    return p


def parse(argv: list[str] | None = None) -> Config:
    p = build_parser()
    args = common.parse_args(p, argv)
    cli.resolve(p, args, "student")
    try:  # the registry entry these flags name (alice.methods): a wrong pair is a usage error naming the choices
        m = methods.by_eval_flags(args.method, args.original_wts_type, args.ours_wts_type)
    except methods.MethodError as e:
        p.error(str(e))
    if m.trains == "student" and m.eval_type_flag:  # a weak-to-strong student: its run is named by its teacher
        cli.resolve(p, args, "teacher")
    return common.config(Config, args, argv)


def _target(cfg: Config):
    m = methods.by_eval_flags(cfg.method, cfg.original_wts_type, cfg.ours_wts_type)
    otype, utype = (m.eval[1] if m.eval_type_flag == f else None for f in ("--original-wts-type", "--ours-wts-type"))
    return target(Layout.default(cfg.root), cfg.method, cfg.model, cfg.data, cfg.student,
                  registry.resolve_model(cfg.model, cfg.student), cfg.teacher, otype, utype, data_dir=cfg.data_dir)


def outputs(cfg: Config) -> list[Path]:
    L, run_name = Layout.default(cfg.root), _target(cfg).run
    return [L.eval_summary(cfg.data, run_name), L.eval_predictions(cfg.data, run_name)]


def inputs(cfg: Config) -> list:
    """The model (by content or hub revision) and the test rows (by content)."""
    return [*model_inputs(_target(cfg)), fresh.Data(cfg.data, data_mod.spec(cfg.data).test_split, cfg.data_dir)]


def run(cfg: Config) -> dict:
    t = _target(cfg)
    summary_path, pred_path = outputs(cfg)
    gen = cli.generation_options(cfg)
    max_new = cfg.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    settings = {"limit": cfg.limit, "max_new_tokens": max_new, "seed": cfg.seed, **gen.recorded()}

    require_model(t)
    if t.made_by is None:  # an untrained hub model or folder: loadable here, before anything runs
        registry.check_loadable(t.model_path, "--student")
    split = data_mod.spec(cfg.data).test_split
    test_rows = data_mod.load_test(cfg.data, cfg.data_dir)
    if not test_rows:
        raise data_mod.DataError(f"the {cfg.data} {split} split has no questions: nothing to evaluate (check "
                                 f"--data-dir)")
    rows = test_rows[: cfg.limit] if cfg.limit else test_rows
    # what made the answers: the settings, the model (by content or hub revision) and the test rows (by content)
    made_with = dict(settings, data=cfg.data, split=split)
    ins = inputs(cfg)
    argv = cfg.recorded_argv()
    with fresh.lock(summary_path):
        if all([fresh.check_fresh(o, made_with, ins, overwrite=cfg.overwrite, argv=argv, log=log)
                for o, log in ((summary_path, print), (pred_path, lambda m: None))]):
            old = load_summary(summary_path)
            print(f"already evaluated ({summary_path}):")
            old = regrade(cfg.data, old, test_rows, summary_path, pred_path)  # current graders
            print(one_line(cfg.data, t.run, old, cfg.grading))
            return old

        meta = {"data": cfg.data, "family": cfg.model, "method": cfg.method, "run": t.run, "model": t.model_path,
                "student": cfg.student, "teacher": cfg.teacher, "original_wts_type": cfg.original_wts_type,
                "ours_wts_type": cfg.ours_wts_type, "split": split, "settings": settings}
        for o in (summary_path, pred_path):  # redone: a killed redo leaves no output that looks made
            fresh.forget(o)
            o.unlink(missing_ok=True)
        with Generator.from_options(t.model_path, gen) as engine:
            summary = evaluate(engine, rows, cfg.data, pred_path, summary_path, max_new_tokens=max_new, meta=meta)
        fresh.record(pred_path, made_with, ins, argv=argv)
        fresh.record(summary_path, made_with, ins, argv=argv)
    print(one_line(cfg.data, t.run, summary, cfg.grading))
    return summary


@cli.main_guard
def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main()
