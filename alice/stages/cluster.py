"""Alice step 4a: the trained teacher (cascade: the trained mid-level model) samples N answers per question of
its W2S part and they are clustered -> data/ours[_cascade_halfhalf]/<data>/*_sampled_clustered.jsonl

Front door: ``W2SG_pipeline/ours/new_weak_to_strong_cluster.py``; the work: ``alice.alice_stages.run_cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import cli
from ..alice_stages import run_cluster
from ..clustering import DEFAULT_EMBEDDING_MODEL, INSTRUCTION_MODES
from ..options import DEFAULT_NUM_SAMPLES, DEFAULT_THRESHOLD
from . import alice_common
from .alice_common import AliceConfig

SCRIPT = "W2SG_pipeline/ours/new_weak_to_strong_cluster.py"


@dataclass(frozen=True, kw_only=True)
class Config(AliceConfig):
    num_samples: int = DEFAULT_NUM_SAMPLES
    embedding_model: str | None = None  # None: DEFAULT_EMBEDDING_MODEL (--seed-exact: the seed's instructor-large)
    embedding_instruction: str = "auto"
    similarity_threshold: float = DEFAULT_THRESHOLD


def build_parser():
    p = alice_common.parser("cluster", __doc__.split("\n\n")[0])
    p.add_argument("--num-samples", type=cli.positive_int, default=Config.num_samples,
                   help="answers sampled per question")
    p.add_argument("--embedding-model", default=Config.embedding_model,
                   help=f"sentence-transformers model for hotpotqa/triviaqa (default {DEFAULT_EMBEDDING_MODEL}; "
                        "--seed-exact: the paper's hkunlp/instructor-large with its instruction)")
    p.add_argument("--embedding-instruction", default=Config.embedding_instruction, choices=INSTRUCTION_MODES,
                   help="prefix the paper's embedding instruction (auto: only for instructor models)")
    p.add_argument("--similarity-threshold", type=cli.similarity, default=Config.similarity_threshold,
                   help="cosine similarity above which two answers are the same")
    return p


def parse(argv: list[str] | None = None) -> Config:
    return alice_common.parse(Config, build_parser(), argv, check=_check)


def _check(p, args) -> None:
    if args.num_samples < 2:
        p.error("--num-samples must be at least 2 (a cluster needs two answers)")


def outputs(cfg: Config) -> list[Path]:
    return alice_common.paths(cfg, "clustered")


def inputs(cfg: Config) -> list[Path]:
    return alice_common.paths(cfg, "sampler_model")


def run(cfg: Config) -> dict | None:
    return run_cluster(cfg.setting(), cfg.gen, num_samples=cfg.num_samples, threshold=cfg.similarity_threshold,
                       embedding_model=cfg.embedding_model, embedding_instruction=cfg.embedding_instruction)


@cli.main_guard
def main(argv: list[str] | None = None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
