"""The flags the stage scripts share, and a clean exit for errors a user can cause."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import tempfile
from pathlib import Path

from . import data as data_mod
from . import artifacts, datasets, records, registry
from .errors import AliceError
from .options import DEFAULT_MAX_NEW_TOKENS, GenerationOptions

ROLES = ("teacher", "student", "midlevel")
FAMILY_CHOICES = tuple(registry.FAMILIES) + ("custom",)


def root_problem(root) -> str | None:
    """Why outputs cannot be written under ``root`` (a file, under /proc, read-only, not ours), else None. Nothing is
    created: the nearest existing folder is tried with a temporary file."""
    p = Path(os.path.abspath(os.path.expanduser(str(root))))
    if p.exists() and not p.is_dir():
        return f"{root} is a file, not a folder"
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{root} cannot be made ({existing} is not a folder)"
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".alice-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"cannot write under {root} ({existing}: {e.strerror or e}): pass a folder you can write to"
    return None


class Parser(argparse.ArgumentParser):
    """``parse_args`` plus the checks every stage script shares, each a usage error in one line before any model
    loads: the root must be a folder that can be written."""

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        if "root" in vars(ns):
            root = ns.root or os.environ.get("ALICE_ROOT") or "."
            problem = root_problem(root)
            if problem:
                self.error(f"--root: {problem}")
        return ns


def parser(description: str, roles: tuple[str, ...] = ROLES, prog: str | None = None) -> argparse.ArgumentParser:
    """A ``Parser`` with --data, --model, the given model roles, --data-dir and --root; ``prog``: the script its usage
    errors name (default: sys.argv[0])."""
    p = Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, choices=tuple(datasets.DATASETS), help="dataset")
    p.add_argument(
        "--model",
        required=True,
        choices=FAMILY_CHOICES,
        help="model family; 'custom' when every role is given as a hub id or local folder",
    )
    helps = {
        "teacher": "teacher size (e.g. 1.5B), or a hub id / local folder",
        "student": "student size (e.g. 7B), or a hub id / local folder",
        "midlevel": "mid-level size for cascade Alice, or a hub id / local folder",
    }
    for role in roles:
        p.add_argument(f"--{role}", default=None, help=helps[role])
    p.add_argument("--data-dir", default=None,
                   help=f"local data folder (layout of shared/offline/data); default ${data_mod.DATA_DIR_ENV}, else the Hub")
    p.add_argument("--root", default=None, help="folder holding data/ and model_outputs/ (default $ALICE_ROOT, else .)")
    return p


def resolve(p: argparse.ArgumentParser, args: argparse.Namespace, role: str, required: bool = True) -> str | None:
    """The hub id / folder of ``role`` (checked: unknown family/size is a parser error listing the choices)."""
    size = getattr(args, role, None)
    if size is None:
        if required:
            p.error(f"--{role} is required here")
        return None
    try:
        return registry.resolve_model(args.model, size)
    except registry.RegistryError as e:
        p.error(f"--{role}: {e}")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or a negative number is a usage error, never 'no limit')."""
    v = _whole_number(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v} (leave the flag out for no limit / the default)")
    return v


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed)."""
    v = _whole_number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def similarity(text: str) -> float:
    """argparse type: a cosine similarity threshold, in [-1, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity lies in [-1, 1], got {text}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return v


def location_flags(root=None, data_dir=None) -> str:
    """`` --data-dir D --root R`` (those given), for the 'run X first' commands of error messages."""
    out = artifacts.location(root, data_dir)
    return (" " + shlex.join(out)) if out else ""


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs that were made with other settings or from changed inputs (default: stop and say what differs)")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """Backend flags of the generation layer (see ``alice.generation``)."""
    g = p.add_argument_group("generation")
    d = GenerationOptions()  # each flag's default is its field's
    g.add_argument("--backend", default=d.backend, choices=("auto", "vllm", "hf"), help="vllm when installed with a GPU, else hf")
    g.add_argument("--tensor-parallel-size", type=int, default=d.tensor_parallel_size, help="vLLM tensor parallel size")
    g.add_argument("--data-parallel-size", type=positive_int, default=d.data_parallel_size,
                   help="worker processes, one engine each (worker i sees GPU i; on a CPU they share the cores); "
                        "the prompts are dealt round-robin and the merged output is in question order")
    g.add_argument("--engines-per-gpu", type=positive_int, default=d.engines_per_gpu,
                   help="with --data-parallel-size: this many workers share each GPU (each engine then needs "
                        "--gpu-memory-utilization at most 0.9/k and --kv-cache-gib); for a small model whose one "
                        "engine is bound by its host loop and leaves the card mostly idle")
    g.add_argument("--gpu-memory-utilization", type=float, default=d.gpu_memory_utilization, help="vLLM GPU memory fraction")
    g.add_argument("--enforce-eager", action="store_true",
                   help="vLLM on a GPU: no torch.compile / CUDA graphs (measured on an H200: 54 s instead of 93 s of "
                        "start-up, results/generation_gpu.json)")
    g.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                   help="vLLM on a GPU: CUDA graphs of whole decode steps without vLLM's torch.compile (prefill steps "
                        "run eager). Measured on an H200, the 1.5B on 1,319 gsm8k questions: start-up 56 s (the default: "
                        "93-107 s with torch.compile's cache cold, 51 s warm; --enforce-eager 23-54 s), generation 20.5 s "
                        "(--enforce-eager 22-28 s, the default 15-22 s); results/generation_gpu.json")
    g.add_argument("--kv-cache-gib", type=positive_float, default=d.kv_cache_gib,
                   help="vLLM on a GPU: this many GiB of KV cache, skipping vLLM's memory profiling (which miscounts "
                        "when other processes on the card allocate meanwhile: pipeline --jobs); --gpu-memory-utilization "
                        "then only sets how much free memory the engine checks for at start-up")
    g.add_argument("--batch-invariant", action="store_true",
                   help="vLLM on a GPU: its batch-invariant kernels (VLLM_BATCH_INVARIANT=1). Kept to measure: on an "
                        "H200 (vLLM 0.26, FlashAttention 3) they did NOT make greedy answers independent of batching "
                        "(634 of 1,319 identical between vLLM's default batching and --batch-size 64, 594 without "
                        "them; 678 of 1,319 between two runs of the same settings, 1,273 without them; "
                        "results/determinism_gpu.json, README 'Reproducibility')")
    g.add_argument("--seeding", default=d.seeding, choices=("request", "engine"),
                   help="vLLM, when sampling: 'request' gives every request its own seed (--seed), so a text does not "
                        "depend on what else is in its batch on a CPU; 'engine' samples from the engine's one RNG "
                        "(seeded with --seed), as vLLM does by default: no per-request generator loop in each step "
                        "(0.5B, 16 samples x 1,000 gsm8k questions on an H200: 25,115 instead of 21,854 tok/s, "
                        "results/generation_gpu.json), but a text then depends on its batch (recorded with the output)")
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="hf backend: sequences per generate() call (padded batching; continuous batching: most requests "
                        "per step); vLLM: most sequences in flight per step (max_num_seqs; default vLLM's own)")
    g.add_argument("--hf-batching", default=d.hf_batching, choices=("auto", "continuous", "padded"),
                   help="hf backend: transformers' continuous batching (auto on a GPU) or padded length-sorted batches")
    g.add_argument("--hf-static-cache", action="store_true", help="hf backend, padded: static KV cache + compiled decode")
    g.add_argument("--dtype", default=d.dtype, help="weights' dtype (e.g. bfloat16, float32; default: the model's)")
    g.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens, help=f"cap on generated tokens (paper: {DEFAULT_MAX_NEW_TOKENS})")
    g.add_argument("--limit", type=positive_int, default=d.limit, help="only the first N questions (quick runs)")
    g.add_argument("--seed", type=nonnegative_int, default=d.seed)
    add_overwrite(p)


def options(cls, args: argparse.Namespace, **overrides):
    """The typed options dataclass ``cls`` from parsed flags: each field takes the flag of the same name (its
    default when the parser has no such flag). The library takes these dataclasses, never the Namespace."""
    import dataclasses

    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    return cls(**dict(kw, **overrides))


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The generation flags (``add_generation_args``) as the typed options the library takes."""
    return options(GenerationOptions, args)


def weak_strong_problem(model: str, weak: str | None, strong: str | None, names=("--teacher", "--student")) -> str | None:
    """Why ``weak`` cannot teach ``strong`` (weak-to-strong: the teacher is the smaller model), else None. Registry
    sizes compare by their number (equal is refused too); local folders by their parameter count (a larger teacher is
    refused; equal counts pass, as the tiny test models have them)."""
    if weak is None or strong is None:
        return None
    if not registry.is_custom_id(weak) and not registry.is_custom_id(strong):
        w, s = records.size_in_params(weak), records.size_in_params(strong)
        if w is not None and s is not None and w >= s:
            return (f"{names[0]} {weak} is not smaller than {names[1]} {strong}: weak-to-strong trains the larger "
                    f"model on the smaller one's labels; swap them")
        return None

    def count(x):
        if registry.is_custom_id(x):
            try:
                return records.folder_params(registry.resolve_model(model, x)) if records.is_local(x) else None
            except registry.RegistryError:
                return None
        return records.size_in_params(x)

    w, s = count(weak), count(strong)
    if w is not None and s is not None and w > s:
        return (f"{names[0]} {weak} ({w:,.0f} parameters) is larger than {names[1]} {strong} ({s:,.0f}): weak-to-strong "
                f"trains the larger model on the smaller one's labels; swap them")
    return None


def check_weak_strong(p: argparse.ArgumentParser, model: str, teacher, student, midlevel=None) -> None:
    """``weak_strong_problem`` for teacher < student (and teacher < mid-level < student) as a usage error."""
    pairs = [(teacher, student, ("--teacher", "--student"))]
    if midlevel:
        pairs = [(teacher, midlevel, ("--teacher", "--midlevel")), (midlevel, student, ("--midlevel", "--student"))]
    for w, s, names in pairs:
        problem = weak_strong_problem(model, w, s, names)
        if problem:
            p.error(problem)


def main_guard(fn):
    """Run ``fn``; errors a user can cause (``AliceError``) print one line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except AliceError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
