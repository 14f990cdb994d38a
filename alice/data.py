"""Loading the datasets (the Hub, or a local folder) and the paper's splits; the datasets themselves (rows, graders,
prompts) are one module each in ``alice.datasets``, whose registry names are re-exported here.

Sources: the Hugging Face Hub by default, or a local folder with the layout of ``shared/offline/data``
(``<dir>/gsm8k/train.jsonl``, ``<dir>/arc_challenge/`` saved with ``save_to_disk``, ...), given by
``--data-dir`` or the ``ALICE_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import datasets as registry
from .datasets import DATA_DIR_ENV, DataError, DatasetSpec, cot_datasets, register_dataset, spec  # noqa: F401
from .jsonl import JsonlError, read_jsonl
from .records import rows_digest

W2S_PART_FRACTION = 0.2


# ----------------------------------------------------------------------------------------------------
# The paper's splits, as named functions of the train split (a list of rows)
# ----------------------------------------------------------------------------------------------------

def teacher_half(rows: list) -> list:
    """First half of train: CoT generation and the teacher's stage-1 training."""
    return rows[: len(rows) // 2]


def w2s_half(rows: list) -> list:
    """Second half of train: weak-to-strong labelling and the ground-truth baselines."""
    return rows[len(rows) // 2 :]


def w2s_part(name: str, rows: list) -> list:
    """The W2S questions of a dataset: hotpotqa/triviaqa use the first 20% of the W2S half, others all of it."""
    half = w2s_half(rows)
    if spec(name).small_w2s_part:
        return half[: int(W2S_PART_FRACTION * len(half))]
    return half


def cascade_first(name: str, rows: list) -> list:
    """Cascade, hop 1 (teacher -> mid-level): first half of the W2S part."""
    part = w2s_part(name, rows)
    return part[: len(part) // 2]


def cascade_second(name: str, rows: list) -> list:
    """Cascade, hop 2 (mid-level -> student): second half of the W2S part."""
    part = w2s_part(name, rows)
    return part[len(part) // 2 :]


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

def data_dir(explicit: str | None = None) -> Path | None:
    """The local data folder: ``explicit``, else $ALICE_DATA_DIR, else None (use the Hub).

    A folder that holds a ``data/`` subfolder with the datasets (like ``shared/offline``) is accepted too.
    """
    d = explicit or os.environ.get(DATA_DIR_ENV)
    if not d:
        return None
    p = Path(d).expanduser()
    if not p.is_dir():
        raise DataError(f"data folder {p} does not exist (set by --data-dir or ${DATA_DIR_ENV})")
    if not any((p / n).exists() for n in registry.DATASETS) and (p / "data").is_dir():
        p = p / "data"
    return p


def _records_from_local(name: str, split: str, root: Path) -> list[dict]:
    folder = root / name
    if (folder / "dataset_dict.json").exists():
        import datasets

        dd = datasets.load_from_disk(str(folder))
        if split not in dd:
            raise DataError(f"{folder} has no split {split!r} (has {', '.join(dd)})")
        return dd[split].to_list()
    file = folder / f"{split}.jsonl"
    if not file.exists():
        raise DataError(f"no {file} in the local data folder {root}: it must have the layout of shared/offline/data")
    try:
        return read_jsonl(file)
    except JsonlError as e:  # a garbage line: one line naming the file and line
        raise DataError(str(e).replace("rerun the stage that makes it", "fix the data file")) from None


def _records_from_hub(name: str, split: str) -> list[dict]:
    import datasets

    s = spec(name)
    if s.hub_loader is not None:
        return s.hub_loader(split)
    if s.hub_path is None:
        raise DataError(f"{name} has no Hub source: pass --data-dir (or set ${DATA_DIR_ENV}) to a folder holding {name}/")
    try:
        return datasets.load_dataset(s.hub_path, s.hub_config, split=split, token=os.environ.get("HF_TOKEN")).to_list()
    except Exception as e:  # network, auth or missing-dataset errors from deep inside datasets
        raise DataError(
            f"could not load {s.hub_path} ({s.hub_config}) split {split!r} from the Hub: {type(e).__name__}: {e}. "
            f"Offline? Pass --data-dir (or set ${DATA_DIR_ENV}) to a folder with the layout of shared/offline/data."
        ) from None


def load_split(name: str, split: str, data_dir_: str | None = None) -> list[dict]:
    """Rows of one split of a dataset, as ``{id, question, answer, gold}`` dicts in the source's order."""
    s = spec(name)
    root = data_dir(data_dir_)
    raw = _records_from_local(name, split, root) if root else _records_from_hub(name, split)
    rows = []
    for i, r in enumerate(raw):
        try:
            rows.append(s.normalize(split, i, r))
        except DataError as e:
            where = f"{root / name} ({split})" if root else f"{name} ({split}) from the Hub"
            raise DataError(f"{where}, row {i + 1}: {e}; fix the data file") from None
        except (KeyError, TypeError, AttributeError):
            where = f"{root / name} ({split})" if root else f"{name} ({split}) from the Hub"
            raise DataError(f"{where}, row {i + 1}: expected the fields question, {s.fields} "
                            f"(got {', '.join(map(str, r)) if isinstance(r, dict) else type(r).__name__}); fix the data file") from None
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):  # ids must be unique for stages to join on them
        rows = [dict(r, id=f"{name}-{split}-{i:05d}") for i, r in enumerate(rows)]
    return rows


_FINGERPRINTS: dict[tuple, str] = {}


def _source_stamp(name: str, root: Path | None) -> tuple:
    """(name, size, mtime) of the files a local split is read from (empty for the Hub): a cache key."""
    if root is None:
        return ()
    folder = root / name
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    return tuple(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def split_fingerprint(name: str, split: str, data_dir_: str | None = None) -> str:
    """A fingerprint of a split's content: the digest of its rows as ``load_split`` returns them (questions, answers,
    gold, ids), whatever folder or Hub copy they come from. Records name the data an output was made from by it."""
    root = data_dir(data_dir_)
    key = (name, split, str(root.resolve()) if root else None, _source_stamp(name, root))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = rows_digest(load_split(name, split, data_dir_))
    return _FINGERPRINTS[key]


def load_train(name: str, data_dir_: str | None = None) -> list[dict]:
    return load_split(name, "train", data_dir_)


def load_test(name: str, data_dir_: str | None = None) -> list[dict]:
    """The paper's evaluation split: gsm8k test, arc test, hotpotqa/triviaqa validation."""
    return load_split(name, spec(name).test_split, data_dir_)


# Named row sets for the stages (``subset`` names used by scripts, files and tests)
SUBSETS = {
    "teacher_half": lambda name, rows: teacher_half(rows),
    "w2s_half": lambda name, rows: w2s_half(rows),
    "w2s_part": w2s_part,
    "cascade_first": cascade_first,
    "cascade_second": cascade_second,
}


def load_subset(name: str, subset: str, data_dir_: str | None = None) -> list[dict]:
    """One of the paper's row sets of the train split (see ``SUBSETS``)."""
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; choose from {', '.join(SUBSETS)}")
    return SUBSETS[subset](name, load_train(name, data_dir_))
