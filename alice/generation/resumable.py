"""``generate_resumable``: generation for ``[{id, messages}]`` items, checkpointed row by row, shared among
data-parallel workers when asked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..records import fingerprint
from ..jsonl import Progress
from .checkpoint import cache_path, clear_resumable  # noqa: F401  (re-exported)
from .common import Sampling
from .data_parallel import absorb_shards, run_shards

if TYPE_CHECKING:
    from .generator import Generator


def _fingerprint(model: str, sampling: Sampling, messages, weights: str | None = None) -> str:
    """Rows of the checkpoint count only for the same model (and, for a local folder, the same weights files: a model
    retrained at the same path makes them stale), sampling settings (n aside) and prompt."""
    s = {k: v for k, v in asdict(sampling).items() if k != "n"}
    blob = json.dumps([model, weights, s, messages] if weights else [model, s, messages], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def generate_resumable(generator: "Generator", items: list[dict], sampling: Sampling, out_path, *,
                       desc: str = "generating", chunk_size: int | None = None) -> dict[str, list[str]]:
    """``{id: [n texts]}`` for ``items`` (``[{"id", "messages"}]``), checkpointed as they come.

    Each text is appended to ``<out_path>.gen.partial`` keyed by (id, sample index, fingerprint of model +
    sampling + prompt), so a killed run continues and a changed prompt or setting is regenerated.
    ``chunk_size`` (prompts per checkpoint) defaults to the backend's choice (64 for hf, more for vLLM on a GPU).
    The model is loaded only if something is left to generate. With ``generator.data_parallel_size`` > 1 the work is
    shared by that many worker processes, one engine each, whose checkpoints are merged here (``alice.data_parallel``).
    """
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("generate_resumable: item ids must be unique")
    prog = Progress(cache_path(out_path), key=lambda r: (r["id"], r["k"], r["fp"]))
    data_parallel = getattr(generator, "data_parallel_size", 1) > 1
    if data_parallel:
        absorb_shards(prog, out_path)  # what the workers of a killed run checkpointed
    weights = fingerprint(generator.model) if Path(generator.model).is_dir() else None
    fps = {it["id"]: _fingerprint(generator.model, sampling, it["messages"], weights) for it in items}
    todo = [it for it in items if any(not prog.done((it["id"], k, fps[it["id"]])) for k in range(sampling.n))]
    if todo:
        print(f"[generation] {desc}: {len(items) - len(todo)}/{len(items)} already done, {len(todo)} to go", flush=True)
    if data_parallel and todo:
        try:
            run_shards(generator, todo, sampling, out_path, desc=desc, chunk_size=chunk_size)
        finally:
            absorb_shards(prog, out_path)
        todo = []
    chunk = chunk_size or generator.default_chunk_size
    for c in range(0, len(todo), chunk):
        part = todo[c : c + chunk]
        texts = generator.generate([it["messages"] for it in part], sampling,
                                   desc=f"{desc} [{c + len(part)}/{len(todo)}]")
        prog.add({"id": it["id"], "k": k, "fp": fps[it["id"]], "text": t}
                 for it, samples in zip(part, texts) for k, t in enumerate(samples))
    return {it["id"]: [prog.rows[(it["id"], k, fps[it["id"]])]["text"] for k in range(sampling.n)] for it in items}
