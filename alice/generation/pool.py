"""Engine pool: one loaded engine per model across consecutive users (the pipeline's in-process steps).

While ``engine_pool()`` is active, ``Generator.close()`` hands its engine here (``keep``) and a later ``Generator`` of
the same key takes it back (``take``); ``free_pooled()`` frees them (before training)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_POOL: dict | None = None  # key -> Loaded, while an engine_pool() is active; None otherwise
DEFAULT_POOL_SIZE = 1  # engines kept at most: a different model frees the others before it loads
_POOL_SIZE = DEFAULT_POOL_SIZE


@dataclass
class Loaded:
    """What ``Generator._load`` makes: the engine and what goes with it."""

    engine: object
    tokenizer: object
    stop: list
    max_len: int | None
    batch_size: int | None


def close_engine(backend: str, engine) -> None:
    """Free one engine (and its GPU memory) so another model can be loaded in the same process."""
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


def free_pooled(keep: tuple | None = None) -> int:
    """Free every pooled engine (but ``keep``'s); returns how many were freed. Call before training a model."""
    keys = [k for k in (_POOL or {}) if k != keep]
    for key in keys:
        _evict(key)
    return len(keys)


def _evict(key: tuple) -> None:
    print(f"[generation] freeing the pooled engine of {key[0]} ({key[1]})", flush=True)
    close_engine(key[1], _POOL.pop(key).engine)


@contextmanager
def engine_pool(size: int = DEFAULT_POOL_SIZE):
    """While active, a closed ``Generator`` keeps its engine for the next ``Generator`` with the same key
    (model folder and its weight files' size/mtime, backend, dtype, tensor parallel size, memory settings).
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


def weights_stamp(model: str) -> tuple:
    """(name, size, mtime) of a local folder's weight files: a retrained folder is never served from the pool."""
    folder = Path(model)
    if not folder.is_dir():
        return ()
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.glob("*.safetensors")))



def active() -> bool:
    """An ``engine_pool()`` is active."""
    return _POOL is not None


def take(key: tuple) -> "Loaded | None":
    """The pooled engine of ``key``, removed from the pool (None when there is none)."""
    return _POOL.pop(key, None) if _POOL is not None else None


def make_room() -> None:
    """Free the oldest pooled engines until another one fits (another model is about to load)."""
    while _POOL is not None and len(_POOL) >= _POOL_SIZE:
        _evict(next(iter(_POOL)))


def keep(key: tuple, backend: str, loaded: Loaded) -> None:
    """Keep a closed Generator's engine for the next Generator of ``key`` (two open at once: one engine is kept)."""
    if key in _POOL:
        close_engine(backend, _POOL.pop(key).engine)
    _POOL[key] = loaded
