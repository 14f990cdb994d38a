"""Alice step 4d: the student writes its final answer from its own answer, the teacher's and the uncertainty
('new' rows); with the 'original' rows they make the student's training file *_to_*.jsonl

Front door: ``W2SG_pipeline/ours/new_weak_to_strong_final.py``; the work: ``alice.alice_stages.run_final``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import cli
from ..alice_stages import run_final
from ..options import FINAL_TRIES
from . import alice_common
from .alice_common import AliceConfig

SCRIPT = "W2SG_pipeline/ours/new_weak_to_strong_final.py"


@dataclass(frozen=True, kw_only=True)
class Config(AliceConfig):
    final_tries: int | None = None  # None: FINAL_TRIES (--seed-exact: 1)


def build_parser():
    p = alice_common.parser("final", __doc__.split("\n\n")[0])
    p.add_argument("--final-tries", type=cli.positive_int, default=Config.final_tries,
                   help=f"answers sampled per question (default {FINAL_TRIES}; --seed-exact: 1); the first well-formed "
                        "one (the required final-answer format, reasoning before it) is kept, a question with none is "
                        "dropped (--seed-exact: the one sample is kept whatever its form)")
    return p


def parse(argv: list[str] | None = None) -> Config:
    return alice_common.parse(Config, build_parser(), argv, check=_check)


def _check(p, args) -> None:
    if args.seed_exact and args.final_tries not in (None, 1):
        p.error("--seed-exact samples one final answer per question, kept whatever its form: leave out --final-tries")


def tries(cfg: Config) -> int:
    """The final answers sampled per question: --final-tries, else 1 with --seed-exact, else ``FINAL_TRIES``."""
    return cfg.final_tries or (1 if cfg.seed_exact else FINAL_TRIES)


def outputs(cfg: Config) -> list[Path]:
    return alice_common.paths(cfg, "train", "final_samples")


def inputs(cfg: Config) -> list:
    return [*alice_common.paths(cfg, "clustered", "originals", "uncertainty", "zeroshot"), cfg.setting().student_model]


def run(cfg: Config) -> dict | None:
    return run_final(cfg.setting(), cfg.gen, final_tries=tries(cfg))


@cli.main_guard
def main(argv: list[str] | None = None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
