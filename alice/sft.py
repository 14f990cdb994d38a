"""Supervised fine-tuning for every training stage of the paper, on TRL's ``SFTTrainer`` (and so accelerate).

- ``build_trainer``: an ``SFTTrainer`` for a job's rows, with the divergence guard (a non-finite loss, gradient norm
  or weight stops the run; nothing is saved as finished).
- ``run``: the whole stage: skip a finished folder, resume from ``<out>/checkpoints``, train, save a plain
  ``save_pretrained`` folder (LoRA merged), ``train_config.json`` and ``loss_log.json``.

Which rows a run trains on is ``alice.sft_data`` (``resolve_job``, ``to_examples``); the paper's settings, the batch
and the options are ``alice.sft_config`` (``PAPER``, ``batch_settings``, ``TrainOptions``). Both are re-exported here,
so ``alice.sft.<name>`` keeps working for every one of them.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import fresh, sft_memory
from .generation import end_of_turn_token
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

CHECKPOINTS = "checkpoints"


# ----------------------------------------------------------------------------------------------------
# Divergence guard: a non-finite loss or gradient norm stops training at once; nothing is saved as finished
# ----------------------------------------------------------------------------------------------------
MAX_SKIPPED_SHARE = 0.02  # optimizer steps that may be skipped for a non-finite gradient (at least one)


class TrainingDiverged(SFTError):
    """Training produced a non-finite loss, gradient norm or weight."""

    def __init__(self, what: str, value: float, step: int, total: int, label: str):
        super().__init__(
            f"training diverged at optimizer step {step}/{total}: {what} is {value} ({label}); nothing was saved as "
            f"finished. Try a lower --lr, --no-bf16 (fp32), or check the training rows; --overwrite starts afresh"
        )
        self.what, self.value, self.step = what, value, step


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def _guarded_trainer_class():
    """SFTTrainer that checks every micro-batch's loss and every optimizer step's gradient norm (before the step)."""
    import torch
    from trl import SFTTrainer

    norm_checked = hasattr(SFTTrainer, "_get_grad_norm")  # transformers >= 5.x: the norm before optimizer.step()

    class GuardedSFTTrainer(SFTTrainer):
        guard_label = "model"

        def _diverged(self, what: str, value) -> TrainingDiverged:
            return TrainingDiverged(what, float(value), self.state.global_step + 1, self.state.max_steps, self.guard_label)

        def training_step(self, model, inputs, *args, **kwargs):
            if norm_checked:  # this optimizer step's micro-batches (references, no copies), emptied at its norm check:
                self._step_batches = [*getattr(self, "_step_batches", ()), inputs]  # named if the step is skipped
            loss = super().training_step(model, inputs, *args, **kwargs)
            if not bool(torch.isfinite(loss.detach()).all()):
                raise self._diverged("the loss", loss.detach().float().mean())
            return loss

        skipped_steps: tuple = ()  # (optimizer step, gradient norm) of the steps skipped for a non-finite gradient

        def _batch_rows(self, batches) -> str:
            """The rows of this optimizer step's micro-batches: tokens, completion tokens and the start of the
            completion, to find the row behind a non-finite gradient."""
            rows = []
            for b in batches:
                ids, labels = b.get("input_ids"), b.get("labels")
                if ids is None:
                    continue
                for r in range(ids.shape[0]):
                    keep = labels[r] != -100 if labels is not None else torch.ones_like(ids[r], dtype=torch.bool)
                    text = self.processing_class.decode(ids[r][keep][:40]) if self.processing_class else ""
                    rows.append(f"    {int(keep.sum())}/{ids.shape[1]} completion/all tokens: {text!r}")
            return "\n".join(rows)

        if norm_checked:

            def _get_grad_norm(self, model, *args, **kwargs):
                norm = super()._get_grad_norm(model, *args, **kwargs)
                batches, self._step_batches = getattr(self, "_step_batches", ()), []
                if norm is not None and not _finite(norm):
                    # A rare non-finite gradient (finite loss) skips its optimizer step, as mixed-precision training
                    # skips an overflowing step: the gradients are dropped, so the step changes no weight and no
                    # optimizer state. More than MAX_SKIPPED_SHARE of the steps is a divergence.
                    step = self.state.global_step + 1
                    allowed = max(1, int(MAX_SKIPPED_SHARE * max(self.state.max_steps, 1)))
                    if len(self.skipped_steps) + 1 > allowed:
                        raise self._diverged(f"the gradient norm (after {len(self.skipped_steps)} skipped steps, "
                                             f"{allowed} allowed)", norm)
                    self.skipped_steps = (*self.skipped_steps, (step, float(norm)))  # this trainer's own tuple
                    if not self.is_deepspeed_enabled:  # DeepSpeed skips the step itself ("OVERFLOW! Skipping step")
                        model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
                    print(f"warning: optimizer step {step}/{self.state.max_steps} skipped: the gradient norm is "
                          f"{float(norm)} (loss finite); {len(self.skipped_steps)} of {allowed} allowed; its rows:\n"
                          f"{self._batch_rows(batches)}", file=sys.stderr, flush=True)
                    return None  # nothing to log for a step that did not happen
                return norm

    return GuardedSFTTrainer


def _divergence_callback():
    """The same check on what the Trainer logs (covers engines that compute the norm themselves, e.g. DeepSpeed)."""
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def __init__(self, label: str):
            self.label = label

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, what in (("loss", "the logged loss"), ("grad_norm", "the gradient norm")):
                if logs and key in logs and not _finite(logs[key]):
                    raise TrainingDiverged(what, float(logs[key]), state.global_step, state.max_steps, self.label)

    return DivergenceGuard


def nonfinite_weight(model) -> str | None:
    """The name of the first weight (of this process's shard) holding a NaN/inf, else None."""
    import torch

    return next((name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())), None)


def is_finished(out_dir: str | os.PathLike) -> bool:
    """A finished stage: the final weights are in ``out_dir`` (config.json + safetensors)."""
    out = Path(out_dir)
    return (out / "config.json").is_file() and any(out.glob("*.safetensors"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def log(msg: str) -> None:
    if is_main_process():
        print(msg, flush=True)


def _no_final_checkpoint_callback():
    """The Trainer checkpoints at the last step; the final save follows at once, so that checkpoint is skipped."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return NoFinalCheckpoint()


def build_trainer(model_id: str, rows: list[dict], out_dir: Path, batch: BatchSettings, opts: TrainOptions,
                  model=None, tokenizer=None):
    """An SFTTrainer for ``rows`` (conversational prompt-completion: loss on the completion tokens only); ``model`` /
    ``tokenizer``: already built (bench/scale_gpu.py trains random-weight models of real shapes), else loaded."""
    import datasets
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    prec = precision(opts)
    bf16 = prec != "fp32"
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_id)
    if tokenizer.chat_template is None:
        raise SFTError(f"{model_id} has no chat template: SFT renders prompts with the model's own template (use an instruct model)")
    eot = end_of_turn_token(tokenizer)
    if model is None:
        source_dtype = getattr(AutoConfig.from_pretrained(model_id), "dtype", None)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=load_dtype(prec, opts.lora))
    else:
        source_dtype = getattr(model.config, "dtype", None)

    total = optimizer_steps(len(rows), batch, opts.epochs, opts.max_steps)
    config = SFTConfig(
        output_dir=str(out_dir / CHECKPOINTS),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps if opts.max_steps else -1,
        learning_rate=opts.lr,
        weight_decay=opts.weight_decay,
        lr_scheduler_type=PAPER.scheduler,
        warmup_steps=warmup_steps(total),
        per_device_train_batch_size=batch.per_device,
        gradient_accumulation_steps=batch.grad_accum,
        bf16=bf16,  # autocast (torch.autocast / DeepSpeed / FSDP mixed precision) over the fp32 weights loaded above
        logging_nan_inf_filter=False,  # log a non-finite loss as it is (the divergence guard stops the run anyway)
        eos_token=eot,  # the chat template's end of turn: the saved config/generation_config stop there
        max_length=opts.max_length,
        truncation_mode="keep_start",
        completion_only_loss=True,  # the prompt-completion format's loss mask: response tokens only
        packing=opts.packing,
        packing_strategy="bfd",  # padding-free packing: whole examples, never split across sequences
        gradient_checkpointing=opts.gradient_checkpointing,
        logging_steps=opts.logging_steps or (1 if total < 100 else 10),
        save_strategy="steps",
        save_steps=opts.save_steps,
        save_total_limit=1,
        report_to=opts.report_to,
        seed=opts.seed,
        data_seed=opts.seed,
        full_determinism=opts.full_determinism,
        dataset_num_proc=None,
        ddp_find_unused_parameters=False,  # every trainable parameter is used (full model or LoRA adapters)
        use_cpu=not torch.cuda.is_available(),
    )
    peft_config = None
    if opts.lora:
        from peft import LoraConfig

        targets = opts.lora_target_modules
        peft_config = LoraConfig(
            r=opts.lora_r,
            lora_alpha=opts.lora_alpha,
            lora_dropout=opts.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM",
        )
    train_dataset = datasets.Dataset.from_list(to_examples(rows))
    trainer = _guarded_trainer_class()(model=model, args=config, train_dataset=train_dataset,
                                       processing_class=tokenizer, peft_config=peft_config)
    trainer.guard_label = f"{model_id} -> {out_dir}"
    trainer.add_callback(_divergence_callback()(trainer.guard_label))
    trainer.precision = prec
    trainer.save_dtype = source_dtype if isinstance(source_dtype, torch.dtype) else torch.float32
    trainer.end_of_turn = eot
    if not opts.keep_checkpoints:
        trainer.add_callback(_no_final_checkpoint_callback())
    # Warm-up from the rows that survived preparation (packing changes the count; over-long rows are dropped).
    n_prepared = len(trainer.train_dataset)
    trainer.args.warmup_steps = warmup_steps(optimizer_steps(n_prepared, batch, opts.epochs, opts.max_steps))
    return trainer


def _save_final(trainer, out_dir: Path, lora: bool) -> None:
    """Final weights + tokenizer into ``out_dir`` (a plain from_pretrained folder; LoRA merged).

    Written to ``<out>/final.tmp`` first and moved in with config.json last, so a killed save never looks finished.
    """
    import torch

    tmp = out_dir / "final.tmp"
    acc = trainer.accelerator
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    # Never save a broken model: every process checks its (shard of the) weights, all agree before anyone saves.
    bad = nonfinite_weight(trainer.model)
    if acc.reduce(torch.tensor([float(bad is not None)], device=acc.device), reduction="sum").item() > 0:
        raise TrainingDiverged(f"weight {bad}" if bad else "a weight (on another process)", float("nan"),
                               trainer.state.global_step, trainer.state.max_steps,
                               getattr(trainer, "guard_label", str(out_dir)))
    acc.wait_for_everyone()
    if lora:
        if acc.is_main_process:
            merged = acc.unwrap_model(trainer.model).merge_and_unload()
            dtype = getattr(trainer, "save_dtype", None)
            if dtype is not None and dtype != torch.float32:
                merged.to(dtype)  # written once in the source's dtype, not in fp32 and then rewritten (finish_saved_folder)
            merged.save_pretrained(str(tmp))
            trainer.processing_class.save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))  # gathers DeepSpeed / FSDP (full state dict) weights
    acc.wait_for_everyone()
    if acc.is_main_process:
        finish_saved_folder(tmp, getattr(trainer, "save_dtype", None), getattr(trainer, "end_of_turn", None))
        names = sorted(p.name for p in tmp.iterdir() if p.name != "training_args.bin")
        for name in [n for n in names if n != "config.json"] + ["config.json"]:
            os.replace(tmp / name, out_dir / name)
        shutil.rmtree(tmp)
    acc.wait_for_everyone()


def finish_saved_folder(folder: Path, dtype=None, end_of_turn: str | None = None) -> None:
    """Make a saved folder right for other tools.

    - Weights in ``dtype`` (the source checkpoint's, usually bf16): trained from fp32 masters, stored as the model was
      published, so vLLM's ``dtype='auto'`` and ``from_pretrained`` load it as they load the original.
    - ``config.json`` and ``generation_config.json`` end a turn at the chat template's end-of-turn token (plus the
      tokenizer's eos), so plain transformers / vLLM stop where the project's Generator stops.
    """
    import json

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, GenerationConfig

    if dtype is not None and dtype != torch.float32:
        for f in sorted(folder.glob("*.safetensors")):
            tensors = load_file(str(f))
            if any(t.is_floating_point() and t.dtype != dtype for t in tensors.values()):
                save_file({k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in tensors.items()},
                          str(f), metadata={"format": "pt"})
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text())
        name = str(dtype).removeprefix("torch.")
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = name
        cfg.setdefault("dtype", name)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = [tok.convert_tokens_to_ids(end_of_turn)] if end_of_turn else []
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    ids = list(dict.fromkeys(i for i in ids if i is not None))
    if not ids:
        return
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["eos_token_id"] = ids[0] if len(ids) == 1 else ids
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    try:
        gen = GenerationConfig.from_pretrained(str(folder))
    except OSError:
        gen = GenerationConfig()
    old = gen.eos_token_id
    old = list(old) if isinstance(old, (list, tuple)) else ([old] if old is not None else [])
    gen.eos_token_id = list(dict.fromkeys(ids + old))
    if gen.pad_token_id is None and tok.pad_token_id is not None:
        gen.pad_token_id = tok.pad_token_id
    gen.save_pretrained(str(folder))


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
    rows = job.rows[: opts.limit] if opts.limit else job.rows
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
    rows = job.rows[: opts.limit] if opts.limit else job.rows
    if not rows:
        raise SFTError("no training rows (check --limit)")

    from transformers.trainer_utils import get_last_checkpoint

    import torch.distributed as dist

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if opts.lora and fsdp:
        raise SFTError("--lora with FSDP is not supported (merging sharded adapters): use DeepSpeed ZeRO-2 or full fine-tuning")

    log(f"training {job.model_id} ({job.role} {job.size}) | method {job.method}{' ' + job.type_ if job.type_ else ''}")
    log(f"data: {job.source}: {len(rows)} rows{f' (--limit {opts.limit} of {len(job.rows)})' if opts.limit else ''}")
    log(f"accelerate config: {batch.config_file or '-'} ({batch.config_found_by})")
    log(batch.describe() + ("" if batch.effective == PAPER.effective_batch else f"  [paper: {PAPER.effective_batch}]"))
    log(f"output: {out}")

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    batch, opts, mem_plan = sft_memory.plan_run(job.model_id, AutoTokenizer.from_pretrained(job.model_id), rows,
                                                batch, opts, log=log)
    if mem_plan is not None and (batch.per_device, batch.grad_accum) != (mem_plan.per_device, mem_plan.grad_accum):
        raise AssertionError("the memory plan was not applied")
    if mem_plan is not None:
        log(batch.describe())
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
        "seed": args.seed,
        "full_determinism": args.full_determinism,
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
        fresh.record(out, made_with, inputs, argv=argv)
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


def _peak_gpu_gib() -> float | None:
    """The peak of PyTorch's allocated GPU memory in this process (None on the CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 1024**3, 2) if torch.cuda.is_available() else None


def _versions() -> dict:
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    return {m.__name__: m.__version__ for m in (torch, transformers, trl, accelerate, peft)} | {"python": sys.version.split()[0]}
