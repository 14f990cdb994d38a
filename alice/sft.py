"""Supervised fine-tuning for every training stage of the paper, on TRL's ``SFTTrainer`` (and so accelerate).

- ``build_trainer`` (``alice.sft_trainer``): an ``SFTTrainer`` for a job's rows, with the divergence guard (a
  non-finite loss, gradient norm or weight stops the run; nothing is saved as finished).
- ``run``: the whole stage: skip a finished folder, resume from ``<out>/checkpoints``, train, save a plain
  ``save_pretrained`` folder (LoRA merged), ``train_config.json`` and ``loss_log.json``.

Which rows a run trains on is ``alice.sft_data`` (``resolve_job``, ``to_examples``); the paper's settings, the batch
and the options are ``alice.sft_config`` (``PAPER``, ``batch_settings``, ``TrainOptions``). They and the trainer are re-exported here,
so ``alice.sft.<name>`` keeps working for every one of them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict

from . import fresh, sft_memory
from .jsonl import write_json
from .sft_config import (  # noqa: F401  (re-exported: alice.sft.<name>)
    AUTO,
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    PAPER,
    PRECISIONS,
    SFT_KEYS,
    BatchSettings,
    SFTError,
    TrainDefaults,
    TrainOptions,
    batch_settings,
    bf16_supported,
    deepspeed_batch_keys,
    find_config_file,
    load_accelerate_config,
    load_dtype,
    optimizer_steps,
    precision,
    read_sft_keys,
    warmup_steps,
    world_size,
)
from .sft_data import (  # noqa: F401  (re-exported: alice.sft.<name>)
    METHODS,
    ORIGINAL_TYPES,
    OURS_TYPES,
    Job,
    cascade_first_rows,
    method_type,
    qa_rows_from_cot,
    qa_target,
    resolve_job,
    to_examples,
)
from .sft_trainer import (  # noqa: F401  (re-exported: alice.sft.<name>)
    CHECKPOINTS,
    MAX_SKIPPED_SHARE,
    TrainingDiverged,
    _save_final,
    build_trainer,
    finish_saved_folder,
    is_finished,
    is_main_process,
    log,
    nonfinite_weight,
)

# options that change how a run is logged or checkpointed, not the trained weights
# (gradient checkpointing and the micro-batch are where the memory plan and the OOM retries put the run: the same
# weights, so not settings either; the effective batch is)
_NOT_SETTINGS = ("save_steps", "logging_steps", "report_to", "keep_checkpoints", "gradient_checkpointing", "memory_plan")


def fresh_settings(job: Job, batch: BatchSettings, opts: TrainOptions) -> tuple[dict, list]:
    """What the trained weights depend on (recorded with the folder and its checkpoints), and its inputs: the
    settings, the training rows by content (whichever file or data folder they come from), the base model by
    identity (a folder's content, a hub id's cached revision), the input file by content (``alice.records``)."""
    from .records import model_identity, rows_digest

    settings = {k: v for k, v in asdict(opts).items() if k not in _NOT_SETTINGS}
    if not opts.full_determinism:  # recorded only when on: folders trained before the option existed stay valid
        settings.pop("full_determinism")
    rows = job.training_rows(opts.limit)
    settings.update(method=job.method, type=job.type_, model=model_identity(job.model_id),
                    rows=rows_digest(rows) if rows else None, effective_batch=batch.effective)
    return settings, [job.input_file, job.model_id]


def run(job: Job, batch: BatchSettings, opts: TrainOptions, overwrite: bool = False, settings: dict | None = None,
        argv: list[str] | None = None) -> dict | None:
    """Train ``job`` (resuming from its checkpoints), save it; returns the train_config dict (None when skipped).

    A finished folder made with these settings from these inputs is kept; one made otherwise (or checkpoints made
    otherwise) is an ``fresh.StaleOutputError`` naming ``--overwrite``, which trains it again from scratch."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _run(job, batch, opts, overwrite, settings, argv)
    finally:
        # --full-determinism switches PyTorch's deterministic mode on for the process: the steps after this one (the
        # pipeline runs them in-process) get the mode they had
        torch.use_deterministic_algorithms(deterministic)


def _run(job: Job, batch: BatchSettings, opts: TrainOptions, overwrite: bool, settings: dict | None,
         argv: list[str] | None) -> dict | None:
    """``run``'s work."""
    out = job.out_dir
    ckpt_dir = out / CHECKPOINTS
    if opts.epochs is not None and opts.epochs <= 0 and not opts.max_steps:
        raise SFTError(f"--epochs must be above 0 (got {opts.epochs})")
    made_with, inputs = fresh_settings(job, batch, opts)
    if fresh.check_fresh(out, made_with, inputs, overwrite=overwrite, argv=argv, log=log):
        return None
    stale_ckpt = ckpt_dir.is_dir() and fresh.differences(ckpt_dir, made_with, inputs)
    if stale_ckpt and not overwrite:
        raise fresh.StaleOutputError(f"{ckpt_dir} was made otherwise ({'; '.join(stale_ckpt[:4])}): pass --overwrite "
                                     f"to train from scratch, or rerun with its settings to resume")
    if is_main_process():
        fresh.forget(out)
        for p in list(out.glob("*.safetensors")) + [out / "config.json"] + ([ckpt_dir] if stale_ckpt else []):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    rows = job.training_rows(opts.limit)
    if not rows:
        raise SFTError("no training rows (check --limit)")

    from transformers.trainer_utils import get_last_checkpoint

    import torch
    import torch.distributed as dist

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if opts.lora and fsdp:
        raise SFTError("--lora with FSDP is not supported (merging sharded adapters): use DeepSpeed ZeRO-2 or full fine-tuning")

    log(f"training {job.model_id} ({job.role} {job.size}) | method {job.method}{' ' + job.type_ if job.type_ else ''}")
    log(f"data: {job.source}: {len(rows)} rows{f' (--limit {opts.limit} of {len(job.rows)})' if opts.limit else ''}")
    log(f"accelerate config: {batch.config_file or '-'} ({batch.config_found_by})")
    from transformers import AutoTokenizer

    gpu_budget = sft_memory.cap_process_memory(log)
    batch, opts, mem_plan = sft_memory.plan_run(job.model_id, AutoTokenizer.from_pretrained(job.model_id), rows,
                                                batch, opts, log=log)
    log(batch.describe() + ("" if batch.effective == PAPER.effective_batch else f"  [paper: {PAPER.effective_batch}]"))
    log(f"output: {out}")

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    tried: list[dict] = []  # the attempts that ran out of memory, in order
    while True:
        trainer = build_trainer(job.model_id, rows, out, batch, opts)
        resume = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
        if is_main_process():
            fresh.record(ckpt_dir, made_with, inputs)  # the settings its checkpoints are made with (resume check)
        if resume:
            log(f"resuming from {resume}")
        try:
            trainer.train(resume_from_checkpoint=resume)
            break
        except Exception as e:  # noqa: BLE001 - only an out-of-memory error is retried; anything else re-raised
            if not sft_memory.is_oom(e):
                raise
            tried.append(dict(sft_memory.rung_of(batch, opts), error=str(e).strip().splitlines()[0][:300]))
            del trainer
            _free_accelerator_memory()
            nxt = sft_memory.next_rung(batch, opts) if batch.world_size == 1 else None
            if nxt is None:
                raise sft_memory.out_of_memory(out, tried, batch.world_size) from None
            batch, opts = nxt
            log(f"out of memory at {sft_memory.describe_rung(tried[-1])}: retrying at "
                f"{sft_memory.describe_rung(sft_memory.rung_of(batch, opts))} (same effective batch {batch.effective})")
    # the trained weights' dtype, read before the save (a LoRA save merges the adapters away and casts the model)
    trained_dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters() if p.requires_grad})
    _save_final(trainer, out, opts.lora)

    args = trainer.args
    world = args.world_size
    record = {
        "method": job.method,
        "type": job.type_,
        "trained_role": job.role,
        "trained_size": job.size,
        "model_id": job.model_id,
        "output_dir": str(out),
        "data_source": job.source,
        "rows": len(rows),
        "rows_available": len(job.rows),
        "rows_after_preparation": len(trainer.train_dataset),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": world,
        "effective_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "batch_sources": batch.sources,
        "accelerate_config_file": batch.config_file,
        "accelerate_config_found_by": batch.config_found_by,
        "epochs": args.num_train_epochs,
        "max_steps": opts.max_steps,
        "optimizer_steps": trainer.state.global_step,
        "skipped_nonfinite_steps": [{"step": st, "grad_norm": str(g)} for st, g in getattr(trainer, "skipped_steps", ())],
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, "value") else args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "max_length": args.max_length,
        "bf16": args.bf16,
        "precision": trainer.precision,
        "precision_means": PRECISIONS[trainer.precision],
        "trained_weights_dtype": trained_dtypes,
        "packing": opts.packing,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "memory_plan": mem_plan.to_dict() if mem_plan is not None else None,
        "out_of_memory_retries": sft_memory.read_oom(out) + tried,  # a launcher's relaunches, then in-process retries
        "peak_gpu_memory_gib": _peak_gpu_gib(),
        "peak_gpu_reserved_gib": _peak_gpu_gib(reserved=True),
        "gpu_budget_gib": gpu_budget,
        "seed": args.seed,
        "full_determinism": args.full_determinism,
        "cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(),  # off: its backward's NaN bug (sft_trainer)
        "lora": {"r": opts.lora_r, "alpha": opts.lora_alpha, "dropout": opts.lora_dropout,
                 "target_modules": opts.lora_target_modules, "merged": True} if opts.lora else None,
        "resumed_from": resume,
        "train_wall_time_s": round(time.time() - t0, 1),
        "versions": _versions(),
        "settings": settings or {},
        "paper_defaults": asdict(PAPER),
    }
    if trainer.accelerator.is_main_process:
        write_json(out / "loss_log.json", trainer.state.log_history)
        write_json(out / "train_config.json", record)
        (out / sft_memory.OOM_FILE).unlink(missing_ok=True)  # recorded above
        # _save_final checked every weight it saved: a generator loading this folder need not read them again
        fresh.record(out, made_with, inputs, argv=argv, checked={"weights_finite": True})
        if not opts.keep_checkpoints and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
            fresh.forget(ckpt_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        log(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f} over {trainer.state.global_step} optimizer steps")
    log(f"saved {out} in {record['train_wall_time_s']:.0f}s")
    if dist.is_available() and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
    return record


def _free_accelerator_memory() -> None:
    """After an out-of-memory error: drop what the failed attempt held (its trainer, model and optimizer are
    unreferenced by now) and return the cached blocks, so the retry starts from an empty card."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gpu_gib(reserved: bool = False) -> float | None:
    """The peak of PyTorch's allocated (``reserved``: held by its caching allocator) GPU memory in this process (None
    on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round((torch.cuda.max_memory_reserved() if reserved else torch.cuda.max_memory_allocated()) / 1024**3, 2)


def _versions() -> dict:
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    return {m.__name__: m.__version__ for m in (torch, transformers, trl, accelerate, peft)} | {"python": sys.version.split()[0]}
