"""Outputs record the settings that made them; a rerun with other settings is caught.

Every stage output (a file, or a trained model folder) gets a sidecar ``<output>.meta.json`` written right after it:
the settings that matter for its content, the fingerprints of its input files / model folders, and the command lines
known to make it (``argvs``). ``check_fresh`` is the one check every stage runs before working:

- output absent                                  -> False (do the work)
- output present, same settings, inputs unchanged -> True (done; nothing to redo)
- otherwise (other settings, a changed input, no record) -> ``StaleOutputError`` in one line naming what differs
  and ``--overwrite``; with ``overwrite=True`` -> False (redo it).

The pipeline (``alice.pipeline``) skips a step whose outputs' sidecars list its exact command line and whose inputs
are unchanged; any other step runs with ``--overwrite``, so the stage itself decides (same settings: kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterable

from .errors import AliceError
from .jsonl import write_json

SUFFIX = ".meta.json"
HEAD_BYTES = 1 << 16
# model-folder files that are records, not weights: rewriting them does not change the model
_RECORDS = {"train_config.json", "loss_log.json"}


class StaleOutputError(AliceError, ValueError):
    """An output exists but was made with other settings or from other inputs; the message names ``--overwrite``."""


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The commit of the code that made a results file: $ALICE_COMMIT when set (a copy of the checkout without its
    .git, as on the GPU machine), else git's HEAD of ``repo`` (default: this checkout), else None."""
    if os.environ.get("ALICE_COMMIT"):
        return os.environ["ALICE_COMMIT"]
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).resolve().parent.parent,
                              capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def meta_path(output: str | os.PathLike) -> Path:
    p = Path(output)
    return p.with_name(p.name + SUFFIX)


def output_exists(output: str | os.PathLike) -> bool:
    """A file, or a folder holding a saved model (config.json)."""
    p = Path(output)
    return p.is_file() or (p / "config.json").is_file()


def fingerprint(path: str | os.PathLike) -> str | None:
    """A file: size + mtime + hash of its first 64 KiB. A folder: name, size and mtime of its top-level files
    (weights, config, tokenizer; not train_config/loss_log). None when absent."""
    p = Path(path)
    h = hashlib.sha1()
    if p.is_file():
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(HEAD_BYTES))
    elif p.is_dir():
        for q in sorted(p.iterdir()):
            if q.is_file() and q.name not in _RECORDS and not q.name.startswith(".") and not q.name.endswith(SUFFIX):
                st = q.stat()
                h.update(f"{q.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    else:
        return None
    return h.hexdigest()[:16]


def _local_inputs(inputs: Iterable) -> dict[str, str | None]:
    """Fingerprints of the inputs that are local paths (a hub id is not: record it in the settings)."""
    out = {}
    for i in inputs:
        if i is None:
            continue
        p = Path(i)
        if p.exists() or os.sep in str(i) and str(i).startswith((".", os.sep)):
            out[str(p)] = fingerprint(p)
    return out


def command_line(argv: list[str] | None) -> list[str]:
    """The flags a script ran with (``argv`` given to main, else sys.argv), without --overwrite."""
    return [str(a) for a in (sys.argv[1:] if argv is None else argv) if str(a) != "--overwrite"]


def read_meta(output) -> dict | None:
    try:
        return json.loads(meta_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _norm(v):
    return json.loads(json.dumps(v, default=str))


def differences(output, settings: dict, inputs: Iterable = ()) -> list[str]:
    """What differs between ``output``'s record and these settings/inputs (empty: the same)."""
    meta = read_meta(output)
    if meta is None:
        return ["no record of the settings that made it"]
    old, new = meta.get("settings", {}), _norm(settings)
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    recorded, now = meta.get("inputs", {}), _local_inputs(inputs)
    for path in sorted(set(recorded) | set(now)):
        if path not in now:
            diffs.append(f"input {path} no longer used")
        elif path not in recorded:
            diffs.append(f"new input {path}")
        elif recorded[path] != now[path]:
            diffs.append(f"{path} changed since" if now[path] else f"{path} is gone")
    return diffs


def inputs_unchanged(meta: dict) -> bool:
    """Every input recorded in ``meta`` still has its fingerprint."""
    return all(fingerprint(p) == fp for p, fp in meta.get("inputs", {}).items())


def check_fresh(output, settings: dict, inputs: Iterable = (), overwrite: bool = False,
                argv: list[str] | None = None, log=print) -> bool:
    """True: ``output`` exists and was made with these settings from these inputs (nothing to do).
    False: it must be (re)made. Raises ``StaleOutputError`` when it exists otherwise made and not ``overwrite``."""
    if not output_exists(output):
        return False
    inputs = list(inputs)
    diffs = differences(output, settings, inputs)
    if not diffs:
        if argv is not None:  # remember this command line as one that makes it (the pipeline's skip test)
            meta = read_meta(output)
            if argv not in meta.setdefault("argvs", []):
                meta["argvs"].append(argv)
                _write(output, meta)
        log(f"{output} is up to date (same settings, unchanged inputs): nothing to do")
        return True
    what = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
    if overwrite:
        log(f"{output} was made otherwise ({what}): --overwrite, redoing it")
        return False
    raise StaleOutputError(f"{output} was made otherwise ({what}): pass --overwrite to redo it, or delete it")


def _write(output, meta: dict) -> None:
    write_json(meta_path(output), meta)


def record(output, settings: dict, inputs: Iterable = (), argv: list[str] | None = None) -> None:
    """Write ``output``'s sidecar (call right after the output itself is written)."""
    _write(output, {"settings": _norm(settings), "inputs": _local_inputs(inputs),
                    "argvs": [argv] if argv is not None else []})


def forget(output) -> None:
    """Drop ``output``'s sidecar (before the output is redone, so a killed redo never looks fresh)."""
    m = meta_path(output)
    if m.exists():
        m.unlink()
