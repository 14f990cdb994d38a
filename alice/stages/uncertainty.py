"""Alice step 4b: questions with one cluster keep the teacher's answer ('original' rows); for the others the
summarizer LLM states the teacher's uncertainty -> *_uncertainty.jsonl

Front door: ``W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py``; the work: ``alice.alice_stages.run_uncertainty``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import cli
from ..alice_stages import run_uncertainty
from ..registry import SUMMARIZER_HUB_ID, SUMMARIZER_LOCAL_DIR
from . import alice_common
from .alice_common import AliceConfig

SCRIPT = "W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py"


@dataclass(frozen=True, kw_only=True)
class Config(AliceConfig):
    summarizer_model: str | None = None  # None: registry.resolve_summarizer()


def build_parser():
    p = alice_common.parser("uncertainty", __doc__.split("\n\n")[0])
    p.add_argument("--summarizer-model", default=None,
                   help=f"LLM that writes the uncertainty statements (default {SUMMARIZER_LOCAL_DIR} when present, "
                        f"else {SUMMARIZER_HUB_ID})")
    return p


def parse(argv: list[str] | None = None) -> Config:
    return alice_common.parse(Config, build_parser(), argv)


def outputs(cfg: Config) -> list[Path]:
    return alice_common.paths(cfg, "uncertainty", "originals")


def inputs(cfg: Config) -> list:
    return [*alice_common.paths(cfg, "clustered"), cfg.summarizer_model]


def run(cfg: Config) -> dict | None:
    return run_uncertainty(cfg.setting(), cfg.gen, summarizer=cfg.summarizer_model)


@cli.main_guard
def main(argv: list[str] | None = None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
