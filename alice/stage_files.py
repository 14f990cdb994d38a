"""Reading the Alice stage files back (``alice.alice_stages`` writes them; ``alice.ablations`` reads them too): each row
is checked for the fields its reader needs, and a damaged file is one line naming the command that remakes it."""

from __future__ import annotations

import json
from pathlib import Path

from .jsonl import JsonlError, read_jsonl, require


def by_id(rows: list[dict], path: Path) -> dict[str, dict]:
    out = {}
    for r in rows:
        if "id" not in r:
            raise JsonlError(f"{path}: a row has no 'id' (made by an older version?); delete the file and rerun its stage")
        out[r["id"]] = r
    return out


def checked_rows(path: Path, made_by: str, fields: tuple[str, ...]) -> list[dict]:
    """Rows of a stage's file, each checked to hold ``fields`` (else one line naming the command that remakes it)."""
    rows = read_jsonl(path, made_by=made_by)
    for n, r in enumerate(rows, 1):
        missing = [f for f in fields if f not in r]
        if missing:
            raise JsonlError(f"{path}, row {n}: no {', '.join(repr(f) for f in missing)} (not made by this stage?): "
                             f"run `{made_by} --overwrite`")
    return rows


def clustered_rows(path: Path, made_by: str) -> list[dict]:
    """The rows of a clustered file, each with a list of clusters."""
    rows = checked_rows(path, made_by, ("id", "question", "clusters", "final_response"))
    for n, r in enumerate(rows, 1):
        if not isinstance(r["clusters"], list) or not all(isinstance(c, dict) and "response" in c for c in r["clusters"]):
            raise JsonlError(f"{path}, row {n}: 'clusters' is not a list of clusters: run `{made_by} --overwrite`")
    return rows


def clustered_order(path: Path, made_by: str) -> list[str]:
    """Ids of the clustered file, in order, read line by line (the file holds every sample: it can be large)."""
    require(path, made_by)
    ids = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    ids.append(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise JsonlError(f"{path}, line {n}: not a clustered row; delete the file and rerun `{made_by}`") from None
    return ids


def require_text(rows: list[dict], path: Path, made_by: str, fields: tuple[str, ...]) -> None:
    """Each of ``fields`` of each row is text (a null answer is a damaged file, never an empty training row)."""
    for n, bad in ((n, [f for f in fields if not isinstance(r.get(f), str)]) for n, r in enumerate(rows, 1)):
        if bad:
            raise JsonlError(f"{path}, row {n}: {', '.join(map(repr, bad))} is not text: run `{made_by} --overwrite`")
