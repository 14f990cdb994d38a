"""Where ``generate_resumable`` checkpoints its texts, and dropping that checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..jsonl import Progress


def cache_path(out_path) -> Path:
    """Where ``generate_resumable`` checkpoints the texts it made for ``out_path``."""
    p = Path(out_path)
    return p.with_name(p.name + ".gen")


def clear_resumable(out_path) -> None:
    """Drop the generation checkpoint of ``out_path`` (call once the stage's own output is written)."""
    prog = Progress(cache_path(out_path))
    for p in (prog.partial, prog.final):
        if p.exists():
            p.unlink()

