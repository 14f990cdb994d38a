"""What the memory plan (``alice.plan``) reads: a model's shape from its config, and the GPUs a run may use.

A model's config comes from a local folder, the HF cache (or the Hub when online), or the committed real-shape configs
of the paper's models in ``alice/shapes/`` (so a plan needs no download); the parameter count from an empty
(meta-device) model transformers builds from it. GPUs are read with nvidia-smi (no CUDA context in the planning
process); ``$ALICE_PLAN_HARDWARE`` (e.g. ``4x80``) plans for other hardware, as the tests do.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import AliceError

GIB = 1024**3
SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
# the GPU memory (GiB per card) a step may use on a card it shares with other steps: set by the pipeline's scheduler
# (alice.schedule) for a training step; its memory plan fits it and its process's allocator is capped there
BUDGET_ENV = "ALICE_GPU_BUDGET_GIB"
HARDWARE_ENV = "ALICE_PLAN_HARDWARE"  # e.g. "4x80" (GPUs x GiB each) or "cpu": plan for hardware other than this one



class PlanError(AliceError, ValueError):
    """A setting that does not fit the hardware (the message says what it needs), or a model without the config
    fields the estimate needs."""


# ----------------------------------------------------------------------------------------------------
# Model shapes
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a model's config."""

    name: str
    params: int  # all parameters, tied embeddings counted once
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    largest_layer: int  # parameters of the largest single block (ZeRO-3 / FSDP gather one at a time)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def linear_params(self) -> int:
        """Parameters in the blocks' linear layers (what LoRA 'all-linear' adapts), for the adapter count."""
        return self.layers * (self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
                              + self.heads * self.head_dim * self.hidden + 3 * self.hidden * self.intermediate)

    def lora_params(self, r: int = 16) -> int:
        """LoRA adapter parameters of rank ``r`` on every linear layer of the blocks."""
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        per_layer = r * ((self.hidden + q) + 2 * (self.hidden + kv) + (q + self.hidden)
                         + 2 * (self.hidden + self.intermediate) + (self.intermediate + self.hidden))
        return self.layers * per_layer


def shape_file(model: str) -> Path:
    """The committed real-shape config of a hub id (``alice/shapes/<org>--<name>.json``)."""
    return SHAPES_DIR / (model.replace("/", "--") + ".json")


def load_config(model: str):
    """The transformers config of ``model``: a local folder, else the HF cache (or the Hub when online), else the
    committed real-shape config; a ``PlanError`` naming the fix when none can be read."""
    from transformers import AutoConfig

    path = Path(os.path.expanduser(model))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PlanError(f"{model} has no config.json: pass a folder saved with save_pretrained")
        return AutoConfig.from_pretrained(str(path))
    committed = shape_file(model)
    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        pass
    if committed.is_file():
        d = json.loads(committed.read_text())
        return AutoConfig.for_model(d.pop("model_type"), **d)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        try:
            return AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise PlanError(f"cannot read the config of {model} ({str(e).splitlines()[0]}): pass a local folder or "
                            f"add its config.json as {committed.relative_to(SHAPES_DIR.parent.parent)}") from None
    raise PlanError(f"no config of {model} in the HF cache and HF_HUB_OFFLINE is set: download it, pass a local folder, "
                    f"or add its config.json as {committed.relative_to(SHAPES_DIR.parent.parent)}")


@functools.lru_cache(maxsize=64)
def shape(model: str) -> Shape:
    """The ``Shape`` of ``model``; the parameter count from an empty (meta-device) model of its config."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    cfg = load_config(model)
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    need = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in need if getattr(text, k, None) is None]
    if missing:
        raise PlanError(f"the config of {model} lacks {', '.join(missing)}: the memory plan needs them (a causal LM config)")
    try:
        with init_empty_weights():
            m = AutoModelForCausalLM.from_config(cfg)
        m.tie_weights()  # from_config leaves a tied head untied until weights load
    except (ValueError, KeyError) as e:
        raise PlanError(f"{model} is not a causal LM transformers can build ({str(e).splitlines()[0]})") from None
    params = sum(p.numel() for p in m.parameters())
    blocks = [mod for mod in m.modules() if mod.__class__.__name__.endswith("DecoderLayer")]
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=params // max(text.num_hidden_layers, 1))
    heads = text.num_attention_heads
    return Shape(
        name=model, params=params, layers=text.num_hidden_layers, hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", None) or 4 * text.hidden_size, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads, vocab=text.vocab_size,
        largest_layer=largest,
    )


# ----------------------------------------------------------------------------------------------------
# Hardware
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hardware:
    gpus: int  # 0: the CPU
    gpu_gib: float  # memory of the smallest GPU
    cpu_gib: float
    name: str = ""
    assumed: bool = False  # not this machine's: from --gpus/--gpu-memory-gib or $ALICE_PLAN_HARDWARE
    free_gib: float | None = None  # free memory of the fullest GPU when read (another step's engine on the card)
    budget_gib: float | None = None  # this step's share of each card ($ALICE_GPU_BUDGET_GIB), other steps beside it

    def describe(self) -> str:
        if not self.gpus:
            return f"CPU ({self.cpu_gib:.0f} GiB RAM)"
        what = f"{self.gpus} x {self.name + ' ' if self.name else ''}{self.gpu_gib:.0f} GiB"
        return what + (" (assumed)" if self.assumed else "")


def _cpu_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


def _visible_gpus() -> list[tuple[str, float, float | None]]:
    """(name, GiB, free GiB) of each GPU this process may use (``CUDA_VISIBLE_DEVICES`` respected), read with
    nvidia-smi so that the planning process never creates a CUDA context; torch when nvidia-smi is missing."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,memory.free",
                                  "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
            rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
            cards = [(r[0], r[1], r[2], float(r[3]) / 1024, float(r[4]) / 1024) for r in rows]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                keep = [v.strip() for v in visible.split(",") if v.strip()]
                cards = [next(c for c in cards if v in (c[0], c[1])) for v in keep
                         if any(v in (c[0], c[1]) for c in cards)]
            return [(c[2], c[3], c[4]) for c in cards]
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    try:
        import torch

        if torch.cuda.is_available():
            return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / GIB, None)
                    for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA is "no GPU" for a plan
        pass
    return []


def parse_hardware(text: str) -> Hardware:
    """``"4x80"`` (GPUs x GiB each), ``"80"`` (one GPU) or ``"cpu"``."""
    t = text.strip().lower()
    if t == "cpu":
        return Hardware(0, 0.0, _cpu_gib(), assumed=True)
    try:
        n, gib = t.split("x") if "x" in t else ("1", t)
        n, gib = int(n), float(gib)
        if n < 1 or gib <= 0:
            raise ValueError
    except ValueError:
        raise PlanError(f"hardware {text!r}: write GPUSxGIB, e.g. 4x80, or cpu") from None
    return Hardware(n, gib, _cpu_gib(), assumed=True)


def budget_gib() -> float | None:
    """This step's share of each card ($ALICE_GPU_BUDGET_GIB, set by the pipeline's scheduler), None when unset."""
    try:
        value = float(os.environ.get(BUDGET_ENV, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def detect_hardware(gpus: int | None = None, gpu_memory_gib: float | None = None) -> Hardware:
    """The hardware a run plans for: this machine's visible GPUs (or $ALICE_PLAN_HARDWARE), limited to ``gpus``;
    ``gpu_memory_gib`` plans for cards of that size (with ``gpus``: hardware this machine need not have)."""
    env = os.environ.get(HARDWARE_ENV)
    if env:
        hw = parse_hardware(env)
    else:
        cards = _visible_gpus()
        free = [c[2] for c in cards if c[2] is not None]
        hw = Hardware(len(cards), min((c[1] for c in cards), default=0.0), _cpu_gib(),
                      name=cards[0][0] if cards else "", free_gib=min(free) if free else None, budget_gib=budget_gib())
    if gpu_memory_gib is not None:
        return Hardware(gpus if gpus is not None else max(hw.gpus, 1), gpu_memory_gib, hw.cpu_gib, assumed=True)
    if gpus is not None:
        if gpus > hw.gpus:
            raise PlanError(f"--gpus {gpus}: only {hw.gpus} GPU(s) visible here"
                            + ("" if hw.gpus else " (add --gpu-memory-gib G to plan for GPUs this machine lacks)"))
        hw = replace(hw, gpus=gpus)
    return hw


def deepspeed_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None
