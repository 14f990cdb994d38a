"""What an output was made from, by content: file and folder fingerprints, model identity, data fingerprints.

``alice.fresh`` writes these into every output's record (``<output>.meta.json``) and checks them before an output is
believed. Everything here names *content*, never a path, so a moved or copied root (or one spelled relative instead
of absolute) keeps its records valid:

- a file: SHA-256 of its bytes (whole: stage files, summaries, configs, tokenizers);
- a weight file over ``WHOLE_LIMIT`` (64 MiB: a real model's ``*.safetensors`` shards): its size, the safetensors
  header (every tensor's name, dtype, shape and offsets) and the first and last MiB. Reading a 15 GB model whole at
  every check would take minutes; a retrained or truncated shard changes its header, size or ends, not only its
  middle (a flipped byte in the middle of a shard is the one change this does not see);
- a model folder: the fingerprints of its top-level files, by name (records of a run such as ``train_config.json``,
  ``loss_log.json``, ``*.meta.json``, lock files and sub-folders such as ``checkpoints/`` are not part of the model);
- a model named by a hub id: the id and the commit of its snapshot in the local Hugging Face cache (``@unknown``
  when not cached: the revision is then whatever the Hub serves);
- a dataset split: SHA-256 of its rows as the project reads them (``alice.data.load_split``): whichever folder or
  Hub copy they come from, the same questions and answers give the same fingerprint.

Fingerprints are cached per process by (path, device, inode, size, mtime), so a check repeated in one run reads a
file once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

CHUNK = 1 << 20
WHOLE_LIMIT = 64 << 20  # weight files larger than this are fingerprinted by size + header + first/last MiB
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# files of a model folder that record a run, not the model: rewriting them does not change the model
RUN_RECORDS = {"train_config.json", "loss_log.json"}
META_SUFFIX = ".meta.json"
LOCK_SUFFIX = ".lock"

_CACHE: dict[tuple, str] = {}


def _stat_key(p: Path) -> tuple:
    st = p.stat()
    return (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _safetensors_header(f) -> bytes:
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        return head
    (n,) = struct.unpack("<Q", head)
    return head + f.read(min(n, 100 << 20))


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's content; a weight file over ``WHOLE_LIMIT``: of its size, header and two ends."""
    p = Path(path)
    key = ("file", *_stat_key(p))
    if key in _CACHE:
        return _CACHE[key]
    h = hashlib.sha256()
    size = key[4]
    with open(p, "rb") as f:
        if size > WHOLE_LIMIT and p.name.endswith(WEIGHT_SUFFIXES):
            h.update(f"partial:{size}:".encode())
            if p.name.endswith(".safetensors"):
                h.update(_safetensors_header(f))
            f.seek(0)
            h.update(f.read(CHUNK))
            f.seek(size - CHUNK)
            h.update(f.read(CHUNK))
        else:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def model_files(folder: str | os.PathLike) -> list[Path]:
    """The files that make a model folder what it is (see the module docstring)."""
    out = []
    for q in sorted(Path(folder).iterdir()):
        n = q.name
        if (q.is_file() and n not in RUN_RECORDS and not n.startswith(".") and not n.endswith(META_SUFFIX)
                and not n.endswith(LOCK_SUFFIX)):
            out.append(q)
    return out


def folder_files(folder: str | os.PathLike) -> dict[str, int]:
    """``{name: size}`` of a model folder's files."""
    return {q.name: q.stat().st_size for q in model_files(folder)}


def folder_digest(folder: str | os.PathLike) -> str:
    h = hashlib.sha256()
    for q in model_files(folder):
        h.update(f"{q.name}:{q.stat().st_size}:{file_digest(q)};".encode())
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> str | None:
    """A short content fingerprint of a file or a model folder; None when absent."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)[:20]
    if p.is_dir():
        return folder_digest(p)[:20]
    return None


def _hub_commit(repo_id: str) -> str | None:
    """The commit of ``repo_id``'s snapshot in the local Hugging Face cache (None: not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str):
                return Path(found).parent.name
    except Exception:  # a malformed id: no commit
        return None
    return None


def is_local(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(str(name)))


def model_identity(name: str | os.PathLike) -> str:
    """``folder:<content fingerprint>`` for a local folder, ``hub:<id>@<commit>`` for a hub id."""
    name = str(name)
    if is_local(name):
        return f"folder:{fingerprint(os.path.expanduser(name))}"
    return f"hub:{name}@{_hub_commit(name) or 'unknown'}"


def rows_digest(rows) -> str:
    """SHA-256 of rows (JSON objects) as written with sorted keys: the same content gives the same digest."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:20]


def jsonl_check(path: str | os.PathLike) -> dict:
    """What a JSONL output is: its row count, a digest of its ids in order, and its content digest."""
    ids, n = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            try:
                row = json.loads(line)
                ids.append(row.get("id") if isinstance(row, dict) else None)
            except json.JSONDecodeError:
                ids.append(None)
    return {"rows": n, "ids": hashlib.sha256(json.dumps(ids, default=str).encode()).hexdigest()[:20],
            "sha256": file_digest(path)[:20]}


def output_check(output: str | os.PathLike) -> dict | None:
    """What ``output`` is now, to be recorded with it and compared later (None: nothing there to check)."""
    p = Path(output)
    if p.is_file():
        if p.suffix == ".jsonl":
            return {"kind": "jsonl", **jsonl_check(p)}
        return {"kind": "file", "size": p.stat().st_size, "sha256": file_digest(p)[:20]}
    if p.is_dir() and (p / "config.json").is_file():
        return {"kind": "model", "files": folder_files(p), "fingerprint": folder_digest(p)[:20]}
    return None


def output_damage(output: str | os.PathLike, recorded: dict | None) -> str | None:
    """How ``output`` differs from what its record says it was (None: it checks, or nothing was recorded)."""
    if not recorded:
        return None
    now = output_check(output)
    if now is None:
        return "it is gone or holds no saved model"
    if now["kind"] != recorded.get("kind"):
        return f"it is a {now['kind']} now, its record says {recorded.get('kind')}"
    if now["kind"] == "jsonl":
        if now["rows"] != recorded["rows"]:
            return f"it has {now['rows']} rows, its record says {recorded['rows']} (damaged or edited since)"
        if now["ids"] != recorded["ids"]:
            return "its question ids differ from its record (edited since)"
        if now["sha256"] != recorded["sha256"]:
            return "its content differs from its record (edited since)"
        return None
    if now["kind"] == "model":
        old, new = recorded.get("files", {}), now["files"]
        for name in sorted(set(old) | set(new)):
            if name not in new:
                return f"{name} is missing (its record lists it)"
            if name not in old:
                return f"{name} is not in its record (added since)"
            if old[name] != new[name]:
                return f"{name} is {new[name]:,} bytes, its record says {old[name]:,} (damaged or replaced since)"
        if now["fingerprint"] != recorded.get("fingerprint"):
            return "its weights differ from its record (replaced since)"
        return None
    if now["sha256"] != recorded.get("sha256"):
        return f"its content differs from its record ({now['size']:,} bytes, recorded {recorded.get('size', 0):,})"
    return None


# ---- model sizes, for the weak < strong check -------------------------------------------------------------------
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([MBT])$", re.I)


def size_in_params(size: str) -> float | None:
    """A registry size such as ``1.5B`` or ``135M`` as a parameter count (None: not such a size)."""
    m = _SIZE.match(str(size).strip())
    if not m:
        return None
    return float(m.group(1)) * {"M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]


def folder_params(folder: str | os.PathLike) -> int | None:
    """The parameter count of a local model folder, from its safetensors headers (None: no safetensors)."""
    total, found = 0, False
    for q in Path(os.path.expanduser(str(folder))).glob("*.safetensors"):
        try:
            with open(q, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for k, v in header.items():
            if k != "__metadata__" and isinstance(v, dict):
                count = 1
                for d in v.get("shape", []):
                    count *= int(d)
                total += count
                found = True
    return total if found else None
