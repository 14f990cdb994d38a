"""Supervised fine-tuning for every training stage of the paper, on TRL's ``SFTTrainer`` (and so accelerate).

- ``PAPER``: the paper's training settings, in one place (3 epochs, lr 1e-5, weight decay 0.01, cosine schedule with
  100 warm-up steps, effective batch 16, bf16 where supported, max length 2048).
- ``resolve_job``: ``--method`` (+ its type) -> which model is trained, on which rows, into which folder.
  Every training row is ``{id, question, answer}``; ``answer`` is the target.
- ``to_examples``: rows -> TRL's conversational prompt-completion examples. TRL renders them with the trained model's
  own chat template and, for this format, puts the loss on the completion tokens only (prompt and padding are -100).
- ``find_config_file`` / ``batch_settings``: per-device batch size and gradient accumulation come from the accelerate
  config file (``accelerate_config.yaml``), see ``read_sft_keys`` for why they are written as comment lines.
- ``run``: the whole stage: skip a finished folder, resume from ``<out>/checkpoints``, train, save a plain
  ``save_pretrained`` folder (LoRA merged), ``train_config.json`` and ``loss_log.json``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import data as data_mod
from . import artifacts, prompts, registry
from .errors import AliceError
from .jsonl import JsonlError, read_jsonl, write_json
from .paths import Layout


# ----------------------------------------------------------------------------------------------------
# The paper's settings (the only place they are written)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainDefaults:
    epochs: float = 3.0
    lr: float = 1e-5
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_steps: int = 100
    warmup_max_fraction: float = 0.1  # small data: warm-up is at most this fraction of the optimizer steps
    effective_batch: int = 16
    per_device_batch_size: int = 1  # when neither the config file nor a flag says (accumulation then makes 16)
    max_length: int = 2048
    seed: int = 0
    save_steps: int = 200  # checkpoint every N optimizer steps (resume)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"


PAPER = TrainDefaults()

METHODS = ("base", "ours-wts-stage1", "original-wts-stage1", "original-wts-stage2", "ours-wts-stage2")
OURS_TYPES = {"ours-wts-stage1": ("singleturn",), "ours-wts-stage2": ("singleturn", "cascade1", "cascade2")}
ORIGINAL_TYPES = {"original-wts-stage1": ("qa",), "original-wts-stage2": ("qa", "cot", "cascade")}
DEFAULT_CONFIG_FILE = "accelerate_config.yaml"
CONFIG_ENV = "ALICE_ACCELERATE_CONFIG"
CHECKPOINTS = "checkpoints"


class SFTError(AliceError, ValueError):
    """A setting a user can fix; the message says how."""


# ----------------------------------------------------------------------------------------------------
# Method -> model, rows, output folder
# ----------------------------------------------------------------------------------------------------
@dataclass
class Job:
    method: str
    type_: str | None
    role: str  # 'teacher' or 'student': which model is trained
    size: str  # the size (or id/folder) given for that role
    model_id: str  # hub id or folder loaded with from_pretrained
    out_dir: Path
    source: str  # where the rows come from (a file, or a split of a dataset)
    rows: list[dict] = field(default_factory=list)
    input_file: Path | None = None  # the stage file the rows come from (None: a dataset split)


def method_type(method: str, ours_type: str | None, original_type: str | None) -> str | None:
    """The type flag that applies to ``method`` (checked), or None for ``base``."""
    if method == "base":
        return None
    table, flag, given = (
        (OURS_TYPES, "--ours-wts-type", ours_type) if method.startswith("ours") else (ORIGINAL_TYPES, "--original-wts-type", original_type)
    )
    choices = table[method]
    if given is None:
        if len(choices) == 1:
            return choices[0]
        raise SFTError(f"--method {method} needs {flag} (one of {', '.join(choices)})")
    if given not in choices:
        raise SFTError(f"--method {method} takes {flag} {' or '.join(choices)}, not {given!r}")
    return given


def _file_rows(path: Path, made_by: str) -> list[dict]:
    """``{id, question, answer}`` rows of a stage's file (``answer`` is the training target)."""
    rows = read_jsonl(path, made_by=made_by)
    out = []
    for n, r in enumerate(rows, 1):
        missing = [k for k in ("question", "answer") if not isinstance(r.get(k), str)]
        if missing:
            raise JsonlError(f"{path}, row {n}: no {' / '.join(missing)} text (training reads 'question' and 'answer'); rerun `{made_by}`")
        out.append({"id": r.get("id"), "question": r["question"], "answer": r["answer"]})
    return out


def qa_target(data: str, row: dict) -> str:
    """The short answer a 'qa' teacher is trained on (the dataset's ``qa_target``: gsm8k ``#### N``)."""
    return data_mod.spec(data).qa_target(row)


def qa_rows_from_cot(path: Path, made_by: str) -> list[dict]:
    """The 'qa' teacher's rows outside gsm8k: the questions of ``*_cot_correct.jsonl`` (those the teacher answered
    correctly with CoT), each with its ground-truth short answer (``ground_truth_response``), as the seed's SFT.py
    did for hotpotqa/triviaqa/arc_challenge."""
    rows = read_jsonl(path, made_by=made_by)
    out = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r.get("question"), str) or not isinstance(r.get("ground_truth_response"), str):
            raise JsonlError(f"{path}, row {n}: no 'question' / 'ground_truth_response' text; rerun `{made_by}`")
        out.append({"id": r.get("id"), "question": r["question"], "answer": r["ground_truth_response"]})
    return out


def resolve_job(
    *,
    model: str,
    data: str,
    method: str,
    teacher: str | None,
    student: str | None,
    ours_type: str | None = None,
    original_type: str | None = None,
    layout: Layout,
    data_dir: str | None = None,
    output_dir: str | None = None,
    load_rows: bool = True,
) -> Job:
    """Which model ``method`` trains, on which rows, into which folder. Missing inputs name the command that makes them."""
    if method not in METHODS:
        raise SFTError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}")
    type_ = method_type(method, ours_type, original_type)
    role = "teacher" if method.endswith("stage1") else "student"
    needed = ("student",) if method == "base" else (("teacher",) if role == "teacher" else ("teacher", "student"))
    for r in needed:
        if {"teacher": teacher, "student": student}[r] is None:
            hint = " (the trained model; the weak baseline is --student <teacher size>)" if method == "base" else ""
            raise SFTError(f"--method {method} needs --{r}{hint}")
    size = teacher if role == "teacher" else student
    model_id = registry.resolve_model(model, size)
    M, D, T, S, L = model, data, teacher, student, layout
    where = dict(root=L.root, data_dir=data_dir)  # --data-dir / --root of the hinted commands
    path = None

    if method == "base":
        out, source = artifacts.base_model(L, M, D, S).path, f"{D} train split: W2S part (ground truth)"
        load = lambda: data_mod.load_subset(D, "w2s_part", data_dir)  # noqa: E731
    elif method == "ours-wts-stage1":
        out = artifacts.teacher_model(L, M, D, T, "cot").path
        if not data_mod.spec(D).ships_cot:
            cot = artifacts.cot(L, M, D, T)
            path, made_by, source = cot.path, cot.command(**where), str(cot.path)
            load = lambda: _file_rows(path, made_by)  # noqa: E731
        else:  # gsm8k ships its own worked solutions
            source = f"{D} train split: teacher half (ground-truth worked solutions)"
            load = lambda: data_mod.load_subset(D, "teacher_half", data_dir)  # noqa: E731
    elif method == "original-wts-stage1":
        out = artifacts.teacher_model(L, M, D, T, "qa").path
        if not data_mod.spec(D).ships_cot:  # as the seed: the questions whose CoT was correct, with their short answer
            cot = artifacts.cot(L, M, D, T)
            path, made_by = cot.path, cot.command(**where)
            source = f"{path} (questions with a correct CoT; target: the ground-truth short answer)"
            load = lambda: qa_rows_from_cot(path, made_by)  # noqa: E731
        else:  # gsm8k: the whole teacher half, target '#### N'
            source = f"{D} train split: teacher half (short answers)"
            load = lambda: [dict(r, answer=qa_target(D, r)) for r in data_mod.load_subset(D, "teacher_half", data_dir)]  # noqa: E731
    elif method == "original-wts-stage2":
        out = artifacts.original_student(L, M, D, T, S, type_).path
        if type_ == "cascade":
            # hop 1 (teacher -> mid): labels by the teacher; hop 2 (mid -> student): labels by the mid-level model
            hop1, hop2 = (artifacts.original_labels(L, M, D, T, "cascade1"),
                          artifacts.original_labels(L, M, D, "<teacher>", "cascade2", midlevel=T))
            path, made_by = hop1.path, f"{hop1.command(**where)}` (hop 1), or `{hop2.command(**where)}"
        else:
            labels = artifacts.original_labels(L, M, D, T, type_)
            path, made_by = labels.path, labels.command(**where)
        source = str(path)
        load = lambda: _file_rows(path, made_by)  # noqa: E731
    else:  # ours-wts-stage2
        out = artifacts.alice_student(L, M, D, T, S, type_).path
        # the Alice final stage of this very setting (it names its own missing inputs in turn)
        final = (artifacts.alice_stage(L, "final", M, D, "<teacher>", S, midlevel=T) if type_ == "cascade2"
                 else artifacts.alice_stage(L, "final", M, D, T, S))
        path, made_by, source = final.path, final.command(**where), str(final.path)
        if type_ == "cascade1":
            source += f" (rows whose id is in the cascade's first half of the {D} W2S part)"
            load = lambda: cascade_first_rows(_file_rows(path, made_by), path, D, data_dir, made_by)  # noqa: E731
        else:
            load = lambda: _file_rows(path, made_by)  # noqa: E731

    job = Job(method, type_, role, size, model_id, Path(output_dir) if output_dir else out, source,
              input_file=Path(path) if path is not None else None)
    if load_rows:
        job.rows = load()
        if not job.rows:
            raise SFTError(f"no training rows in {source}")
    return job


def cascade_first_rows(rows: list[dict], path: Path, data: str, data_dir: str | None,
                       made_by: str = "python W2SG_pipeline/ours/new_weak_to_strong_final.py ... --overwrite") -> list[dict]:
    """Cascade hop 1 trains the mid-level model on the single-turn Alice rows of the W2S part's first half, by id.

    (The file lists 'original' rows before 'new' ones, so taking its first half of lines would pick the wrong rows.)
    """
    if any(r["id"] is None for r in rows):
        raise JsonlError(f"{path} has rows without an 'id': rerun `{made_by} --overwrite`")
    first = {r["id"] for r in data_mod.load_subset(data, "cascade_first", data_dir)}
    keep = [r for r in rows if r["id"] in first]
    if not keep:
        raise SFTError(f"none of the {len(rows)} ids in {path} is in the cascade's first half of the {data} W2S part: "
                       "was it made from the same data (--data-dir)?")
    return keep


def to_examples(rows: list[dict]) -> list[dict]:
    """Rows -> TRL conversational prompt-completion examples (loss on the completion only)."""
    return [
        {"prompt": prompts.question_messages(r["question"]), "completion": [{"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ]


# ----------------------------------------------------------------------------------------------------
# Batch settings from the accelerate config file
# ----------------------------------------------------------------------------------------------------
SFT_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps")
_SFT_LINE = re.compile(r"^\s*#\s*sft\.([A-Za-z_]+)\s*:\s*([^\s#]+)")


def read_sft_keys(path: str | os.PathLike) -> dict[str, int]:
    """The project's batch keys of an accelerate config file, written as comment lines ``# sft.<key>: <value>``.

    ``accelerate launch`` refuses any key its config classes do not know (``ValueError: ... had unknown keys``), so
    the keys cannot be plain YAML: as comments, accelerate ignores them and this reads them.
    """
    out: dict[str, int] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*sft\.", line):
            raise SFTError(f"{path}, line {n}: keep '{line.strip()}' a comment ('# sft....'): accelerate launch rejects unknown keys")
        m = _SFT_LINE.match(line)
        if not m:
            continue
        key, value = m.groups()
        if key not in SFT_KEYS:
            raise SFTError(f"{path}, line {n}: unknown key sft.{key}; known: {', '.join('sft.' + k for k in SFT_KEYS)}")
        try:
            out[key] = int(value)
        except ValueError:
            raise SFTError(f"{path}, line {n}: sft.{key} must be a whole number, not {value!r}") from None
        if out[key] < 1:
            raise SFTError(f"{path}, line {n}: sft.{key} must be at least 1")
    return out


def load_accelerate_config(path: str | os.PathLike) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise SFTError(f"{path} is not an accelerate config (a YAML mapping)")
    return cfg


def _launcher_config_file() -> Path | None:
    """The ``--config_file`` of the ``accelerate launch`` that started this process, if any.

    accelerate exports no environment variable naming its config file, so this reads the launcher's command line
    (Linux /proc; the worker's parent, or a grandparent under torchrun).
    """
    if not any(k.startswith("ACCELERATE_") for k in os.environ):
        return None
    pid = os.getppid()
    for _ in range(3):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None
        if any(a == "launch" or a.endswith(("accelerate", "accelerate.commands.launch")) for a in argv):
            for i, a in enumerate(argv):
                if a in ("--config_file", "--config-file") and i + 1 < len(argv):
                    return Path(cwd, argv[i + 1])
                if a.startswith(("--config_file=", "--config-file=")):
                    return Path(cwd, a.split("=", 1)[1])
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 1:
            return None
    return None


def find_config_file(explicit: str | None = None) -> tuple[Path | None, str]:
    """The accelerate config file and how it was found: --config-file, $ALICE_ACCELERATE_CONFIG, the launcher's
    ``--config_file``, else ./accelerate_config.yaml when present."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise SFTError(f"--config-file {p} does not exist")
        return p, "--config-file"
    if os.environ.get(CONFIG_ENV):
        p = Path(os.environ[CONFIG_ENV])
        if not p.is_file():
            raise SFTError(f"${CONFIG_ENV}={p} does not exist")
        return p, f"${CONFIG_ENV}"
    p = _launcher_config_file()
    if p is not None and p.is_file():
        return p, "accelerate launch --config_file"
    p = Path(DEFAULT_CONFIG_FILE)
    if p.is_file():
        return p, f"./{DEFAULT_CONFIG_FILE}"
    return None, "none found (defaults)"


@dataclass
class BatchSettings:
    per_device: int
    grad_accum: int
    world_size: int
    config_file: str | None
    config_found_by: str
    sources: dict

    @property
    def effective(self) -> int:
        return self.per_device * self.grad_accum * self.world_size

    def describe(self) -> str:
        return (
            f"effective batch {self.effective} = {self.per_device} per device ({self.sources['per_device']}) "
            f"x {self.grad_accum} accumulation ({self.sources['grad_accum']}) x {self.world_size} process(es)"
        )


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_settings(
    config_file: str | None = None,
    per_device: int | None = None,
    grad_accum: int | None = None,
    world: int | None = None,
) -> BatchSettings:
    """Per-device batch size and gradient accumulation: flag, else config file, else the paper's effective batch.

    With DeepSpeed, accelerate's own ``deepspeed_config.gradient_accumulation_steps`` (or ``accelerate launch
    --gradient_accumulation_steps``) is the accumulation: DeepSpeed and the trainer must agree on it.
    """
    world = world or world_size()
    path, found_by = find_config_file(config_file)
    keys: dict = {}
    ds_accum = ds_micro = None
    if path is not None:
        cfg = load_accelerate_config(path)
        keys = read_sft_keys(path)
        if cfg.get("distributed_type") == "DEEPSPEED":
            ds_accum, ds_micro = deepspeed_batch_keys(cfg, path)
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        env = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "")
        if env.isdigit():
            ds_accum = int(env)
    sources = {}
    if ds_micro is not None:  # DeepSpeed's own micro-batch key, where a user of DeepSpeed edits it
        for given, what in ((per_device, "--per-device-batch-size"), (keys.get("per_device_train_batch_size"), "sft.per_device_train_batch_size")):
            if given is not None and given != ds_micro:
                raise SFTError(f"{what}={given} disagrees with DeepSpeed's train_micro_batch_size_per_gpu={ds_micro} in {path}: "
                               "set one of them")
        per_device, sources["per_device"] = ds_micro, "deepspeed_config.train_micro_batch_size_per_gpu"
    elif per_device is not None:
        sources["per_device"] = "--per-device-batch-size"
    elif "per_device_train_batch_size" in keys:
        per_device, sources["per_device"] = keys["per_device_train_batch_size"], f"sft.per_device_train_batch_size in {path}"
    else:
        per_device, sources["per_device"] = PAPER.per_device_batch_size, "default"
    if ds_accum is not None and isinstance(ds_accum, int):
        for given, what in ((grad_accum, "--gradient-accumulation-steps"), (keys.get("gradient_accumulation_steps"), "sft.gradient_accumulation_steps")):
            if given is not None and given != ds_accum:
                raise SFTError(
                    f"{what}={given} disagrees with DeepSpeed's gradient_accumulation_steps={ds_accum}: set "
                    f"deepspeed_config.gradient_accumulation_steps in {path} (or accelerate launch --gradient_accumulation_steps)"
                )
        grad_accum, sources["grad_accum"] = ds_accum, "deepspeed_config.gradient_accumulation_steps"
    elif grad_accum is not None:
        sources["grad_accum"] = "--gradient-accumulation-steps"
    elif "gradient_accumulation_steps" in keys:
        grad_accum, sources["grad_accum"] = keys["gradient_accumulation_steps"], f"sft.gradient_accumulation_steps in {path}"
    else:
        grad_accum = max(1, PAPER.effective_batch // (per_device * world))
        sources["grad_accum"] = f"default: effective batch {PAPER.effective_batch}"
    if per_device < 1 or grad_accum < 1:
        raise SFTError("batch size and gradient accumulation must be at least 1")
    return BatchSettings(per_device, grad_accum, world, str(path) if path else None, found_by, sources)


def deepspeed_batch_keys(cfg: dict, path) -> tuple[int | None, int | None]:
    """DeepSpeed's own ``gradient_accumulation_steps`` and ``train_micro_batch_size_per_gpu`` of an accelerate config
    (its ``deepspeed_config`` block, or the DeepSpeed JSON its ``deepspeed_config_file`` names); ``auto`` or absent:
    None (the project's keys and defaults decide)."""
    import json

    ds = dict(cfg.get("deepspeed_config") or {})
    json_file = ds.get("deepspeed_config_file")
    if json_file:
        f = Path(json_file) if Path(json_file).is_absolute() else Path(path).parent / json_file
        if not f.is_file():
            f = Path(json_file)
        try:
            ds = {**json.loads(f.read_text()), **{k: v for k, v in ds.items() if k != "deepspeed_config_file"}}
        except (OSError, json.JSONDecodeError) as e:
            raise SFTError(f"{path}: deepspeed_config_file {json_file} cannot be read ({e})") from None
    out = []
    for key in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu"):
        v = ds.get(key)
        if v is None or v == "auto":
            out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            out.append(v)
        else:
            raise SFTError(f"{path}: deepspeed {key} must be a whole number >= 1 or 'auto', not {v!r}")
    return out[0], out[1]


def optimizer_steps(n_rows: int, b: BatchSettings, epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of a run (as the Trainer counts them, up to rounding of a last partial accumulation)."""
    if max_steps and max_steps > 0:
        return max_steps
    batches = math.ceil(n_rows / (b.per_device * b.world_size))
    return max(1, math.ceil(epochs * math.ceil(batches / b.grad_accum)))


def warmup_steps(total: int) -> int:
    """The paper's 100 warm-up steps, at most ``warmup_max_fraction`` of the run (small data)."""
    return min(PAPER.warmup_steps, int(PAPER.warmup_max_fraction * total))


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
@dataclass
class TrainOptions:
    epochs: float = PAPER.epochs
    lr: float = PAPER.lr
    weight_decay: float = PAPER.weight_decay
    max_length: int = PAPER.max_length
    max_steps: int | None = None
    seed: int = PAPER.seed
    limit: int | None = None
    bf16: bool | None = None  # None: bf16 autocast where the accelerator supports it (fp32 master weights always)
    pure_bf16: bool = False  # bf16 weights AND optimizer state: the old path, kept only to measure what it loses
    packing: bool = False
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = PAPER.lora_r
    lora_alpha: int = PAPER.lora_alpha
    lora_dropout: float = PAPER.lora_dropout
    lora_target_modules: str = PAPER.lora_target_modules
    save_steps: int = PAPER.save_steps
    logging_steps: int | None = None
    report_to: str = "none"
    keep_checkpoints: bool = False


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# ----------------------------------------------------------------------------------------------------
# Precision: fp32 master weights and optimizer state, bf16 autocast for the matrix work (as the field trains)
# ----------------------------------------------------------------------------------------------------
PRECISIONS = {
    "bf16-mixed": "fp32 master weights + AdamW state, bf16 autocast",
    "fp32": "fp32 weights, optimizer state and compute",
    "bf16-pure": "bf16 weights AND AdamW state (no fp32 masters): kept only to measure what it loses",
}


def precision(opts: "TrainOptions") -> str:
    """``bf16-mixed`` where the accelerator computes bf16 (unless --no-bf16), else ``fp32``; ``bf16-pure`` on request."""
    if opts.pure_bf16:
        return "bf16-pure"
    bf16 = bf16_supported() if opts.bf16 is None else opts.bf16
    return "bf16-mixed" if bf16 else "fp32"


def load_dtype(prec: str, lora: bool):
    """The dtype the model is loaded in. Trained weights stay fp32 (the optimizer's master copy); under DeepSpeed and
    FSDP the engine keeps fp32 masters of them and computes in bf16. LoRA freezes the base, so a bf16 base is fine
    there (peft keeps the adapters, the only trained weights, in fp32)."""
    import torch

    if prec == "bf16-pure" or (prec == "bf16-mixed" and lora):
        return torch.bfloat16
    return torch.float32


# ----------------------------------------------------------------------------------------------------
# Divergence guard: a non-finite loss or gradient norm stops training at once; nothing is saved as finished
# ----------------------------------------------------------------------------------------------------
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

    class GuardedSFTTrainer(SFTTrainer):
        guard_label = "model"

        def _diverged(self, what: str, value) -> TrainingDiverged:
            return TrainingDiverged(what, float(value), self.state.global_step + 1, self.state.max_steps, self.guard_label)

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if not bool(torch.isfinite(loss.detach()).all()):
                raise self._diverged("the loss", loss.detach().float().mean())
            return loss

        if hasattr(SFTTrainer, "_get_grad_norm"):  # transformers >= 5.x: the norm before optimizer.step()

            def _get_grad_norm(self, *args, **kwargs):
                norm = super()._get_grad_norm(*args, **kwargs)
                if norm is not None and not _finite(norm):
                    raise self._diverged("the gradient norm", norm)
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


def build_trainer(model_id: str, rows: list[dict], out_dir: Path, batch: BatchSettings, opts: TrainOptions):
    """An SFTTrainer for ``rows`` (conversational prompt-completion: loss on the completion tokens only)."""
    import datasets
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from .generation import end_of_turn_token

    prec = precision(opts)
    bf16 = prec != "fp32"
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if tokenizer.chat_template is None:
        raise SFTError(f"{model_id} has no chat template: SFT renders prompts with the model's own template (use an instruct model)")
    eot = end_of_turn_token(tokenizer)
    source_dtype = getattr(AutoConfig.from_pretrained(model_id), "dtype", None)
    model = AutoModelForCausalLM.from_pretrained(model_id, dtype=load_dtype(prec, opts.lora))

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
_NOT_SETTINGS = ("save_steps", "logging_steps", "report_to", "keep_checkpoints")


def fresh_settings(job: Job, batch: BatchSettings, opts: TrainOptions) -> tuple[dict, list]:
    """What the trained weights depend on (recorded with the folder and its checkpoints), and its input paths."""
    settings = {k: v for k, v in asdict(opts).items() if k not in _NOT_SETTINGS}
    settings.update(method=job.method, type=job.type_, model_id=job.model_id, source=job.source,
                    effective_batch=batch.effective)
    return settings, [job.input_file, job.model_id]


def run(job: Job, batch: BatchSettings, opts: TrainOptions, overwrite: bool = False, settings: dict | None = None,
        argv: list[str] | None = None) -> dict | None:
    """Train ``job`` (resuming from its checkpoints), save it; returns the train_config dict (None when skipped).

    A finished folder made with these settings from these inputs is kept; one made otherwise (or checkpoints made
    otherwise) is an ``fresh.StaleOutputError`` naming ``--overwrite``, which trains it again from scratch."""
    from . import fresh

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
    trainer = build_trainer(job.model_id, rows, out, batch, opts)
    resume = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if is_main_process():
        fresh.record(ckpt_dir, made_with, inputs)  # the settings its checkpoints are made with (resume check)
    if resume:
        log(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
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
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, "value") else args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "max_length": args.max_length,
        "bf16": args.bf16,
        "precision": trainer.precision,
        "precision_means": PRECISIONS[trainer.precision],
        "trained_weights_dtype": sorted({str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters()
                                         if p.requires_grad}),
        "packing": opts.packing,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "seed": args.seed,
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


def _versions() -> dict:
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    return {m.__name__: m.__version__ for m in (torch, transformers, trl, accelerate, peft)} | {"python": sys.version.split()[0]}
