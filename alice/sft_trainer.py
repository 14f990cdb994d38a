"""The trainer of every SFT stage: TRL's ``SFTTrainer`` with the divergence guard, and the final save.

- ``build_trainer``: an ``SFTTrainer`` for a job's rows, with the divergence guard (a non-finite loss, gradient norm
  or weight stops the run; nothing is saved as finished).
- ``_save_final`` / ``finish_saved_folder``: a plain ``save_pretrained`` folder (LoRA merged) in the source's dtype,
  ending a turn at the chat template's end-of-turn token.

The stage around it (skip, resume, the OOM ladder, records) is ``alice.sft.run``, which re-exports these names.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

from .generation import end_of_turn_token
from .sft_config import PAPER, BatchSettings, SFTError, TrainOptions, load_dtype, optimizer_steps, precision, warmup_steps
from .sft_data import to_examples

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


def nonfinite_weight(model, trainable_only: bool = False) -> str | None:
    """The name of the first weight (of this process's shard; ``trainable_only``: of those trained) holding a NaN/inf,
    else None."""
    import torch

    return next((name for name, p in model.named_parameters() if (p.requires_grad or not trainable_only)
                 and not bool(torch.isfinite(p.detach()).all())), None)


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
    # PyTorch's cuDNN attention backward (the default SDPA kernel on an H100/H200 with torch >= 2.11) returns NaN
    # gradients for a batch padded to 64 mod 128 tokens (pytorch/pytorch#196678): measured here, the teacher's gsm8k
    # CoT SFT skipped every step of 320 tokens (results/nan_norms_gpu.json, results/nan_kernels_gpu.json). Training
    # takes the memory-efficient or flash kernel instead, as --full-determinism's dispatch already did.
    torch.backends.cuda.enable_cudnn_sdp(False)
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
    # LoRA: the adapters here, the merged weights below (the base is frozen: what changes is in the adapters).
    bad = nonfinite_weight(trainer.model, trainable_only=lora)
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
            bad = nonfinite_weight(merged)  # every weight that is saved (the record says so: fresh.checked_by_maker)
            if bad:
                raise TrainingDiverged(f"merged weight {bad}", float("nan"), trainer.state.global_step,
                                       trainer.state.max_steps, getattr(trainer, "guard_label", str(out_dir)))
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
