"""Model registry: ``--model <family> --teacher <size>`` -> a Hugging Face hub id.

Any role (teacher, student, mid-level, summarizer) may instead name a hub id (``org/name``) or a local
folder; it is then used as is. ``model_tag`` turns either form into the short name used in file paths
(``qwen2.5_1.5B`` style names come from the size; custom ids from a slug of the id).
"""

from __future__ import annotations

import os
import re

from . import models
from .errors import AliceError

# family -> size -> hub id (each family's spec: alice.models)
FAMILIES: dict[str, dict[str, str]] = {name: dict(f.hub_ids) for name, f in models.FAMILIES.items()}

# The paper's helper LLM that writes uncertainty statements. The seed README asks users to place it in
# ./Meta-Llama-3-70B-Instruct; that folder is preferred when present.
SUMMARIZER_HUB_ID = "meta-llama/Meta-Llama-3-70B-Instruct"
SUMMARIZER_LOCAL_DIR = "./Meta-Llama-3-70B-Instruct"


class RegistryError(AliceError, ValueError):
    """An unknown family or size; the message lists the valid choices."""


def is_custom_id(name: str) -> bool:
    """True when ``name`` is a hub id (``org/name``) or an existing local folder, not a registry size."""
    return "/" in name or os.path.isdir(name)


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``org/name``): starts with / . ~, or has more than one slash."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.startswith(os.sep)


def resolve_model(family: str, size: str) -> str:
    """Map ``family`` + ``size`` to a hub id; a hub id or local folder passed as ``size`` is returned as is."""
    if size is None:
        raise RegistryError(f"no model size given for family {family!r}")
    if looks_like_path(size) and not os.path.isdir(os.path.expanduser(size)):
        raise RegistryError(f"no model folder {size}: pass an existing folder (saved with save_pretrained), "
                            f"a hub id org/name, or a size of the family")
    if is_custom_id(size):
        return size
    if family not in FAMILIES:
        raise RegistryError(
            f"unknown model family {family!r}; choose from {', '.join(sorted(FAMILIES))} "
            "(or pass a hub id / local folder as the size)"
        )
    sizes = FAMILIES[family]
    if size not in sizes:
        raise RegistryError(
            f"unknown size {size!r} for family {family!r}; choose from {', '.join(sizes)} "
            "(or pass a hub id / local folder)"
        )
    return sizes[size]


def model_tag(size: str) -> str:
    """The short name of a model in file names: the size itself, or a filesystem-safe slug of a custom id."""
    if not is_custom_id(size):
        return size
    name = size.rstrip("/")
    if os.path.isdir(name):
        name = os.path.basename(os.path.abspath(name))
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


def resolve_summarizer(name: str | None = None) -> str:
    """The summarizer LLM: ``name`` when given, else ./Meta-Llama-3-70B-Instruct when present, else the hub id."""
    if name:
        return name
    if os.path.isdir(SUMMARIZER_LOCAL_DIR):
        return SUMMARIZER_LOCAL_DIR
    return SUMMARIZER_HUB_ID
