"""Collect the evaluation summaries of one setting into a table with PGR (and 95% CIs) and a bar chart.

Front door: ``report.py``. Reads model_outputs/eval/<data>/*_summary.json (written by evaluation.py); a summary not
there yet is shown as missing. Writes model_outputs/report/<model>_<teacher>_to_<student>_<data>.{json,md,png}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, registry
from .. import report as report_mod
from ..paths import Layout
from . import common

SCRIPT = artifacts.REPORT


@dataclass(frozen=True, kw_only=True)
class Config(common.StageConfig):
    teacher: str
    student: str
    midlevel: str | None = None


def build_parser():
    p = cli.parser("Report a setting's evaluations: accuracy, PGR, 95% CIs, paired differences, diagnostics, a bar "
                   "chart.", prog=SCRIPT)
    common.add_config_arg(p)
    return p


def parse(argv: list[str] | None = None) -> Config:
    p = build_parser()
    args = common.parse_args(p, argv)
    cli.resolve(p, args, "teacher")
    cli.resolve(p, args, "student")
    if args.midlevel:
        cli.resolve(p, args, "midlevel")
    return common.config(Config, args, argv)


def outputs(cfg: Config) -> list[Path]:
    """The table, its markdown and its chart (always redone: cheap, it reflects whatever summaries exist)."""
    L = Layout.default(cfg.root)
    return [L.report(cfg.model, cfg.teacher, cfg.student, cfg.data, s) for s in (".json", ".md", ".png")]


def inputs(cfg: Config) -> list[Path]:
    return [Layout.default(cfg.root).eval_dir(cfg.data)]


def run(cfg: Config) -> dict:
    for role in ("teacher", "student") + (("midlevel",) if cfg.midlevel else ()):
        registry.resolve_model(cfg.model, getattr(cfg, role))
    layout = Layout.default(cfg.root)
    rep = report_mod.build(layout, cfg.model, cfg.teacher, cfg.student, cfg.data, cfg.midlevel, cfg.data_dir)
    print(report_mod.title(rep))
    print("\n".join(report_mod.lines(rep)))
    paths = report_mod.write(layout, rep)
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return rep


@cli.main_guard
def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main()
