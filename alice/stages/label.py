"""Original W2S baseline, step 1: a trained teacher labels the W2S questions (the student trains on the labels).

Front door: ``W2SG_pipeline/original/original_weak_to_strong.py`` (the paper's script).

--type qa|cot     the stage-1 teacher trained on answers only (qa) or on CoT (cot) labels the W2S part
                  -> data/original/<model>_<teacher>_<data>_<type>teacher.jsonl
--type cascade_1  the cot teacher labels the first half of the W2S part (hop 1: teacher -> mid-level)
                  -> data/original_cascade/<data>/<model>_<teacher>_<data>.jsonl
--type cascade_2  the mid-level model trained on the cascade_1 labels (needs --midlevel) labels the second half
                  -> data/original_cascade/<data>/<model>_<midlevel>_<data>.jsonl
Rows: {id, question, answer}. Sampling as the seed: temperature 0.6, top_p 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, fresh, prompts, registry
from .. import data as data_mod
from ..generation import Generator, Sampling, clear_resumable, generate_resumable
from ..jsonl import read_jsonl, require_trained, write_jsonl
from ..options import SAMPLING, GenerationOptions
from ..paths import Layout
from . import common
from .cot import add_sampling_args

SCRIPT = artifacts.ORIGINAL
TEMPERATURE, TOP_P = SAMPLING["original"].temperature, SAMPLING["original"].top_p
TYPES = ("qa", "cot", "cascade_1", "cascade_2")  # the paper's spellings (artifacts: cascade1 / cascade2)
SUBSETS = {"qa": "w2s_part", "cot": "w2s_part", "cascade_1": "cascade_first", "cascade_2": "cascade_second"}


@dataclass(frozen=True, kw_only=True)
class Config(common.StageConfig, GenerationOptions):
    teacher: str
    type: str
    midlevel: str | None = None
    temperature: float = TEMPERATURE
    top_p: float = TOP_P


def build_parser():
    p = cli.parser("Label the W2S questions with a trained teacher (original W2S baseline).",
                   roles=("teacher", "midlevel"), prog=SCRIPT)
    p.add_argument("--type", required=True, choices=TYPES, help="which teacher labels which questions")
    add_sampling_args(p, TEMPERATURE, TOP_P)
    cli.add_generation_args(p)
    common.add_config_arg(p)
    return p


def parse(argv: list[str] | None = None) -> Config:
    p = build_parser()
    args = common.parse_args(p, argv)
    cli.resolve(p, args, "teacher")
    if args.type == "cascade_2":
        cli.resolve(p, args, "midlevel")
    return common.config(Config, args, argv)


def plan(layout: Layout, model: str, data: str, teacher: str, type_: str, midlevel: str | None, data_dir: str | None = None):
    """(labelling model folder, the command that trains it, subset name, output file) for ``--type``, from the
    artifact table (``alice.artifacts``)."""
    labeller = artifacts.original_labeller(layout, model, data, teacher, type_, midlevel)
    out = artifacts.original_labels(layout, model, data, teacher, type_, midlevel)
    return labeller.path, labeller.command(layout.root, data_dir), SUBSETS[type_], out.path


def outputs(cfg: Config) -> list[Path]:
    return [plan(Layout.default(cfg.root), cfg.model, cfg.data, cfg.teacher, cfg.type, cfg.midlevel)[3]]


def inputs(cfg: Config) -> list:
    """The labelling model and the train split's rows (by content)."""
    return [plan(Layout.default(cfg.root), cfg.model, cfg.data, cfg.teacher, cfg.type, cfg.midlevel)[0],
            fresh.Data(cfg.data, "train", cfg.data_dir)]


def run(cfg: Config) -> list[dict]:
    registry.resolve_model(cfg.model, cfg.teacher)
    if cfg.type == "cascade_2":
        registry.resolve_model(cfg.model, cfg.midlevel)
    layout = Layout.default(cfg.root)
    labeler, made_by, subset, out = plan(layout, cfg.model, cfg.data, cfg.teacher, cfg.type, cfg.midlevel, cfg.data_dir)
    require_trained(labeler, made_by)
    gen = cli.generation_options(cfg)
    sampling = Sampling.from_options(gen, cfg.temperature, cfg.top_p)
    made_with = {"data": cfg.data, "type": cfg.type, "limit": cfg.limit, "max_new_tokens": sampling.max_new_tokens,
                 "seed": sampling.seed, "temperature": cfg.temperature, "top_p": cfg.top_p, **gen.recorded()}
    argv_ = cfg.recorded_argv()
    with fresh.lock(out):
        return _make(cfg, gen, sampling, made_with, inputs(cfg), argv_, labeler, subset, out)


def _make(cfg: Config, gen: GenerationOptions, sampling: Sampling, made_with: dict, ins: list, argv_, labeler,
          subset: str, out: Path) -> list[dict]:
    if fresh.check_fresh(out, made_with, ins, overwrite=cfg.overwrite, argv=argv_):
        rows = read_jsonl(out)
        print(f"already done: {len(rows)} labels -> {out}")
        return rows

    rows = data_mod.load_subset(cfg.data, subset, cfg.data_dir)
    if cfg.limit:
        rows = rows[: cfg.limit]
    items = [{"id": r["id"], "messages": prompts.question_messages(r["question"])} for r in rows]
    with Generator.from_options(str(labeler), gen) as engine:
        texts = generate_resumable(engine, items, sampling, out, desc=f"label {cfg.data} ({cfg.type})")
    labels = [{"id": r["id"], "question": r["question"], "answer": texts[r["id"]][0]} for r in rows]
    write_jsonl(out, labels)
    fresh.record(out, made_with, ins, argv=argv_)
    clear_resumable(out)
    limit = f" (--limit {cfg.limit})" if cfg.limit else ""
    print(f"labelled {len(labels)} {subset} questions with {labeler}{limit} -> {out}")
    return labels


@cli.main_guard
def main(argv: list[str] | None = None) -> list[dict]:
    return run(parse(argv))


if __name__ == "__main__":
    main()
