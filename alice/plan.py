"""Resource plan per step, computed before anything runs: memory per GPU, number of GPUs, micro-batch x accumulation,
gradient checkpointing and ZeRO / FSDP for training; weights + KV cache and tensor parallelism for generation.

    python -m alice.plan train Qwen/Qwen2.5-7B-Instruct --gpus 4 --gpu-memory-gib 80   # what a training step needs
    python -m alice.plan tp meta-llama/Meta-Llama-3-70B-Instruct                       # the TP a model needs here

The model's shape comes from its config (a local folder, the HF cache, or the committed real-shape configs in
``alice/shapes/`` for the paper's models, so a plan needs no download); the parameter count from an empty (meta-device)
model built by transformers from that config. The estimate (``training_memory``) is the usual bookkeeping of mixed
precision training (fp32 master weights, gradients and AdamW's two moments: 16 bytes a trained parameter, divided by the
GPUs under ZeRO / FSDP sharding) plus activations per token and layer and the logits; docs/scale.md gives each term and
the GPU measurements it was checked against (results/scale_gpu.json).

Training choices (``plan_training``): every GPU the run may use (``--gpus``, default all visible) trains each step
(one: plain; several: DeepSpeed ZeRO-2, else ZeRO-3, else ZeRO-3 with CPU offload; FSDP stands in where DeepSpeed is
not installed; LoRA: plain data parallel), the largest micro-batch that fits, accumulation making up the effective
batch exactly, gradient checkpointing only when no micro-batch fits without it. A setting that fits nowhere is a
``PlanError`` in one line saying what hardware it needs. An OOM at run time walks ``ladder`` (half the micro-batch and
double accumulation, then gradient checkpointing): every retry changes something.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace

from .errors import AliceError
from .hardware import (  # noqa: F401  (re-exported: the plan's inputs, alice.plan.<name>)
    BUDGET_ENV,
    GIB,
    HARDWARE_ENV,
    SHAPES_DIR,
    Hardware,
    PlanError,
    Shape,
    budget_gib,
    deepspeed_available,
    detect_hardware,
    load_config,
    parse_hardware,
    shape,
    shape_file,
)

# Fixed costs per GPU that the per-parameter terms miss: the CUDA context and cuBLAS/NCCL workspaces (not counted by
# PyTorch's allocator) and the allocator's fragmentation; planned memory stays below USABLE of the card.
USABLE = 0.92
OVERHEAD_GIB = 1.5
DS_BUCKETS_GIB = 2.0  # DeepSpeed's reduce / all-gather buckets (5e8 elements in bf16 each, its defaults)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
STRATEGIES = {
    "single": "one process",
    "ddp": "data parallel, weights on every GPU (LoRA)",
    "zero2": "DeepSpeed ZeRO-2: optimizer state and gradients sharded",
    "zero3": "DeepSpeed ZeRO-3: weights, gradients and optimizer state sharded",
    "zero3-offload": "DeepSpeed ZeRO-3, optimizer state and fp32 weights in CPU memory",
    "fsdp-grad-op": "FSDP, gradients and optimizer state sharded (ZeRO-2's equivalent)",
    "fsdp": "FSDP full shard (ZeRO-3's equivalent)",
    "fsdp-offload": "FSDP full shard with weights and optimizer state in CPU memory",
    "cpu": "the CPU",
}
_FSDP_FOR = {"zero2": "fsdp-grad-op", "zero3": "fsdp", "zero3-offload": "fsdp-offload"}


def activation_bytes_per_token(s: Shape, checkpointing: bool) -> float:
    """Activations kept for the backward pass, per token (bf16 autocast, SDPA attention: no sequence-squared term).

    Per block and token about 36 x hidden + 8 x intermediate bytes (the fp32 residual stream and norm outputs, the
    bf16 inputs each linear layer saves, q / k / v / attention output, the MLP's gate, up, activation and product);
    with checkpointing only each block's fp32 input is kept, and one block is recomputed at a time."""
    block = 36 * s.hidden + 8 * s.intermediate
    if checkpointing:
        return s.layers * 4 * s.hidden + block
    return s.layers * block


def logits_bytes_per_token(s: Shape) -> float:
    """The logits and the loss over them: bf16 logits, their fp32 copy, log-softmax and its gradient (16 bytes a
    vocabulary entry at the peak of the backward pass)."""
    return 16 * s.vocab


def training_memory(s: Shape, *, strategy: str, gpus: int, micro_batch: int, tokens: int, checkpointing: bool,
                    lora: bool = False, lora_r: int = 16) -> dict[str, float]:
    """Bytes per GPU of one training process, by part (``weights``, ``gradients``, ``optimizer``, ``activations``,
    ``logits``, ``overhead``), and ``cpu`` (CPU memory the offloading strategies need, all processes together)."""
    n = s.params
    g = max(gpus, 1)
    trained = s.lora_params(lora_r) if lora else n
    parts = dict.fromkeys(("weights", "gradients", "optimizer", "activations", "logits", "overhead", "cpu"), 0.0)
    if lora:  # bf16 frozen base (replicated), fp32 adapters with their gradients and AdamW moments
        parts["weights"] = 2 * n + 4 * trained
        parts["gradients"] = 4 * trained
        parts["optimizer"] = 8 * trained
    elif strategy in ("single", "cpu", "ddp"):  # fp32 weights + grads + AdamW; autocast's cached bf16 copies
        parts["weights"] = 4 * n + 2 * n
        parts["gradients"] = 4 * n
        parts["optimizer"] = 8 * n
    elif strategy in ("zero2", "fsdp-grad-op"):  # bf16 working weights replicated; fp32 master + moments + grads sharded
        parts["weights"] = 2 * n + 4 * n / g
        parts["gradients"] = 2 * n / g + 4 * n / g
        parts["optimizer"] = 8 * n / g
    elif strategy in ("zero3", "fsdp"):  # everything sharded; the gathered blocks in bf16 (current + prefetched)
        parts["weights"] = 2 * n / g + 4 * n / g + 2 * 2 * s.largest_layer + 2 * s.vocab * s.hidden
        parts["gradients"] = 2 * n / g + 4 * n / g
        parts["optimizer"] = 8 * n / g
    elif strategy in ("zero3-offload", "fsdp-offload"):  # GPU: gathered blocks only; CPU: masters, moments, grads
        parts["weights"] = 2 * 2 * s.largest_layer + 2 * s.vocab * s.hidden
        parts["gradients"] = 2 * 2 * s.largest_layer
        parts["cpu"] = (2 + 4 + 4 + 8) * n
    else:
        raise PlanError(f"unknown training strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    t = micro_batch * tokens
    parts["activations"] = t * activation_bytes_per_token(s, checkpointing)
    parts["logits"] = t * logits_bytes_per_token(s)
    parts["overhead"] = OVERHEAD_GIB * GIB + (DS_BUCKETS_GIB * GIB if strategy.startswith("zero") and g > 1 else 0)
    return parts


def gpu_bytes(parts: dict[str, float]) -> float:
    return sum(v for k, v in parts.items() if k != "cpu")


@dataclass(frozen=True)
class TrainPlan:
    model: str
    lora: bool
    hardware: str
    gpus: int  # processes (GPUs); 0 on the CPU
    strategy: str
    per_device: int
    grad_accum: int
    gradient_checkpointing: bool
    tokens: int  # the longest row (tokens): every micro-batch is planned as if padded to it
    effective_batch: int
    estimate_gib: float  # per GPU (CPU: of RAM)
    capacity_gib: float  # what the plan lets one GPU use
    parts_gib: dict = field(default_factory=dict)
    cpu_gib: float = 0.0  # CPU memory the offloading strategies need
    note: str = ""

    @property
    def launched(self) -> bool:
        """Several processes: the step runs under ``accelerate launch``."""
        return self.gpus > 1

    def describe(self) -> str:
        where = "CPU" if self.strategy == "cpu" else f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}, {self.strategy}"
        ckpt = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return (f"{where}, {self.per_device} x {self.grad_accum}{f' x {self.gpus}' if self.gpus > 1 else ''} "
                f"(effective {self.effective_batch}){ckpt}, rows up to {self.tokens} tokens: "
                f"~{self.estimate_gib:.1f} GiB per {'process' if self.strategy == 'cpu' else 'GPU'}"
                + (f" of {self.capacity_gib:.0f}" if self.strategy != "cpu" else "")
                + (f" (+{self.cpu_gib:.0f} GiB CPU)" if self.cpu_gib else "") + (f"; {self.note}" if self.note else ""))

    def to_dict(self) -> dict:
        return dict(asdict(self), describe=self.describe())


def _divisors_desc(n: int, cap: int | None = None) -> list[int]:
    """Micro-batches to try: the divisors of ``n`` (so accumulation makes the effective batch exactly), largest
    first, at most ``cap``."""
    return [d for d in range(n, 0, -1) if n % d == 0 and (cap is None or d <= cap)]


def _strategies(gpus: int, lora: bool) -> list[str]:
    if gpus <= 1:
        return ["single", "zero3-offload"] if not lora else ["single"]
    if lora:
        return ["ddp"]
    order = ["zero2", "zero3", "zero3-offload"]
    return order if deepspeed_available() else [_FSDP_FOR[x] for x in order]


def _fits(parts: dict, capacity: float, hw: Hardware) -> bool:
    return gpu_bytes(parts) <= capacity and (not parts["cpu"] or parts["cpu"] <= 0.8 * hw.cpu_gib * GIB)


def plan_training(model: str, *, lora: bool, effective_batch: int, tokens: int, hw: Hardware,
                  per_device: int | None = None, strategy: str | None = None, processes: int | None = None,
                  lora_r: int = 16) -> TrainPlan:
    """The plan of one training step (see the module's doc); ``per_device``: a requested micro-batch (the plan keeps
    it when it fits, else lowers it); ``strategy`` / ``processes``: already decided (a run under accelerate launch)."""
    s = shape(model)
    if hw.gpus == 0:  # the CPU: no padding waste (1 row a micro-batch) unless asked; nothing to shard
        b = per_device or 1
        world = processes or 1
        if effective_batch % (b * world):
            raise PlanError(f"micro-batch {b} x {world} process(es) does not divide the effective batch {effective_batch}")
        parts = training_memory(s, strategy="cpu", gpus=1, micro_batch=b, tokens=tokens, checkpointing=False, lora=lora,
                                lora_r=lora_r)
        return TrainPlan(model, lora, hw.describe(), 0, "cpu", b, effective_batch // (b * world), False, tokens,
                         effective_batch, gpu_bytes(parts) / GIB, hw.cpu_gib, _gib(parts))
    capacity = USABLE * hw.gpu_gib * GIB
    if hw.budget_gib is not None:  # the share of a card the pipeline's scheduler gave this step (alice.schedule):
        capacity = min(capacity, hw.budget_gib * GIB)  # the same plan whatever its neighbours use at the moment
    elif hw.free_gib is not None and not hw.assumed:  # another process's engine on the card: plan within what is free
        capacity = min(capacity, (hw.free_gib - 0.5) * GIB)
    counts = [processes] if processes else [g for g in _gpu_counts(hw.gpus) if effective_batch % g == 0]
    tried = []
    for g in counts:
        for strat in ([strategy] if strategy else _strategies(g, lora)):
            if strat.endswith("offload") and not (strategy or deepspeed_available() or strat.startswith("fsdp")):
                continue
            for ckpt in (False, True):
                for b in _divisors_desc(effective_batch // g, per_device):
                    parts = training_memory(s, strategy=strat, gpus=g, micro_batch=b, tokens=tokens, checkpointing=ckpt,
                                            lora=lora, lora_r=lora_r)
                    if _fits(parts, capacity, hw):
                        note = f"micro-batch {per_device} lowered to {b}" if per_device and b < per_device else ""
                        return TrainPlan(model, lora, hw.describe(), g, strat, b, effective_batch // (b * g), ckpt,
                                         tokens, effective_batch, round(gpu_bytes(parts) / GIB, 1),
                                         round(capacity / GIB, 1), _gib(parts), round(parts["cpu"] / GIB, 1), note)
            last = training_memory(s, strategy=strat, gpus=g, micro_batch=1, tokens=tokens, checkpointing=True,
                                   lora=lora, lora_r=lora_r)
            tried.append(f"{g} x {strat} {gpu_bytes(last) / GIB:.0f} GiB per GPU"
                         + (f" + {last['cpu'] / GIB:.0f} GiB of CPU memory (of {hw.cpu_gib:.0f})" if last["cpu"] else ""))
    raise PlanError(_needs(s, lora, effective_batch, tokens, hw, tried, lora_r))


def _gpu_counts(n: int) -> list[int]:
    return [n]


def _gib(parts: dict) -> dict:
    return {k: round(v / GIB, 2) for k, v in parts.items() if v}


def _needs(s: Shape, lora: bool, effective_batch: int, tokens: int, hw: Hardware, tried: list[str], lora_r: int) -> str:
    """The one line of a training step that fits nowhere here: what it would need."""
    what = f"{'LoRA' if lora else 'full'} fine-tuning of {s.name} ({s.params / 1e9:.2f}B parameters, rows up to {tokens} tokens)"
    capacity = USABLE * hw.gpu_gib * GIB
    for g in (2, 4, 8, 16):
        if g <= hw.gpus or effective_batch % g:
            continue
        for strat in (["ddp"] if lora else ["zero2", "zero3"]):
            parts = training_memory(s, strategy=strat, gpus=g, micro_batch=1, tokens=tokens, checkpointing=True,
                                    lora=lora, lora_r=lora_r)
            if gpu_bytes(parts) <= capacity:
                alt = "" if lora else "; or --lora"
                return (f"{what} does not fit {hw.describe()} (tried {'; '.join(tried)}): it needs {g} GPUs of "
                        f"{hw.gpu_gib:.0f} GiB ({strat.replace('zero', 'ZeRO-')}){alt}")
    return f"{what} does not fit {hw.describe()} (tried {'; '.join(tried)}); use larger GPUs{'' if lora else ' or --lora'}"


def ladder_rungs(per_device: int, effective_batch: int, world: int, checkpointing: bool) -> list[tuple[int, int, bool]]:
    """The retries left after an out-of-memory error at ``per_device`` (and ``checkpointing``), in order, as
    (micro-batch, accumulation, checkpointing): the next smaller micro-batch that divides the effective batch, with
    accumulation making up the same effective batch, down to 1; then 1 with gradient checkpointing. Each rung differs
    from the one before it (a retry of the same failure would fail the same way)."""
    world = max(world, 1)
    rungs = []
    if not checkpointing:
        rungs += [(b, effective_batch // (b * world), False) for b in _divisors_desc(effective_batch // world)
                  if b < per_device]
    rungs += [(1, effective_batch // world, True)] if not checkpointing or per_device > 1 else []
    return rungs


def ladder(plan: TrainPlan) -> list[TrainPlan]:
    """``ladder_rungs`` of a plan, as plans."""
    return [replace(plan, per_device=b, grad_accum=a, gradient_checkpointing=c, note="after an out-of-memory error")
            for b, a, c in ladder_rungs(plan.per_device, plan.effective_batch, plan.gpus, plan.gradient_checkpointing)]


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenPlan:
    model: str
    hardware: str
    tensor_parallel_size: int
    weights_gib: float  # per GPU
    kv_cache_gib: float  # per GPU, what is left for it
    min_kv_gib: float  # per GPU, room for ``sequences`` of ``max_tokens``
    sequences: int
    max_tokens: int
    quantization: str | None = None

    def describe(self) -> str:
        tp = f"tensor parallel {self.tensor_parallel_size}" if self.tensor_parallel_size > 1 else "1 GPU"
        q = f" {self.quantization}" if self.quantization else ""
        return (f"{tp}: weights{q} ~{self.weights_gib:.1f} GiB per GPU, KV cache ~{self.kv_cache_gib:.0f} GiB per GPU "
                f"(needs {self.min_kv_gib:.1f} for {self.sequences} sequences of {self.max_tokens} tokens)")

    def to_dict(self) -> dict:
        return dict(asdict(self), describe=self.describe())


GEN_OVERHEAD_GIB = 3.0  # vLLM's activations, CUDA graphs and sampler buffers beside weights and KV cache


def plan_generation(model: str, hw: Hardware, *, max_tokens: int = 4096, sequences: int = 8,
                    utilization: float = 0.9, quantization: str | None = None) -> GenPlan:
    """The smallest tensor parallel size (a power of two dividing the attention heads) at which the weights and room
    for ``sequences`` sequences of ``max_tokens`` fit ``utilization`` of each GPU (vLLM's gpu_memory_utilization)."""
    s = shape(model)
    wbytes = 1 if quantization == "fp8" else 2
    if hw.gpus == 0:
        return GenPlan(model, hw.describe(), 1, s.params * wbytes / GIB, 0.0, 0.0, sequences, max_tokens, quantization)
    tp = 1
    while True:
        weights = s.params * wbytes / tp
        kv_left = utilization * hw.gpu_gib * GIB - weights - GEN_OVERHEAD_GIB * GIB
        need = sequences * max_tokens * s.kv_bytes_per_token() / min(tp, s.kv_heads)
        if kv_left >= need:
            return GenPlan(model, hw.describe(), tp, round(weights / GIB, 1), round(kv_left / GIB, 1),
                           round(need / GIB, 2), sequences, max_tokens, quantization)
        tp *= 2
        if tp > hw.gpus or s.heads % tp:
            break
    for g in (2, 4, 8, 16):
        if s.heads % g == 0 and utilization * hw.gpu_gib * GIB - s.params * wbytes / g - GEN_OVERHEAD_GIB * GIB >= \
                sequences * max_tokens * s.kv_bytes_per_token() / min(g, s.kv_heads):
            raise PlanError(f"generating with {s.name} ({s.params / 1e9:.1f}B parameters, {s.params * wbytes / GIB:.0f} GiB "
                            f"of weights) needs {g} GPUs of {hw.gpu_gib:.0f} GiB (tensor parallel {g}); "
                            f"{hw.describe()} here")
    raise PlanError(f"generating with {s.name} does not fit GPUs of {hw.gpu_gib:.0f} GiB even at tensor parallel 16")


def engine_share_gib(gp: GenPlan, flags: list[str], hw: Hardware) -> float:
    """What a generating step holds of each card while it runs beside other steps (``alice.schedule``): its weights,
    its fixed KV cache (``--kv-cache-gib``) and ``GEN_OVERHEAD_GIB``; without a fixed KV cache, vLLM's
    ``--gpu-memory-utilization`` share of the card (0.9 when not given)."""
    def value(flag: str) -> float | None:
        return float(flags[flags.index(flag) + 1]) if flag in flags[:-1] else None

    kv = value("--kv-cache-gib")
    if kv is not None:
        return round(gp.weights_gib + kv + GEN_OVERHEAD_GIB, 1)
    return round((value("--gpu-memory-utilization") or 0.9) * hw.gpu_gib, 1)


# ----------------------------------------------------------------------------------------------------
# Command line: python -m alice.plan train|tp MODEL
# ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alice.plan", description="What a training or generation step needs.")
    sub = p.add_subparsers(dest="what", required=True)
    for name, helptext in (("train", "plan one training step"), ("tp", "print the tensor parallel size generation needs"),
                           ("generate", "plan generation with a model")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("model", help="hub id or local folder ('summarizer': the paper's, as the uncertainty stage finds it)")
        q.add_argument("--gpus", type=int, default=None, help="GPUs the step may use (default: all visible)")
        q.add_argument("--gpu-memory-gib", type=float, default=None, help="plan for GPUs of this size")
        if name == "train":
            q.add_argument("--lora", action="store_true")
            q.add_argument("--tokens", type=int, default=2048, help="longest row in tokens")
            q.add_argument("--effective-batch", type=int, default=16)
        else:
            q.add_argument("--max-tokens", type=int, default=4096, help="prompt + new tokens of a sequence")
            q.add_argument("--sequences", type=int, default=8)
            q.add_argument("--quantization", default=None, choices=(None, "fp8"))
    a = p.parse_args(argv)
    if a.model == "summarizer":
        from .registry import resolve_summarizer

        a.model = resolve_summarizer()
    try:
        hw = detect_hardware(a.gpus, a.gpu_memory_gib)
        if a.what == "train":
            plan = plan_training(a.model, lora=a.lora, effective_batch=a.effective_batch, tokens=a.tokens, hw=hw)
            print(json.dumps(plan.to_dict(), indent=1) if os.environ.get("ALICE_PLAN_JSON") else plan.describe())
        else:
            gp = plan_generation(a.model, hw, max_tokens=a.max_tokens, sequences=a.sequences, quantization=a.quantization)
            print(gp.tensor_parallel_size if a.what == "tp" else gp.describe())
    except AliceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
