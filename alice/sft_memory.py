"""The memory plan of one training run (``alice.plan``) applied to its batch settings, and the retries after an
out-of-memory error: each one halves the micro-batch and doubles accumulation (the effective batch is kept), then turns
on gradient checkpointing; a retry always changes something, and every attempt is recorded in train_config.json.

Under ``accelerate launch`` with several processes an OOM cannot be retried inside the processes (the others wait in a
collective): the run writes ``<output>/oom.json`` and stops in one line; the pipeline relaunches with the next rung.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from . import plan as plan_mod
from .sft_config import BatchSettings, SFTError, TrainOptions

OOM_FILE = "oom.json"
LONGEST_ROWS_TOKENIZED = 64  # the longest rows by characters are tokenized to find the longest in tokens


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def longest_row_tokens(tokenizer, rows: list[dict], max_length: int) -> int:
    """Tokens of the longest training row (prompt + completion, the chat template applied), at most ``max_length``:
    the rows longest in characters are tokenized, the others cannot be longer in tokens by much."""
    from .sft_data import to_examples

    longest = sorted(rows, key=lambda r: len(str(r.get("question", ""))) + len(str(r.get("answer", ""))),
                     reverse=True)[:LONGEST_ROWS_TOKENIZED]
    n = 0
    for ex in to_examples(longest):
        ids = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        n = max(n, len(ids))
    return min(max(n, 1), max_length)


def strategy_from_env() -> str | None:
    """The strategy of a run under ``accelerate launch`` (its environment), None for a plain process."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        offload = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") not in ("none", "")
        return "zero3-offload" if offload else ("zero3" if stage == "3" else "zero2")
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        if env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
            return "fsdp-offload"
        return "fsdp" if env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "full_shard") else "fsdp-grad-op"
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return "ddp"
    return None


def cap_process_memory(log=print) -> float | None:
    """On a card the pipeline's scheduler shares between steps (``$ALICE_GPU_BUDGET_GIB``, ``alice.schedule``): cap
    this process's CUDA allocator at that share (``torch.cuda.set_per_process_memory_fraction``: past it the allocator
    frees its cache, then raises an out-of-memory error, which the retries below handle) so that it never grows into
    a neighbour's engine. Returns the cap in GiB, None when there is none (no budget, or no GPU)."""
    budget = plan_mod.budget_gib()
    if budget is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / plan_mod.GIB
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total))
    log(f"GPU memory: this step's share of a card other steps use is {budget:.1f} GiB of {total:.0f} (its plan fits "
        f"it; the allocator is capped there)")
    return budget


def plan_run(model_id: str, tokenizer, rows: list[dict], batch: BatchSettings, opts: TrainOptions, log=print,
             hw: plan_mod.Hardware | None = None):
    """(batch, opts, plan): the batch and checkpointing the memory plan picks for these rows on this hardware (``hw``:
    other hardware, e.g. the whole card for the pipeline's scheduler; a ``plan_mod.PlanError`` when nothing fits), or
    the given ones with plan None (--no-memory-plan, or DeepSpeed's own accumulation pinned in its config, which the
    trainer cannot change)."""
    if not opts.memory_plan:
        return batch, opts, None
    if not batch.auto_grad_accum and batch.sources.get("grad_accum", "").startswith("deepspeed_config"):
        log("memory plan: skipped (DeepSpeed's gradient_accumulation_steps is pinned in its config; set it to auto)")
        return batch, opts, None
    tokens = longest_row_tokens(tokenizer, rows, opts.max_length)
    hw = hw or plan_mod.detect_hardware()
    if hw.gpus:
        hw = replace(hw, gpus=batch.world_size)
    requested = None if batch.auto_per_device else batch.per_device
    p = plan_mod.plan_training(model_id, lora=opts.lora, effective_batch=batch.effective, tokens=tokens, hw=hw,
                               per_device=requested, strategy=strategy_from_env(), processes=batch.world_size,
                               lora_r=opts.lora_r)
    if opts.gradient_checkpointing and not p.gradient_checkpointing:
        p = replace(p, gradient_checkpointing=True)  # asked for: kept (it only lowers the estimate)
    log(f"memory plan: {p.describe()}")
    return apply(batch, opts, p), replace(opts, gradient_checkpointing=p.gradient_checkpointing), p


def apply(batch: BatchSettings, opts: TrainOptions, p: plan_mod.TrainPlan) -> BatchSettings:
    """``batch`` with the plan's micro-batch and accumulation (same effective batch)."""
    sources = dict(batch.sources)
    if p.per_device != batch.per_device:
        sources["per_device"] = f"memory plan ({p.note or 'auto'})" if not p.note else f"memory plan: {p.note}"
    if p.grad_accum != batch.grad_accum:
        sources["grad_accum"] = f"memory plan: effective batch {p.effective_batch}"
    new = replace(batch, per_device=p.per_device, grad_accum=p.grad_accum, sources=sources)
    assert new.effective == batch.effective, (new, batch)
    return new


def rung_of(batch: BatchSettings, opts: TrainOptions) -> dict:
    return {"per_device": batch.per_device, "grad_accum": batch.grad_accum,
            "gradient_checkpointing": bool(opts.gradient_checkpointing)}


def next_rung(batch: BatchSettings, opts: TrainOptions) -> tuple[BatchSettings, TrainOptions] | None:
    """The next retry after an OOM at ``batch``/``opts``: the first rung of ``plan.ladder_rungs`` past this one."""
    rungs = plan_mod.ladder_rungs(batch.per_device, batch.effective, batch.world_size, opts.gradient_checkpointing)
    if not rungs:
        return None
    b, a, ckpt = rungs[0]
    sources = dict(batch.sources, per_device="after an out-of-memory error", grad_accum="after an out-of-memory error")
    return replace(batch, per_device=b, grad_accum=a, sources=sources), replace(opts, gradient_checkpointing=ckpt)


def describe_rung(r: dict) -> str:
    return f"{r['per_device']} x {r['grad_accum']}{' with gradient checkpointing' if r['gradient_checkpointing'] else ''}"


def out_of_memory(out_dir: Path, tried: list[dict], world: int) -> SFTError:
    """The one-line error after the last rung (or, with several processes, after the first OOM: the pipeline
    relaunches with the rung ``oom.json`` names)."""
    if world > 1:
        (out_dir / OOM_FILE).write_text(json.dumps({"tried": read_oom(out_dir) + tried}, indent=1) + "\n")
        return SFTError(f"out of memory at {describe_rung(tried[-1])} per process ({world} processes); "
                        f"python -m alice.pipeline relaunches with a smaller micro-batch (recorded in {out_dir / OOM_FILE})")
    return SFTError(f"out of memory at every micro-batch and with gradient checkpointing (tried "
                    f"{', '.join(describe_rung(t) for t in tried)}): use more or larger GPUs, --lora, or a smaller "
                    f"--max-length")


def read_oom(out_dir: Path) -> list[dict]:
    try:
        return json.loads((Path(out_dir) / OOM_FILE).read_text())["tried"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
