"""Model registry: ``--model <family> --teacher <size>`` -> a Hugging Face hub id.

Any role (teacher, student, mid-level, summarizer) may instead name a hub id (``org/name``) or a local
folder (checked to hold a saved model); it is then used as is. ``model_tag`` turns either form into the short name used
in file paths (``qwen2.5_1.5B`` style names come from the size; hub ids from a slug of the id; local folders from their
name plus a short fingerprint of their content, so two folders of one name never share outputs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from . import models
from . import records
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
    return "/" in name or os.path.isdir(os.path.expanduser(name))


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``org/name``): starts with / . ~, or has more than one slash."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.startswith(os.sep)


def resolve_model(family: str, size: str) -> str:
    """Map ``family`` + ``size`` to a hub id; a hub id is returned as is, a local folder (``~`` expanded) once checked
    to hold a saved model (``check_model_folder``)."""
    if size is None:
        raise RegistryError(f"no model size given for family {family!r}")
    if looks_like_path(size) and not os.path.isdir(os.path.expanduser(size)):
        raise RegistryError(f"no model folder {size}: pass an existing folder (saved with save_pretrained), "
                            f"a hub id org/name, or a size of the family")
    if os.path.isdir(os.path.expanduser(size)):
        folder = os.path.expanduser(size)
        check_model_folder(folder)
        return folder
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


WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")


def check_model_folder(folder: str, what: str = "model") -> None:
    """A local folder given as a model must hold a saved model: a readable config.json and weight files; else one
    line saying what is wrong (an empty folder, a folder of other files, a broken config)."""
    p = Path(folder)
    cfg = p / "config.json"
    if not cfg.is_file():
        has = sorted(q.name for q in p.iterdir())[:5] if p.is_dir() else []
        raise RegistryError(f"{folder} holds no saved {what} (no config.json; "
                            f"{'it is empty' if not has else 'it has ' + ', '.join(has)}): pass a folder saved with "
                            f"save_pretrained, or a hub id")
    try:
        conf = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RegistryError(f"{cfg} is not a readable JSON config ({type(e).__name__}): pass a folder saved with "
                            f"save_pretrained") from None
    if not isinstance(conf, dict) or ("model_type" not in conf and "architectures" not in conf):
        raise RegistryError(f"{cfg} names no model_type: {folder} is not a saved transformers {what}")
    if not any(any(p.glob(g)) for g in WEIGHT_GLOBS):
        raise RegistryError(f"{folder} holds no weights (*.safetensors or *.bin): pass a folder saved with "
                            f"save_pretrained")


def check_loadable(name: str, what: str = "--model", sentence_transformers: bool = False) -> None:
    """Before any model loads: a local folder must hold a saved model; with the Hub offline (``HF_HUB_OFFLINE=1``), a
    hub id must be in the local Hugging Face cache. Else one line naming the flag and the fix."""
    if name is None:
        return
    local = os.path.expanduser(name)
    if looks_like_path(name) or os.path.isdir(local):
        if not os.path.isdir(local):
            raise RegistryError(f"{what} {name}: no such folder")
        if sentence_transformers and (Path(local) / "modules.json").is_file():
            return
        try:
            check_model_folder(local)
        except RegistryError as e:
            raise RegistryError(f"{what}: {e}") from None
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        return  # online: the Hub says whether it exists when the model is loaded
    candidates = [name] + ([f"sentence-transformers/{name}"] if sentence_transformers and "/" not in name else [])
    if not any(records._hub_commit(c) for c in candidates):
        raise RegistryError(f"{what} {name} is not in the local Hugging Face cache and the Hub is offline "
                            f"(HF_HUB_OFFLINE=1): download it first (huggingface-cli download {name}), or pass a "
                            f"local folder")


TAG_MAX = 48  # characters of a name kept in file names (a file name may have 255 bytes, and holds two tags)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip(".") or "model"


def model_tag(size: str) -> str:
    """The short name of a model in file names: the size itself; a hub id's slug; a local folder's name with a short
    fingerprint of its content (two folders of one name never share outputs; the same model copied elsewhere keeps
    its outputs). Long names are cut, with a digest of the whole name, so a file name always fits."""
    if not is_custom_id(size):
        return size
    name = size.rstrip("/")
    local = os.path.expanduser(name)
    if os.path.isdir(local):
            return f"{_slug(os.path.basename(os.path.abspath(local)))[:TAG_MAX]}-{(records.fingerprint(local) or '')[:8]}"
    slug = _slug(name)
    if len(slug) > TAG_MAX:
        slug = f"{slug[:TAG_MAX - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def resolve_summarizer(name: str | None = None) -> str:
    """The summarizer LLM: ``name`` when given, else ./Meta-Llama-3-70B-Instruct when present, else the hub id."""
    if name:
        return name
    if os.path.isdir(SUMMARIZER_LOCAL_DIR):
        return SUMMARIZER_LOCAL_DIR
    return SUMMARIZER_HUB_ID
