"""One data-parallel worker: ``python -m alice.generation.worker <spec.json>`` (started by
``data_parallel.run_shards``) runs ``generate_resumable`` on its share into its own checkpoint (``<out>.dp<i>``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .common import Sampling
from .data_parallel import _exit_with_parent
from .generator import Generator
from .resumable import generate_resumable


def worker_main(spec_path: str) -> None:
    """One worker: ``generate_resumable`` of its share into its own checkpoint (``<out>.dp<i>``)."""
    spec = json.loads(Path(spec_path).read_text())
    _exit_with_parent(spec["parent"])
    settings = dict(spec["generator"], data_parallel_size=1)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    print(f"[generation] worker pid {os.getpid()}: {len(spec['items'])} prompts, CUDA_VISIBLE_DEVICES={gpus!r}",
          flush=True)
    with Generator(**settings) as gen:
        generate_resumable(gen, spec["items"], Sampling(**spec["sampling"]), spec["out"], desc=spec["desc"],
                           chunk_size=spec["chunk_size"])


if __name__ == "__main__":
    worker_main(sys.argv[1])
