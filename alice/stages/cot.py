"""Step 1: the teacher writes chain-of-thought for the teacher half; the answers graded correct are kept.

Front door: ``cot/cot_generate_filter.py`` (the paper's script). For hotpotqa, triviaqa and arc_challenge (gsm8k
ships its own worked solutions). Writes data/CoT/<model>_<teacher>_<data>_cot.jsonl (every row: id, question,
answer = the teacher's response, ground_truth_response, correct) and ..._cot_correct.jsonl (the rows graded
correct), the input of ``training/SFT.py --method ours-wts-stage1`` (and --method original-wts-stage1
--original-wts-type qa).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, fresh, grading, prompts, registry
from .. import data as data_mod
from ..generation import Generator, Sampling, clear_resumable, generate_resumable
from ..jsonl import read_jsonl, write_jsonl
from ..options import SAMPLING, GenerationOptions
from ..paths import Layout
from ..records import model_identity
from . import common

SCRIPT = artifacts.COT
TEMPERATURE, TOP_P = SAMPLING["cot"].temperature, SAMPLING["cot"].top_p  # the seed's sampling for CoT generation


@dataclass(frozen=True, kw_only=True)
class Config(common.StageConfig, GenerationOptions):
    teacher: str
    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    seed_exact: bool = False


def build_parser():
    p = cli.parser("Generate chain-of-thought for the teacher half and keep the correct ones.", roles=("teacher",),
                   prog=SCRIPT)
    p.add_argument("--seed-exact", action="store_true",
                   help="keep the rows the seed's filter keeps (a lower-cased substring test; ARC: the text after the "
                        "first 'My choice is ' up to the next '.') instead of those the project's grader reads correct")
    add_sampling_args(p, TEMPERATURE, TOP_P)
    cli.add_generation_args(p)
    common.add_config_arg(p)
    return p


def add_sampling_args(p, temperature: float, top_p: float) -> None:
    """--temperature / --top-p of a sampling stage (defaults: the seed's values for it, ``options.SAMPLING``)."""
    p.add_argument("--temperature", type=float, default=temperature, help="sampling temperature (the seed's)")
    p.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling top_p (the seed's)")


def parse(argv: list[str] | None = None) -> Config:
    p = build_parser()
    args = common.parse_args(p, argv)
    cli.resolve(p, args, "teacher")
    return common.config(Config, args, argv)


def outputs(cfg: Config) -> list[Path]:
    L = Layout.default(cfg.root)
    return [L.cot_correct(cfg.model, cfg.teacher, cfg.data), L.cot(cfg.model, cfg.teacher, cfg.data)]


def inputs(cfg: Config) -> list:
    """The teacher (by content or hub revision) and the train split's rows (by content)."""
    return [registry.resolve_model(cfg.model, cfg.teacher), fresh.Data(cfg.data, "train", cfg.data_dir)]


def cot_rows(rows: list[dict], texts: dict[str, list[str]], data: str, seed_exact: bool = False) -> list[dict]:
    """Every row with ``correct``: kept by the filter (``grading.cot_keeps``: the project's grader, or the seed's)."""
    out = []
    for r in rows:
        response = texts[r["id"]][0]
        keep = grading.cot_keeps(data, response, r["answer"], r["gold"], r["question"], seed_exact=seed_exact)
        out.append({"id": r["id"], "question": r["question"], "answer": response,
                    "ground_truth_response": r["answer"], "correct": keep})
    return out


def run(cfg: Config) -> list[dict]:
    if data_mod.spec(cfg.data).ships_cot:
        raise data_mod.DataError(
            f"{cfg.data} ships its own chain-of-thought (worked solutions): no CoT generation needed; train the "
            f"teacher directly with `python training/SFT.py --model {cfg.model} --data {cfg.data} "
            f"--teacher {cfg.teacher or 'T'} --method ours-wts-stage1 --ours-wts-type singleturn`"
        )
    teacher_id = registry.resolve_model(cfg.model, cfg.teacher)
    out_correct, out_all = outputs(cfg)
    gen = cli.generation_options(cfg)
    sampling = Sampling.from_options(gen, cfg.temperature, cfg.top_p)
    made_with = {"data": cfg.data, "teacher": model_identity(teacher_id), "limit": cfg.limit,
                 "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed, "temperature": cfg.temperature,
                 "top_p": cfg.top_p, **gen.recorded(), **({"seed_exact": True} if cfg.seed_exact else {})}
    argv_ = cfg.recorded_argv()
    registry.check_loadable(teacher_id, "--teacher")
    with fresh.lock(out_correct):
        return _make(cfg, gen, sampling, made_with, inputs(cfg), argv_, teacher_id)


def _make(cfg: Config, gen: GenerationOptions, sampling: Sampling, made_with: dict, ins: list, argv_, teacher_id: str):
    out_correct, out_all = outputs(cfg)
    if all([fresh.check_fresh(o, made_with, ins, overwrite=cfg.overwrite, argv=argv_)
            for o in (out_all, out_correct)]):
        rows, kept = read_jsonl(out_all), read_jsonl(out_correct)
        print(f"already done: kept {len(kept)}/{len(rows)} correct CoT -> {out_correct}")
        return rows

    rows = data_mod.teacher_half(data_mod.load_train(cfg.data, cfg.data_dir))
    if cfg.limit:
        rows = rows[: cfg.limit]
    items = [{"id": r["id"], "messages": prompts.cot_messages(cfg.data, r["question"])} for r in rows]
    with Generator.from_options(teacher_id, gen) as engine:
        texts = generate_resumable(engine, items, sampling, out_all, desc=f"CoT {cfg.data}")
    out = cot_rows(rows, texts, cfg.data, seed_exact=cfg.seed_exact)
    kept = [r for r in out if r["correct"]]
    write_jsonl(out_correct, kept)
    fresh.record(out_correct, made_with, ins, argv=argv_)
    write_jsonl(out_all, out)
    fresh.record(out_all, made_with, ins, argv=argv_)
    clear_resumable(out_all)
    limit = f" (--limit {cfg.limit}: first {len(rows)} questions only)" if cfg.limit else ""
    print(f"kept {len(kept)}/{len(out)} correct CoT{limit} -> {out_correct}")
    return out


@cli.main_guard
def main(argv: list[str] | None = None) -> list[dict]:
    return run(parse(argv))


if __name__ == "__main__":
    main()
