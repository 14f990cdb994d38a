"""Engine pool: one loaded engine per model for the whole run (the pipeline's in-process steps).

While ``engine_pool()`` is active, ``Generator.close()`` hands its engine here (``keep``) and a later ``Generator``
takes it back: as it is when the key matches (``take``: the same weights, by content, and the same engine settings),
or with new weights loaded into it when another model of the same shape asks (``take_compatible``: same
architecture config and tokenizer, same engine settings; vLLM only, ``Generator._refresh``). A key always names what
the engine holds, so after a refresh the engine is pooled under the new model's key and never serves the old one
as it is. Before training, ``rest_for_training()`` puts vLLM engines made with sleep mode (CUDA) to sleep (their
process, CUDA graphs and compiled code stay; weights and KV cache leave the GPU) and frees every other engine
(on a CPU vLLM has no sleep mode: freed, as before); ``free_pooled()`` frees them all. ``COUNTS`` tallies what
happened (loads, reuses, refreshes, sleeps, wakes, frees) for tests and benchmarks."""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

_POOL: dict | None = None  # key -> Loaded, while an engine_pool() is active; None otherwise
DEFAULT_POOL_SIZE = 1  # engines kept at most: a different model frees the others before it loads
_POOL_SIZE = DEFAULT_POOL_SIZE
COUNTS: Counter = Counter()  # load, reuse, refresh, sleep, wake, kept (through training), free: this process's engines
# vLLM's sleep mode for pooled engines on a GPU (a training step then runs beside the sleeping engine): opt-in with
# ALICE_VLLM_SLEEP=1 until it has run on a GPU (only a stand-in LLM has exercised it); off, a training step frees the
# engines, as on a CPU
SLEEP_MODE = os.environ.get("ALICE_VLLM_SLEEP", "0") == "1"
# config.json entries that do not change what the network computes: a trained folder rewrites them
# (alice.sft.finish_saved_folder sets eos_token_id; save_pretrained writes its own transformers_version)
_NOT_SHAPE = {"transformers_version", "eos_token_id", "bos_token_id", "pad_token_id", "use_cache"}


@dataclass
class Loaded:
    """What ``Generator._load`` makes: the engine and what goes with it."""

    engine: object
    tokenizer: object
    stop: list
    max_len: int | None
    batch_size: int | None
    model: str = ""  # the folder (or hub id) whose weights the engine holds now
    config: dict | None = None  # that model's config.json, read when its weights were loaded
    backend: str = ""
    sleeps: bool = False  # made with vLLM's sleep mode (a GPU)
    asleep: bool = False  # put to sleep (level 2: weights and KV cache gone) by rest_for_training
    _shape: str | None = field(default=None, repr=False)

    def shape(self) -> str | None:
        if self._shape is None:
            self._shape = shape_of(self.config, self.tokenizer)
        return self._shape


def read_config(model: str) -> dict | None:
    """A model's config as transformers reads it (``AutoConfig``: a local folder, or a hub id from the local cache), as
    a dict: a hub snapshot written by an older transformers (``rope_theta``, ``torch_dtype``) and a folder this one
    saved compare equal when they describe the same network. None when it cannot be read."""
    try:
        from transformers import AutoConfig

        from .common import _hf_token

        return AutoConfig.from_pretrained(os.path.expanduser(model), token=_hf_token()).to_dict()
    except Exception:  # noqa: BLE001 - an unreadable config: this engine is never refreshed
        return None


def shape_of(config: dict | None, tokenizer) -> str | None:
    """What must be equal for one model's weights to be loaded into another's engine: the architecture config (but
    the entries of ``_NOT_SHAPE`` and the private ``_*`` ones; the dtype spelled either way) and the tokenizer (its vocabulary and special
    tokens). None when the config is unknown: such an engine is never refreshed."""
    if config is None or tokenizer is None:
        return None
    cfg = {k: v for k, v in config.items() if k not in _NOT_SHAPE and not k.startswith("_")}
    if "torch_dtype" in cfg:
        cfg.setdefault("dtype", cfg.pop("torch_dtype"))
    tok = {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(map(str, tokenizer.all_special_tokens)),
           "eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id, "pad": tokenizer.pad_token_id}
    return hashlib.sha256(json.dumps([cfg, tok], sort_keys=True, default=str).encode()).hexdigest()


def close_engine(backend: str, engine) -> None:
    """Free one engine (and its GPU memory) so another model can be loaded in the same process."""
    COUNTS["free"] += 1
    if backend == "vllm":
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # best effort: the process may already be gone
                pass
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:
            pass
    del engine
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pooled_keys() -> list[tuple]:
    """The keys of the engines the active pool holds (empty when no pool is active)."""
    return list(_POOL or {})


def pooled_models() -> list[str]:
    """The models (folders or hub ids) whose weights the pooled engines hold, in the order of ``pooled_keys``."""
    return [loaded.model for loaded in (_POOL or {}).values()]


def free_pooled(keep: tuple | None = None) -> int:
    """Free every pooled engine (but ``keep``'s); returns how many were freed."""
    keys = [k for k in (_POOL or {}) if k != keep]
    for key in keys:
        _evict(key)
    return len(keys)


# ---- a CPU's memory: pooled engines stay through a training step when the machine's free memory covers both ----------
GIB = 1024**3
CPU_POOL_SIZE = 2  # on a CPU, engines of two models (the teacher's size and the student's) may stay loaded
CPU_MARGIN = 1 * GIB  # left free beyond the estimates below
# A training step's peak memory on a CPU, per parameter of the trained model, plus a fixed share for the libraries and
# the data. Measured on 2 AMD EPYC cores (the demo's 1.5B, LoRA, rows of up to 430 tokens): peak RSS 8.3 GB with bf16
# autocast (its frozen base in bf16), 16.4 GB in fp32 (results/cpu_bf16_training.json). Full fine-tuning: fp32 weights, gradients and AdamW state.
TRAIN_BYTES_PER_PARAM = {"lora-bf16": 4, "lora-fp32": 8, "full": 20}
TRAIN_FIXED = 2 * GIB
# An engine's memory on a CPU per parameter (vLLM: bf16 weights; hf: fp32) plus its KV cache and runtime
ENGINE_BYTES_PER_PARAM = {"vllm": 2, "hf": 4}
ENGINE_FIXED = 2 * GIB


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def default_size() -> int:
    """Engines an engine pool keeps: one on a GPU (each vLLM engine takes its share of the card), two on a CPU (as
    its free memory allows: ``make_room`` and ``rest_for_training`` check it)."""
    return CPU_POOL_SIZE if _cpu_only() else DEFAULT_POOL_SIZE


def available_memory() -> int | None:
    """The machine's available memory in bytes (None when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown: the callers then free engines, as before this check existed
        return None


def _params(model: str) -> int | None:
    try:
        from ..hardware import shape

        return shape(model).params
    except Exception:  # noqa: BLE001 - a model the estimate cannot read: None (free the engines)
        return None


def training_need(model: str | None, lora: bool, bf16: bool) -> int | None:
    """The memory a training step of ``model`` takes on a CPU (``TRAIN_BYTES_PER_PARAM``), None when unknown."""
    params = _params(model) if model else None
    if params is None:
        return None
    kind = "full" if not lora else ("lora-bf16" if bf16 else "lora-fp32")
    return params * TRAIN_BYTES_PER_PARAM[kind] + TRAIN_FIXED


def engine_need(model: str, backend: str) -> int | None:
    """The memory a new engine of ``model`` takes on a CPU (``ENGINE_BYTES_PER_PARAM``), None when unknown."""
    params = _params(model)
    return None if params is None else params * ENGINE_BYTES_PER_PARAM.get(backend, 4) + ENGINE_FIXED


def _room_for(need: int | None) -> bool:
    """On a CPU: the machine's free memory covers ``need`` and the margin (False when either is unknown)."""
    free = available_memory()
    return need is not None and free is not None and free - need >= CPU_MARGIN


def rest_for_training(need=None) -> int:
    """Before a training step: pooled vLLM engines made with sleep mode go to sleep (level 2: weights and KV cache
    leave the GPU; the process, its CUDA graphs and compiled code stay). On a CPU, other engines stay loaded while the
    machine's free memory covers the training (``need()``: its bytes, e.g. ``training_need``; asked only on a CPU with
    engines pooled): the oldest is freed until it does, so a later step can take over a living engine. Every other
    engine is freed. Returns how many engines sleep."""
    asleep = 0
    need_bytes = need() if need is not None and _POOL and _cpu_only() else None
    if need_bytes is not None:
        while _POOL and not _room_for(need_bytes):
            _evict(next(iter(_POOL)))
        for loaded in (_POOL or {}).values():
            COUNTS["kept"] += 1
            print(f"[generation] the pooled engine of {loaded.model} stays loaded while training runs "
                  f"(free memory covers both)", flush=True)
        return 0
    for key in list(_POOL or {}):
        loaded = _POOL[key]
        if loaded.sleeps and not loaded.asleep:
            try:
                loaded.engine.sleep(level=2)
            except Exception as e:  # noqa: BLE001 - an engine that cannot sleep is freed instead
                print(f"[generation] the engine of {loaded.model} could not sleep ({type(e).__name__}: {e}); freeing it",
                      flush=True)
                _evict(key)
                continue
            loaded.asleep = True
            COUNTS["sleep"] += 1
            print(f"[generation] the pooled engine of {loaded.model} sleeps while training runs", flush=True)
        if loaded.asleep:
            asleep += 1
        else:
            _evict(key)
    return asleep


def _evict(key: tuple) -> None:
    loaded = _POOL.pop(key)
    print(f"[generation] freeing the pooled engine of {loaded.model or key[0]} ({loaded.backend or key[1]})", flush=True)
    close_engine(loaded.backend or key[1], loaded.engine)


@contextmanager
def engine_pool(size: int = DEFAULT_POOL_SIZE):
    """While active, a closed ``Generator`` keeps its engine for the next ``Generator`` with the same key (the
    content identity of the model's files, ``records.model_identity``; backend, dtype, tensor parallel size, memory
    settings) or, vLLM only, for one of another model of the same shape, which loads its weights into it.
    At most ``size`` engines are kept: loading another model frees the oldest first. Nested use joins the
    outer pool. Every pooled engine is freed on exit."""
    global _POOL, _POOL_SIZE
    if _POOL is not None:
        yield
        return
    _POOL, _POOL_SIZE = {}, max(1, size)
    try:
        yield
    finally:
        free_pooled()
        _POOL = None


def active() -> bool:
    """An ``engine_pool()`` is active."""
    return _POOL is not None


def take(key: tuple) -> "Loaded | None":
    """The pooled engine of ``key``, removed from the pool (None when there is none)."""
    return _POOL.pop(key, None) if _POOL is not None else None


def take_compatible(key: tuple, shape) -> "Loaded | None":
    """A pooled engine of the same engine settings as ``key`` (all but its first entry, the model's identity) whose
    model has the same shape, removed from the pool; ``shape()`` gives the asking model's (computed only when a
    candidate exists). None when there is none."""
    for k, loaded in list((_POOL or {}).items()):
        if k[1:] == key[1:] and loaded.shape() is not None and loaded.shape() == shape():
            return _POOL.pop(k)
    return None


def make_room(model: str | None = None, backend: str = "vllm") -> None:
    """Free the oldest pooled engines until another one fits (``model`` is about to load): fewer than the pool's
    size, and on a CPU the machine's free memory covering the new engine (``engine_need``; unknown: every other engine
    is freed)."""
    cpu = bool(_POOL) and _cpu_only()
    need_bytes = engine_need(model, backend) if cpu and model else None
    while _POOL and (len(_POOL) >= _POOL_SIZE or (cpu and not _room_for(need_bytes))):
        _evict(next(iter(_POOL)))


def keep(key: tuple, loaded: Loaded) -> None:
    """Keep a closed Generator's engine for the next Generator of ``key`` (two open at once: one engine is kept)."""
    if key in _POOL:
        old = _POOL.pop(key)
        close_engine(old.backend, old.engine)
    _POOL[key] = loaded
