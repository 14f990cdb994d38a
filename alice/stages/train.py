"""Fine-tune one model for one stage of the paper (TRL SFTTrainer; runs plainly or under ``accelerate launch``).

Front door: ``training/SFT.py`` (the paper's script); ``python -m alice.stages.train`` is the same. Methods (which
model, which rows, which folder): ``alice.methods`` / ``alice.sft_data``; the training itself: ``alice.sft.run``.
Per-device batch size and gradient accumulation come from the accelerate config file (``# sft.<key>: <value>``
lines), overridable by flags.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, cli, fresh, methods, registry, sft
from ..paths import Layout
from ..sft_config import TrainOptions
from . import common

SCRIPT = artifacts.SFT
P = sft.PAPER


@dataclass(frozen=True, kw_only=True)
class Config(common.StageConfig, TrainOptions):
    method: str
    teacher: str | None = None
    student: str | None = None
    ours_wts_type: str | None = None
    original_wts_type: str | None = None
    output_dir: str | None = None
    config_file: str | None = None  # the accelerate config the batch keys are read from
    per_device_batch_size: int | None = None  # None: the config file's, else the memory plan's
    gradient_accumulation_steps: int | None = None

    @property
    def options(self) -> TrainOptions:
        return cli.options(TrainOptions, self)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__.split("\n")[0], roles=("teacher", "student"), prog=SCRIPT)
    p.add_argument("--method", required=True, choices=methods.sft_methods())
    p.add_argument("--ours-wts-type", default=None, choices=methods.sft_types("--ours-wts-type"),
                   help="ours-wts-stage1: singleturn; ours-wts-stage2: singleturn, cascade1 (teacher -> mid: pass the "
                        "mid-level as --student), cascade2 (mid -> student: pass the mid-level as --teacher)")
    p.add_argument("--original-wts-type", default=None, choices=methods.sft_types("--original-wts-type"),
                   help="original-wts-stage1: qa; original-wts-stage2: qa, cot or cascade (--teacher = the labeler)")
    p.add_argument("--output-dir", default=None, help="train into this folder instead of the paper's model_outputs path")
    cli.add_overwrite(p)
    common.add_config_arg(p)

    t = p.add_argument_group("training (defaults: the paper's)")
    t.add_argument("--limit", type=cli.positive_int, default=None, help="only the first N training rows")
    t.add_argument("--epochs", type=cli.positive_float, default=P.epochs)
    t.add_argument("--lr", type=cli.positive_float, default=P.lr)
    t.add_argument("--weight-decay", type=float, default=P.weight_decay)
    t.add_argument("--max-length", type=cli.positive_int, default=P.max_length, help="tokens per example (longer ones are cut)")
    t.add_argument("--max-steps", type=cli.positive_int, default=None, help="stop after N optimizer steps (overrides --epochs)")
    t.add_argument("--seed", type=cli.nonnegative_int, default=P.seed)
    t.add_argument("--full-determinism", action="store_true",
                   help="deterministic GPU kernels (transformers' enable_full_determinism): the same command trains "
                        "the same weights; slower (README 'Reproducibility')")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast over fp32 master weights and optimizer state (default: on where the GPU "
                        "supports it, and on a CPU with AVX512-BF16 or AMX; else fp32); --no-bf16 trains in plain fp32")
    t.add_argument("--pure-bf16", action="store_true",
                   help="bf16 weights AND optimizer state, no fp32 masters (most lr-1e-5 updates round away; "
                        "kept only to measure that against the default)")
    t.add_argument("--packing", action="store_true", help="padding-free packing of whole examples (GPU throughput)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    t.add_argument("--save-steps", type=int, default=P.save_steps, help="checkpoint every N optimizer steps (resume)")
    t.add_argument("--logging-steps", type=int, default=None, help="default: 1 for runs under 100 steps, else 10")
    t.add_argument("--report-to", default="none", help="Trainer reporters, e.g. wandb or tensorboard")
    t.add_argument("--keep-checkpoints", action="store_true", help="keep <out>/checkpoints after the final save")

    b = p.add_argument_group("batch (default: the accelerate config file's sft.* lines)")
    b.add_argument("--config-file", default=None,
                   help=f"accelerate config to read the batch keys from (default: ${sft.CONFIG_ENV}, the launcher's "
                        f"--config_file, else ./{sft.DEFAULT_CONFIG_FILE})")
    b.add_argument("--per-device-batch-size", type=_int_or_auto, default=None,
                   help="rows per micro-batch; auto (or unset in the config file): the memory plan's")
    b.add_argument("--gradient-accumulation-steps", type=_int_or_auto, default=None)
    b.add_argument("--memory-plan", action=argparse.BooleanOptionalAction, default=True,
                   help="pick the micro-batch (and gradient checkpointing) that fits the GPU from the model's shape and "
                        "the longest row, keeping the effective batch (docs/scale.md); --no-memory-plan: as given")

    lo = p.add_argument_group("LoRA (peft); the saved folder holds the merged weights")
    lo.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    lo.add_argument("--lora-r", type=int, default=P.lora_r)
    lo.add_argument("--lora-alpha", type=int, default=P.lora_alpha)
    lo.add_argument("--lora-dropout", type=float, default=P.lora_dropout)
    lo.add_argument("--lora-target-modules", default=P.lora_target_modules, help="'all-linear' or a comma list")
    return p


def _int_or_auto(text: str) -> int | None:
    """argparse type: a whole number >= 1, or auto (None: the memory plan decides)."""
    return None if text == sft.AUTO else cli.positive_int(text)


def parse(argv: list[str] | None = None) -> Config:
    return common.config(Config, common.parse_args(build_parser(), argv), argv)


def job(cfg: Config, load_rows: bool = True) -> sft.Job:
    """What ``cfg`` trains: the model, its rows (``load_rows``) and its folder (``alice.sft_data.resolve_job``)."""
    return sft.resolve_job(model=cfg.model, data=cfg.data, method=cfg.method, teacher=cfg.teacher,
                           student=cfg.student, ours_type=cfg.ours_wts_type, original_type=cfg.original_wts_type,
                           layout=Layout.default(cfg.root), data_dir=cfg.data_dir, output_dir=cfg.output_dir,
                           load_rows=load_rows)


def outputs(cfg: Config) -> list[Path]:
    return [job(cfg, load_rows=False).out_dir]


def inputs(cfg: Config) -> list:
    """The stage file its rows come from (None: a split of the dataset) and the model it starts from."""
    j = job(cfg, load_rows=False)
    return [j.input_file, j.model_id]


def batch_of(cfg: Config) -> sft.BatchSettings:
    """The batch settings ``cfg`` asks for (flags over the accelerate config file's ``# sft.*`` lines)."""
    return sft.batch_settings(cfg.config_file, cfg.per_device_batch_size, cfg.gradient_accumulation_steps)


def run(cfg: Config) -> dict | None:
    batch = batch_of(cfg)
    settings = dict(common.to_dict(cfg), argv=[SCRIPT, *(cfg.argv or ())])
    j = job(cfg)
    registry.check_loadable(j.model_id, f"--{j.role}")
    # one run per output folder (the main process of a multi-process launch holds the lock for all of them)
    main_process = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")
    with fresh.lock(j.out_dir) if main_process else contextlib.nullcontext():
        return sft.run(j, batch, cfg.options, overwrite=cfg.overwrite, settings=settings, argv=cfg.recorded_argv())


def planned_gib(flags: list[str], hw) -> float | None:
    """The GPU memory (GiB) this training step's plan expects on ``hw`` from its rows, which must exist (the
    pipeline's scheduler reads it when the step is ready to run, so that the step holds its real share of a card,
    not the worst case of rows of max length); None when no plan applies (--no-memory-plan, a pinned DeepSpeed
    accumulation). The step, given this share as its budget, makes this same plan."""
    from transformers import AutoTokenizer

    from ..sft_memory import plan_run

    cfg = parse(flags)
    j = job(cfg)
    _, _, p = plan_run(j.model_id, AutoTokenizer.from_pretrained(j.model_id), j.training_rows(cfg.limit), batch_of(cfg),
                       cfg.options, log=lambda *a: None, hw=hw)
    return None if p is None else p.estimate_gib


@cli.main_guard
def main(argv: list[str] | None = None) -> dict | None:
    return run(parse(argv))


if __name__ == "__main__":
    main()
