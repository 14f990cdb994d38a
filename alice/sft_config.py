"""SFT settings: the paper's training defaults, the batch (accelerate config file, flags, DeepSpeed keys) and options.

- ``PAPER``: the paper's training settings, in one place (3 epochs, lr 1e-5, weight decay 0.01, cosine schedule with
  100 warm-up steps, effective batch 16, bf16 where supported, max length 2048).
- ``find_config_file`` / ``batch_settings``: per-device batch size and gradient accumulation come from the accelerate
  config file (``accelerate_config.yaml``), see ``read_sft_keys`` for why they are written as comment lines.
- ``TrainOptions`` and precision (``precision``, ``load_dtype``); ``SFTError``, the error of every SFT module.

Training itself is ``alice.sft`` (which re-exports these names); the rows a run trains on are ``alice.sft_data``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AliceError


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

DEFAULT_CONFIG_FILE = "accelerate_config.yaml"
AUTO = "auto"  # a batch key or flag left to the memory plan
CONFIG_ENV = "ALICE_ACCELERATE_CONFIG"


class SFTError(AliceError, ValueError):
    """A setting a user can fix; the message says how."""


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
        if value == AUTO:  # the memory plan decides (alice.plan)
            continue
        try:
            out[key] = int(value)
        except ValueError:
            raise SFTError(f"{path}, line {n}: sft.{key} must be a whole number or {AUTO}, not {value!r}") from None
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
    # which of the two the memory plan may choose (nothing pinned them): it keeps the effective batch either way
    auto_per_device: bool = False
    auto_grad_accum: bool = False

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
    per_device, sources["per_device"] = _pick(
        ds_micro, "train_micro_batch_size_per_gpu", f" in {path}: set one of them",
        per_device, "--per-device-batch-size", keys, "per_device_train_batch_size", path)
    auto_per_device = per_device is None
    if per_device is None:
        per_device, sources["per_device"] = PAPER.per_device_batch_size, "auto"
    grad_accum, sources["grad_accum"] = _pick(
        ds_accum, "gradient_accumulation_steps",
        f": set deepspeed_config.gradient_accumulation_steps in {path} (or accelerate launch --gradient_accumulation_steps)",
        grad_accum, "--gradient-accumulation-steps", keys, "gradient_accumulation_steps", path)
    auto_grad_accum = grad_accum is None
    if grad_accum is None:
        grad_accum = max(1, PAPER.effective_batch // (per_device * world))
        sources["grad_accum"] = f"default: effective batch {PAPER.effective_batch}"
    if per_device < 1 or grad_accum < 1:
        raise SFTError("batch size and gradient accumulation must be at least 1")
    return BatchSettings(per_device, grad_accum, world, str(path) if path else None, found_by, sources,
                         auto_per_device, auto_grad_accum)


def _pick(ds_value, ds_key: str, fix: str, flag, flag_name: str, keys: dict, key: str, path):
    """(value, where it came from) of one batch setting: DeepSpeed's own key where the config has one (a flag or an
    ``sft.`` key that says otherwise is an error, ``fix`` ending its message), else the flag, else the ``sft.`` key;
    (None, None): the caller's default."""
    if ds_value is not None:
        for given, what in ((flag, flag_name), (keys.get(key), f"sft.{key}")):
            if given is not None and given != ds_value:
                raise SFTError(f"{what}={given} disagrees with DeepSpeed's {ds_key}={ds_value}{fix}")
        return ds_value, f"deepspeed_config.{ds_key}"
    if flag is not None:
        return flag, flag_name
    if key in keys:
        return keys[key], f"sft.{key} in {path}"
    return None, None


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
# Training options
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
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
    memory_plan: bool = True  # alice.plan picks the micro-batch (and checkpointing) that fits; an OOM walks its ladder
    lora: bool = False
    lora_r: int = PAPER.lora_r
    lora_alpha: int = PAPER.lora_alpha
    lora_dropout: float = PAPER.lora_dropout
    lora_target_modules: str = PAPER.lora_target_modules
    save_steps: int = PAPER.save_steps
    logging_steps: int | None = None
    report_to: str = "none"
    keep_checkpoints: bool = False
    full_determinism: bool = False  # transformers' enable_full_determinism: deterministic kernels, same weights twice


def bf16_supported() -> bool:
    """The accelerator computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX (there the
    demo's 1.5B LoRA step took 35.9 s against 63.5 s in fp32: results/cpu_bf16_training.json); a CPU without them
    would emulate bf16, slower than fp32, so it trains in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU capability checks
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


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
