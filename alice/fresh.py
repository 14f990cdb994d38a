"""Outputs record what made them; an output is believed only if it still checks against its record.

Every stage output (a file, or a trained model folder) gets a sidecar ``<output>.meta.json`` written right after it
(docs/reliability.md says what it covers):

- ``settings``: what its content depends on besides its inputs (models by identity, never by a folder's name);
- ``inputs``: each input by content (``alice.records``): a stage file or model folder by a content fingerprint (named
  relative to its root, so a moved or copied root stays valid), a hub model by id + the commit of its cached
  snapshot, a dataset split (``Data``) by the digest of its rows;
- ``output``: the output itself as it was written: a JSONL file's row count, ids and content digest, a model folder's
  file sizes and weights fingerprint, any other file's digest;
- ``argvs``: the command lines known to make it (the pipeline's skip test).

``check_fresh`` is the one check every stage runs before working:

- an input that does not match its own record (damaged, edited)   -> ``StaleOutputError`` naming it, in one line
- output absent                                                    -> False (do the work)
- present, same settings, same inputs, output checks               -> True (done; nothing to redo)
- otherwise (other settings or data, a changed input, a damaged output, no record)
  -> ``StaleOutputError`` in one line naming what differs and ``--overwrite``; with ``overwrite=True`` -> False.

``lock`` holds a per-output lock (``filelock``) while a stage makes it: a second identical run stops in one line.
The pipeline (``alice.pipeline``) skips a step whose outputs are ``believed`` and name its exact command line; any
other step runs with ``--overwrite``, so the stage itself decides (same settings and inputs: kept).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import data as data_mod
from . import records
from .errors import AliceError
from .jsonl import write_json
from .paths import Layout

SUFFIX = records.META_SUFFIX
FORMAT = 2  # records before content fingerprints (format 1) are not comparable: such outputs are redone


class StaleOutputError(AliceError, ValueError):
    """An output exists but was made with other settings or from other inputs; the message names ``--overwrite``."""


class BusyOutputError(AliceError, RuntimeError):
    """Another run is making the same output right now."""


@dataclass(frozen=True)
class Data:
    """A dataset split as an input of an output: recorded by the digest of its rows (``data.split_fingerprint``)."""

    name: str
    split: str
    data_dir: str | None = None


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


fingerprint = records.fingerprint  # content fingerprint of a file or model folder


# ---- inputs --------------------------------------------------------------------------------------------------
def _is_path(i) -> bool:
    s = str(i)
    return isinstance(i, os.PathLike) or os.path.exists(os.path.expanduser(s)) or s.startswith((".", os.sep, "~"))


def _entry(i, root: Path | None) -> dict:
    """One input as recorded: what it is (for messages), how to find it again, and its content fingerprint."""
    if isinstance(i, Data):
        d = data_mod.data_dir(i.data_dir)
        return {"what": f"the {i.name} {i.split} split", "data": [i.name, i.split, str(d.resolve()) if d else None],
                "fingerprint": data_mod.split_fingerprint(i.name, i.split, i.data_dir)}
    if not _is_path(i):  # a hub id
        return {"what": str(i), "model": str(i), "fingerprint": records.model_identity(str(i))}
    p = Path(os.path.realpath(os.path.expanduser(str(i))))
    where = str(p)
    if root is not None and (p == root or root in p.parents):
        where = "@root/" + p.relative_to(root).as_posix()
    return {"what": where.removeprefix("@root/"), "path": where, "fingerprint": records.fingerprint(p)}


def _entries(inputs: Iterable, output) -> list[dict]:
    root = Layout.root_of(output)
    return [_entry(i, root) for i in inputs if i is not None]


def _locate(entry: dict, output) -> Path | None:
    where = entry.get("path")
    if where is None:
        return None
    if where.startswith("@root/"):
        root = Layout.root_of(output)
        return root / where[len("@root/"):] if root is not None else None
    return Path(where)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")  # what a run packed on another machine leaves out (no weights)
_packed = False


@contextmanager
def weights_packed_out():
    """Read the finished outputs of a run packed on another machine without its model weights (``*.safetensors``,
    ``*.bin``, ``*.pt``: too large to bring back): a model folder whose other files all match its own record, with only
    weight files missing, stands for the model that record fingerprinted (``_packed_fingerprint``). Nothing else is
    relaxed: a model folder with a changed or extra file, or without a record, is read as it is."""
    global _packed
    was, _packed = _packed, True
    try:
        yield
    finally:
        _packed = was


def _packed_fingerprint(p: Path) -> str | None:
    """Inside ``weights_packed_out``: the recorded fingerprint of model folder ``p`` when only weight files are
    missing from it and the rest match its record's sizes; else None (read the folder as it is)."""
    meta = read_meta(p)
    recorded = (meta or {}).get("output") or {}
    if recorded.get("kind") != "model" or not p.is_dir():
        return None
    now = records.folder_files(p)
    old = recorded.get("files", {})
    missing = set(old) - set(now)
    if (not missing or any(not n.endswith(WEIGHT_SUFFIXES) for n in missing) or set(now) - set(old)
            or any(old[n] != now[n] for n in now)):
        return None
    return recorded.get("fingerprint")


def _current(entry: dict, output) -> str | None:
    """The fingerprint an input recorded in ``entry`` has now (None: gone or unreadable)."""
    try:
        if "data" in entry:
            name, split, d = entry["data"]
            return data_mod.split_fingerprint(name, split, d)
        if "model" in entry:
            return records.model_identity(entry["model"])
        p = _locate(entry, output)
        if p is not None and _packed:
            packed = _packed_fingerprint(p)
            if packed is not None:
                return packed
        return records.fingerprint(p) if p is not None else None
    except (AliceError, OSError, ValueError):
        return None


def check_inputs(inputs: Iterable) -> None:
    """Each input file or model folder that has a record must still check against it (a damaged stage file or
    half-written model is never read as if whole): else one line naming it and how to remake it."""
    for i in inputs:
        if i is None or isinstance(i, Data) or not _is_path(i):
            continue
        meta = read_meta(i)
        if meta and meta.get("format") == FORMAT:
            damage = records.output_damage(i, meta.get("output"))
            if damage:
                raise StaleOutputError(f"input {i} does not match its record: {damage}; rerun the command that "
                                       f"makes it with --overwrite (or the pipeline, which redoes it)")


# ---- command lines -------------------------------------------------------------------------------------------
PATH_FLAGS = ("--root", "--data-dir", "--output-dir", "--config-file", "--teacher", "--student", "--midlevel",
              "--summarizer-model", "--embedding-model")


FOLDER_FLAGS = ("--root", "--data-dir", "--output-dir", "--config-file")  # always paths (a model flag may be a hub id)


def _norm_value(flag: str, v: str) -> str:
    x = os.path.expanduser(v)
    if flag in FOLDER_FLAGS or x.startswith((".", os.sep)) or os.path.isdir(x):
        return os.path.realpath(x)
    return v


def command_line(argv: list[str] | None) -> list[str]:
    """The flags a script ran with (``argv`` given to main, else sys.argv), without --overwrite, with the paths of
    --root, --data-dir and model folders resolved (a root spelled relative or absolute is one command)."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv) if str(a) != "--overwrite"]
    out = []
    for k, a in enumerate(args):
        if k > 0 and args[k - 1] in PATH_FLAGS:
            a = _norm_value(args[k - 1], a)
        elif "=" in a and a.split("=", 1)[0] in PATH_FLAGS:
            flag, v = a.split("=", 1)
            a = f"{flag}={_norm_value(flag, v)}"
        out.append(a)
    return out


# ---- records ---------------------------------------------------------------------------------------------------
def read_meta(output) -> dict | None:
    try:
        meta = json.loads(meta_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _norm(v):
    return json.loads(json.dumps(v, default=str))


def differences(output, settings: dict, inputs: Iterable = ()) -> list[str]:
    """What differs between ``output``'s record and these settings/inputs, or between the output and its record
    (empty: the same)."""
    meta = read_meta(output)
    if meta is None:
        return ["no record of the settings that made it"]
    if meta.get("format") != FORMAT:
        return ["its record is of an older version (no content fingerprints of its inputs)"]
    old, new = meta.get("settings", {}), _norm(settings)
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    recorded, now = meta.get("inputs", []), _entries(inputs, output)
    if len(recorded) != len(now):
        diffs.append(f"other inputs ({', '.join(e['what'] for e in now)}; recorded: "
                     f"{', '.join(e['what'] for e in recorded)})")
    else:
        for was, cur in zip(recorded, now):
            if was.get("fingerprint") == cur["fingerprint"]:
                continue
            if "data" in cur:
                diffs.append(f"{cur['what']} holds other rows than it was made from (another --data-dir, or the "
                             f"data changed)")
            elif "model" in cur:
                diffs.append(f"model {cur['what']} is another revision ({was.get('fingerprint')} -> {cur['fingerprint']})")
            else:
                diffs.append(f"{cur['what']} changed since" if cur["fingerprint"] else f"{cur['what']} is gone")
    damage = records.output_damage(output, meta.get("output"))
    if damage:
        diffs.append(f"the output itself: {damage}")
    return diffs


def inputs_unchanged(meta: dict, output=None) -> bool:
    """Every input recorded in ``meta`` still has its fingerprint."""
    if meta.get("format") != FORMAT:
        return False
    return all(_current(e, output) == e.get("fingerprint") for e in meta.get("inputs", []))


def believed(output) -> bool:
    """``output`` exists, has a record of this format, checks against it, and its inputs are unchanged."""
    meta = read_meta(output)
    return (meta is not None and output_exists(output) and meta.get("format") == FORMAT
            and records.output_damage(output, meta.get("output")) is None and inputs_unchanged(meta, output))


def stale_reason(output) -> str | None:
    """Why ``output`` is not believed any more, for readers of finished outputs (the report): its record's inputs
    that changed since (a model retrained after its evaluation), or the output damaged; None when it checks or
    has no record (made elsewhere, or by an older version: nothing to compare)."""
    meta = read_meta(output)
    if meta is None or meta.get("format") != FORMAT:
        return None
    damage = records.output_damage(output, meta.get("output"))
    if damage:
        return f"{Path(output).name}: {damage}"
    for e in meta.get("inputs", []):
        now = _current(e, output)
        if now is not None and now != e.get("fingerprint"):
            return f"{e['what']} changed after it was made"
    return None


def check_fresh(output, settings: dict, inputs: Iterable = (), overwrite: bool = False,
                argv: list[str] | None = None, log=print) -> bool:
    """True: ``output`` exists, checks, and was made with these settings from these inputs (nothing to do).
    False: it must be (re)made. Raises ``StaleOutputError`` when it exists otherwise made and not ``overwrite``, or
    when an input does not match its own record."""
    inputs = list(inputs)
    check_inputs(inputs)
    if not output_exists(output):
        return False
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


def record(output, settings: dict, inputs: Iterable = (), argv: list[str] | None = None,
           checked: dict | None = None) -> None:
    """Write ``output``'s record (call right after the output itself is written). ``checked``: checks the maker ran
    on the output it wrote (e.g. ``{"weights_finite": True}``), which a reader may take instead of running them
    again while the output checks against this record (``checked_by_maker``)."""
    meta = {"format": FORMAT, "settings": _norm(settings), "inputs": _entries(inputs, output),
            "output": records.output_check(output), "argvs": [argv] if argv is not None else []}
    if checked:
        meta["checked"] = _norm(checked)
    _write(output, meta)


def checked_by_maker(output, check: str) -> bool:
    """The maker of ``output`` ran ``check`` on what it wrote (its record says so) and ``output`` is still what that
    record describes (``believed``: the weight files' size, header and ends, its inputs unchanged)."""
    meta = read_meta(output)
    return bool(meta and (meta.get("checked") or {}).get(check)) and believed(output)


def rerecord(output) -> None:
    """After a stage rewrote ``output`` on purpose (e.g. graded again): its record's check of the output is
    renewed, the rest kept."""
    meta = read_meta(output)
    if meta is not None:
        meta["output"] = records.output_check(output)
        _write(output, meta)


def forget(output) -> None:
    """Drop ``output``'s record (before the output is redone, so a killed redo never looks fresh)."""
    m = meta_path(output)
    if m.exists():
        m.unlink()


# ---- locks -----------------------------------------------------------------------------------------------------
def lock_path(output) -> Path:
    p = Path(output)
    return p.with_name(p.name + records.LOCK_SUFFIX)


@contextmanager
def lock(*outputs):
    """Hold a lock per output (``filelock``; a lock file beside each) while making them; another run holding one
    is a ``BusyOutputError`` in one line: two runs never write one output at once."""
    from filelock import FileLock, Timeout

    held = []
    try:
        for o in outputs:
            if o is None:
                continue
            lp = lock_path(o)
            lp.parent.mkdir(parents=True, exist_ok=True)
            fl = FileLock(str(lp), timeout=0)
            try:
                fl.acquire()
            except Timeout:
                raise BusyOutputError(f"another run is making {o} right now (lock {lp}): wait for it to finish, "
                                      f"then rerun this command (it then finds the output made)") from None
            held.append(fl)
        yield
    finally:
        for fl in reversed(held):
            fl.release()
