"""Datasets and the paper's splits.

Every loader returns a list of plain dicts with the same four keys, whatever the source:

- ``id``        a stable id carried through every stage's files (the dataset's own id where it has one,
                else ``<dataset>-<split>-<row index>``)
- ``question``  the text the model is asked
- ``answer``    the supervision target for ground-truth training (gsm8k: the full worked solution ending in
                ``#### N``; arc: ``C. option text``; hotpotqa: the answer; triviaqa: the answer's value)
- ``gold``      what the grader compares with (gsm8k: the number; arc: ``C. option text``; hotpotqa: the
                answer; triviaqa: the list of aliases)

triviaqa rows carry a fifth key, ``gold_seed``: the dataset's ``normalized_aliases``, the only ones the seed's
evaluation compared with (``evaluate.py --grading seed``).

Sources: the Hugging Face Hub by default, or a local folder with the layout of ``shared/offline/data``
(``<dir>/gsm8k/train.jsonl``, ``<dir>/arc_challenge/`` saved with ``save_to_disk``, ...), given by
``--data-dir`` or the ``ALICE_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "ALICE_DATA_DIR"
# Where the processed ARC-Challenge lives (the seed repository ships it in this folder).
ARC_PROCESSED_DIR = Path(__file__).resolve().parent.parent / "arc_challenge_processed"


class DataError(ValueError):
    """A dataset that cannot be loaded; the message says what to pass or install instead."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_path: str | None
    hub_config: str | None
    test_split: str  # the split the paper evaluates on
    small_w2s_part: bool  # hotpotqa/triviaqa: the W2S stages use only the first 20% of the W2S half


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("gsm8k", "openai/gsm8k", "main", "test", False),
    "arc_challenge": DatasetSpec("arc_challenge", None, None, "test", False),
    "hotpotqa": DatasetSpec("hotpotqa", "hotpotqa/hotpot_qa", "fullwiki", "validation", True),
    "triviaqa": DatasetSpec("triviaqa", "mandarjoshi/trivia_qa", "rc", "validation", True),
}
COT_DATASETS = ("hotpotqa", "triviaqa", "arc_challenge")  # gsm8k ships its own worked solutions
W2S_PART_FRACTION = 0.2


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


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
    if not any((p / n).exists() for n in DATASETS) and (p / "data").is_dir():
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
    from .jsonl import JsonlError, read_jsonl

    try:
        return read_jsonl(file)
    except JsonlError as e:  # a garbage line: one line naming the file and line
        raise DataError(str(e).replace("rerun the stage that makes it", "fix the data file")) from None


def _arc_processed(split: str) -> list[dict]:
    """ARC-Challenge in the paper's processed format: the shipped folder when present, else built in memory from
    allenai/ai2_arc (the Hub download is cached by ``datasets``; nothing is written into the repository)."""
    import datasets

    if (ARC_PROCESSED_DIR / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(ARC_PROCESSED_DIR))[split].to_list()
    try:
        raw = datasets.load_dataset("allenai/ai2_arc", "ARC-Challenge", split=split)
    except Exception as e:  # network, auth or missing-dataset errors from deep inside datasets
        raise DataError(f"could not load allenai/ai2_arc (ARC-Challenge) split {split!r} from the Hub: {type(e).__name__}: "
                        f"{e}. Offline? Pass --data-dir (or set ${DATA_DIR_ENV}).") from None
    return [process_arc_row(r) for r in raw]


def process_arc_row(row: dict) -> dict:
    """One allenai/ai2_arc row -> the processed format: stem + ``A. text`` lines; answer ``C. text``."""
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    # A few ARC questions label options 1-4; the processed format always uses letters.
    letters = [chr(ord("A") + i) for i in range(len(labels))]
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, texts))
    idx = labels.index(row["answerKey"])
    return {"question": f"{row['question']}\n{options}", "answer": f"{letters[idx]}. {texts[idx]}"}


def _records_from_hub(name: str, split: str) -> list[dict]:
    import datasets

    s = spec(name)
    if name == "arc_challenge":
        return _arc_processed(split)
    try:
        return datasets.load_dataset(s.hub_path, s.hub_config, split=split, token=os.environ.get("HF_TOKEN")).to_list()
    except Exception as e:  # network, auth or missing-dataset errors from deep inside datasets
        raise DataError(
            f"could not load {s.hub_path} ({s.hub_config}) split {split!r} from the Hub: {type(e).__name__}: {e}. "
            f"Offline? Pass --data-dir (or set ${DATA_DIR_ENV}) to a folder with the layout of shared/offline/data."
        ) from None


def _normalise(name: str, split: str, i: int, raw: dict) -> dict:
    from .grading import gsm8k_gold

    if name == "gsm8k":
        rid, answer, gold = f"gsm8k-{split}-{i:05d}", raw["answer"], gsm8k_gold(raw["answer"])
    elif name == "arc_challenge":
        rid, answer, gold = f"arc_challenge-{split}-{i:05d}", raw["answer"], raw["answer"]
    elif name == "hotpotqa":
        rid, answer, gold = str(raw.get("id") or f"hotpotqa-{split}-{i:05d}"), raw["answer"], raw["answer"]
    elif name == "triviaqa":
        a = raw["answer"]
        aliases = list(dict.fromkeys([a["value"], *a.get("aliases", []), *a.get("normalized_aliases", [])]))
        rid, answer, gold = str(raw.get("question_id") or f"triviaqa-{split}-{i:05d}"), a["value"], aliases
        return {"id": rid, "question": raw["question"].strip(), "answer": answer, "gold": gold,
                "gold_seed": list(a.get("normalized_aliases") or [])}
    else:  # pragma: no cover - spec() already rejected it
        raise DataError(name)
    return {"id": rid, "question": raw["question"].strip(), "answer": answer, "gold": gold}


def load_split(name: str, split: str, data_dir_: str | None = None) -> list[dict]:
    """Rows of one split of a dataset, as ``{id, question, answer, gold}`` dicts in the source's order."""
    spec(name)
    root = data_dir(data_dir_)
    raw = _records_from_local(name, split, root) if root else _records_from_hub(name, split)
    rows = []
    for i, r in enumerate(raw):
        try:
            rows.append(_normalise(name, split, i, r))
        except (KeyError, TypeError, AttributeError):
            where = f"{root / name} ({split})" if root else f"{name} ({split}) from the Hub"
            fields = "answer: {value, aliases}" if name == "triviaqa" else "answer"
            raise DataError(f"{where}, row {i + 1}: expected the fields question, {fields} "
                            f"(got {', '.join(map(str, r)) if isinstance(r, dict) else type(r).__name__}); fix the data file") from None
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):  # ids must be unique for stages to join on them
        rows = [dict(r, id=f"{name}-{split}-{i:05d}") for i, r in enumerate(rows)]
    return rows


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
