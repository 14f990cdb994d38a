"""Alice step 4c: the untrained student answers each uncertain question zero-shot -> *_zeroshot.jsonl

Front door: ``W2SG_pipeline/ours/new_weak_to_strong_zeroshot.py``; the work: ``alice.alice_stages.run_zeroshot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import cli
from ..alice_stages import run_zeroshot
from . import alice_common
from .alice_common import AliceConfig

SCRIPT = "W2SG_pipeline/ours/new_weak_to_strong_zeroshot.py"


@dataclass(frozen=True, kw_only=True)
class Config(AliceConfig):
    pass


def build_parser():
    return alice_common.parser("zeroshot", __doc__.split("\n\n")[0])


def parse(argv: list[str] | None = None) -> Config:
    return alice_common.parse(Config, build_parser(), argv)


def outputs(cfg: Config) -> list[Path]:
    return alice_common.paths(cfg, "zeroshot")


def inputs(cfg: Config) -> list:
    return [*alice_common.paths(cfg, "uncertainty"), cfg.setting().student_model]


def run(cfg: Config) -> dict | None:
    return run_zeroshot(cfg.setting(), cfg.gen)


@cli.main_guard
def main(argv: list[str] | None = None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
