"""An ablation of Alice's proactive step: its training file, made from single-turn Alice's stage files
-> data/ours/<data>/ablations/<model>_<teacher>_to_<student>_<data>_<ablation>.jsonl (docs/ablations.md)

Front door: ``W2SG_pipeline/ours/new_weak_to_strong_ablation.py``; the work: ``alice.ablations.run_ablation``. Then
train and evaluate it as a method variant: training/SFT.py --method ours-wts-stage2 --ours-wts-type <ablation>;
evaluation.py --method ours-wts --ours-wts-type <ablation>. ``python -m alice.pipeline --ablations all`` runs all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli
from ..ablations import GENERATES, NAMES, run_ablation
from ..paths import Layout
from . import alice_common
from .alice_common import AliceConfig

SCRIPT = artifacts.OURS.format("ablation")


@dataclass(frozen=True, kw_only=True)
class Config(AliceConfig):
    ablation: str


def build_parser():
    p = alice_common.parser("ablation", __doc__.split("\n\n")[0])
    p.add_argument("--ablation", required=True, choices=NAMES, help="which ablation (docs/ablations.md)")
    return p


def parse(argv: list[str] | None = None) -> Config:
    return alice_common.parse(Config, build_parser(), argv)


def outputs(cfg: Config) -> list[Path]:
    return [Layout.default(cfg.root).alice_ablation(cfg.model, cfg.teacher, cfg.student, cfg.data, cfg.ablation)]


def inputs(cfg: Config) -> list:
    """Single-turn Alice's stage files (and the student, for an ablation that samples from it)."""
    files = alice_common.paths(cfg, "clustered", "originals", "uncertainty", "zeroshot")
    if cfg.ablation == "agreeing_final":
        files += alice_common.paths(cfg, "train")
    return files + ([cfg.setting().student_model] if GENERATES[cfg.ablation] else [])


def run(cfg: Config) -> dict | None:
    return run_ablation(cfg.setting(), cfg.ablation, cfg.gen)


@cli.main_guard
def main(argv: list[str] | None = None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
