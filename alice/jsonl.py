"""JSONL files that are written atomically and let a stage resume.

- ``read_jsonl``: rows of a file; a malformed line is an error naming the file and line.
- ``write_jsonl``: write to a temporary file in the same folder, then rename (readers never see half a file).
- ``Progress``: a stage's work in progress. Rows are appended (and flushed) to ``<final>.partial`` as they
  are made; a rerun reads them back and skips their keys; ``finish`` writes the final file atomically and
  removes the partial one. A finished stage is one whose final file exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import AliceError


class JsonlError(AliceError, ValueError):
    pass


class MissingInputError(AliceError, FileNotFoundError):
    """A prior stage's file is missing; the message names the command that makes it."""


def require(path: str | os.PathLike, made_by: str) -> Path:
    """``path`` if it exists, else a ``MissingInputError`` that says which command makes it."""
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"missing {p}: run `{made_by}` first")
    return p


def require_trained(path: str | os.PathLike, made_by: str) -> Path:
    """A trained model's folder (``save_pretrained``: holds config.json), else the command that makes it."""
    p = require(path, made_by)
    if not (p / "config.json").exists():
        raise MissingInputError(f"{p} holds no saved model (no config.json): run `{made_by}` again")
    return p


def read_jsonl(path: str | os.PathLike, made_by: str | None = None, fields: tuple[str, ...] | None = None) -> list[dict]:
    """The rows of a JSONL file (each a JSON object); ``made_by``: the command that makes it, named when it is missing;
    ``fields``: keep only these keys of each row (a large file, e.g. every sample of the cluster stage, then does not
    stay in memory whole)."""
    p = Path(path)
    if made_by is not None:
        require(p, made_by)
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(
                    f"{p}, line {n}: not valid JSON ({e.msg}); delete the file (or that line) and rerun the stage that makes it"
                ) from None
            if not isinstance(row, dict):
                raise JsonlError(f"{p}, line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row if fields is None else {k: row[k] for k in fields if k in row})
    return rows


def umask() -> int:
    """This process's umask (read from /proc where it can be, which changes nothing; else set and put back)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _temp_beside(p: Path) -> tuple[int, str]:
    """A temporary file in ``p``'s folder with the mode a plain ``open`` would give (``mkstemp`` makes it 0600,
    which an atomic rename would keep: unreadable to a group sharing the results)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    p = Path(path)
    fd, tmp = _temp_beside(p)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_json(path: str | os.PathLike, obj) -> Path:
    p = Path(path)
    fd, tmp = _temp_beside(p)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def replace_run(path: str | os.PathLike, run: dict, key) -> Path:
    """A results file of several runs (``{"runs": [...]}``, the benchmarks'): ``run`` replaces the runs with the same
    ``key(run)`` (e.g. the same card), the others stay; written atomically (``write_json``)."""
    p = Path(path)
    try:
        runs = json.loads(p.read_text()).get("runs", [])
    except (OSError, ValueError, AttributeError):
        runs = []
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_json(p, {"runs": [r for r in runs if key(r) != key(run)] + [run]})


class Progress:
    """Resumable output of one stage, keyed by ``key(row)`` (default: the row's ``id``)."""

    def __init__(self, final_path: str | os.PathLike, key: Callable[[dict], object] = lambda r: r["id"]):
        self.final = Path(final_path)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.key = key
        self.rows: dict = {}
        if self.partial.exists():
            self._load_partial()

    @property
    def finished(self) -> bool:
        return self.final.exists()

    def _load_partial(self) -> None:
        with open(self.partial, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run
            self.rows[self.key(row)] = row

    def done(self, key) -> bool:
        return key in self.rows

    def add(self, rows: Iterable[dict]) -> None:
        rows = [r for r in rows if self.key(r) not in self.rows]
        if not rows:
            return
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "a", encoding="utf-8") as f:
            # a killed run may have left a half line without its newline: start on a fresh line
            if f.tell() > 0:
                with open(self.partial, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.rows[self.key(row)] = row
            f.flush()
            os.fsync(f.fileno())

    def finish(self, order: Iterable | None = None) -> list[dict]:
        """Write the final file (rows in ``order`` of keys when given) and drop the partial file."""
        rows = [self.rows[k] for k in order if k in self.rows] if order is not None else list(self.rows.values())
        write_jsonl(self.final, rows)
        if self.partial.exists():
            self.partial.unlink()
        return rows
