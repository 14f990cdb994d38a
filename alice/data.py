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

Each dataset is ONE registered ``DatasetSpec`` (the end of this module): where it loads from, how a raw record
becomes a row, the evaluation split, its grader and the seed's metric, how Alice clusters its answers (a final-answer
extractor, or embedding clustering), its prompt templates, whether it ships its own chain-of-thought and the 'qa'
teacher's target. ``register_dataset`` adds one; every stage, grader, prompt and the CLI's ``--data`` choices read it.

Sources: the Hugging Face Hub by default, or a local folder with the layout of ``shared/offline/data``
(``<dir>/gsm8k/train.jsonl``, ``<dir>/arc_challenge/`` saved with ``save_to_disk``, ...), given by
``--data-dir`` or the ``ALICE_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import grading, prompts
from .errors import AliceError
from .jsonl import JsonlError, read_jsonl

DATA_DIR_ENV = "ALICE_DATA_DIR"
# Where the processed ARC-Challenge lives (the seed repository ships it in this folder).
ARC_PROCESSED_DIR = Path(__file__).resolve().parent.parent / "arc_challenge_processed"


class DataError(AliceError, ValueError):
    """A dataset that cannot be loaded; the message says what to pass or install instead."""


Grader = Callable[[str, Any, "str | None"], grading.Grade]  # (response, gold, question) -> Grade


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one dataset (see the module docstring)."""

    name: str
    normalize: Callable[[str, int, dict], dict]  # (split, index, raw record) -> {id, question, answer, gold[, ...]}
    grade: Grader
    uncertainty_template: str  # the summarizer's prompt (prompts.UNCERTAINTY_*)
    final_template: str  # the student's final-answer prompt (prompts.STUDENT_FINAL_*)
    hub_path: str | None = None
    hub_config: str | None = None
    hub_loader: Callable[[str], list[dict]] | None = None  # split -> raw records, instead of load_dataset(hub_path)
    test_split: str = "test"  # the split the paper evaluates on
    small_w2s_part: bool = False  # the W2S stages use only the first 20% of the W2S half (hotpotqa/triviaqa)
    answer_key: Callable[[str, "str | None"], "str | None"] | None = None  # (response, question) -> clustering key;
    # None: answers are clustered by sentence embeddings (cosine > threshold)
    cot_template: str | None = None  # the teacher's CoT prompt (step 1); None: the dataset ships its own CoT
    qa_target: Callable[[dict], str] = lambda row: row["answer"]  # the 'qa' teacher's target for a row
    seed_gold: Callable[[dict], Any] = grading.seed_gold_plain  # the reference the seed's metric compares with
    seed_grade: Callable[[str, Any, bool], grading.Grade] = grading.seed_grade_substring  # (response, gold, cot_trained)
    fields: str = "answer"  # the raw fields a row needs besides 'question' (for the error on a bad data file)
    final_marker: Callable[[str, "str | None"], "int | None"] | None = None  # (response, question) -> where the
    # final-answer format that ``final_template`` requires starts, read strictly (None: missing); None: the prompt
    # requires no checkable format (only the reasoning rule of ``grading.well_formed`` applies)
    final_example: str | None = None  # the example response ``final_template`` shows (a copy of it is no answer)

    @property
    def ships_cot(self) -> bool:
        """True when the dataset's answers are worked solutions already (gsm8k): no CoT generation step."""
        return self.cot_template is None

    @property
    def uses_embeddings(self) -> bool:
        """Alice clusters this dataset's answers by sentence embeddings (no final-answer extractor)."""
        return self.answer_key is None


DATASETS: dict[str, DatasetSpec] = {}
W2S_PART_FRACTION = 0.2


def register_dataset(s: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset: from then on ``--data <name>`` works in every stage script and the pipeline."""
    if s.name in DATASETS and not replace:
        raise DataError(f"dataset {s.name!r} is registered already (pass replace=True)")
    DATASETS[s.name] = s
    return s


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def cot_datasets() -> tuple[str, ...]:
    """The datasets that need step 1 (CoT generation): those that do not ship worked solutions."""
    return tuple(n for n, s in DATASETS.items() if not s.ships_cot)


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


def _normalise_gsm8k(split: str, i: int, raw: dict) -> dict:
    return {"id": f"gsm8k-{split}-{i:05d}", "question": raw["question"].strip(), "answer": raw["answer"],
            "gold": grading.gsm8k_gold(raw["answer"])}


def _normalise_arc(split: str, i: int, raw: dict) -> dict:
    return {"id": f"arc_challenge-{split}-{i:05d}", "question": raw["question"].strip(), "answer": raw["answer"],
            "gold": raw["answer"]}


def _normalise_hotpotqa(split: str, i: int, raw: dict) -> dict:
    return {"id": str(raw.get("id") or f"hotpotqa-{split}-{i:05d}"), "question": raw["question"].strip(),
            "answer": raw["answer"], "gold": raw["answer"]}


def _normalise_triviaqa(split: str, i: int, raw: dict) -> dict:
    a = raw["answer"]
    aliases = list(dict.fromkeys([a["value"], *a.get("aliases", []), *a.get("normalized_aliases", [])]))
    return {"id": str(raw.get("question_id") or f"triviaqa-{split}-{i:05d}"), "question": raw["question"].strip(),
            "answer": a["value"], "gold": aliases, "gold_seed": list(a.get("normalized_aliases") or [])}


def load_split(name: str, split: str, data_dir_: str | None = None) -> list[dict]:
    """Rows of one split of a dataset, as ``{id, question, answer, gold}`` dicts in the source's order."""
    s = spec(name)
    root = data_dir(data_dir_)
    raw = _records_from_local(name, split, root) if root else _records_from_hub(name, split)
    rows = []
    for i, r in enumerate(raw):
        try:
            rows.append(s.normalize(split, i, r))
        except (KeyError, TypeError, AttributeError):
            where = f"{root / name} ({split})" if root else f"{name} ({split}) from the Hub"
            raise DataError(f"{where}, row {i + 1}: expected the fields question, {s.fields} "
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


# ----------------------------------------------------------------------------------------------------
# The paper's four datasets: one block each. A fifth is one more ``register_dataset(DatasetSpec(...))``
# (tests/test_new_dataset.py registers a toy one and runs the pipeline's dry-run and the Alice stages on it).
# ----------------------------------------------------------------------------------------------------

def _gsm8k_qa_target(row: dict) -> str:
    """The 'qa' teacher's target: ``#### N`` (N as the solution writes it, as the seed's
    ``'#### ' + answer.split('####')[1].strip()``)."""
    return f"#### {row['answer'].split('####')[1].strip()}"


register_dataset(DatasetSpec(
    "gsm8k", _normalise_gsm8k, lambda r, gold, q=None: grading.grade_gsm8k(r, gold),
    prompts.UNCERTAINTY_GSM8K, prompts.STUDENT_FINAL_GSM8K,
    hub_path="openai/gsm8k", hub_config="main", test_split="test",
    answer_key=lambda r, q=None: grading.extract_gsm8k(r),
    cot_template=None,  # ships its own worked solutions
    qa_target=_gsm8k_qa_target, seed_gold=grading.seed_gold_gsm8k, seed_grade=grading.seed_grade_gsm8k,
    final_marker=grading.gsm8k_final_marker,  # '#### <answer>'
    final_example=prompts.FINAL_EXAMPLE_GSM8K,
))
register_dataset(DatasetSpec(
    "arc_challenge", _normalise_arc, grading.grade_arc, prompts.UNCERTAINTY_QA, prompts.STUDENT_FINAL_ARC,
    hub_loader=lambda split: _arc_processed(split), test_split="test",
    answer_key=lambda r, q=None: grading.extract_arc(r, grading.arc_options(q) if q else None),
    cot_template=prompts.COT_ARC, seed_gold=grading.seed_gold_arc, seed_grade=grading.seed_grade_arc,
    final_marker=grading.arc_final_marker,  # 'My choice is X.'
    final_example=prompts.FINAL_EXAMPLE_ARC,
))
register_dataset(DatasetSpec(
    "hotpotqa", _normalise_hotpotqa, lambda r, gold, q=None: grading.grade_hotpotqa(r, gold),
    prompts.UNCERTAINTY_QA, prompts.STUDENT_FINAL_QA,
    hub_path="hotpotqa/hotpot_qa", hub_config="fullwiki", test_split="validation", small_w2s_part=True,
    cot_template=prompts.COT_QA,
))
register_dataset(DatasetSpec(
    "triviaqa", _normalise_triviaqa, lambda r, gold, q=None: grading.grade_triviaqa(r, gold),
    prompts.UNCERTAINTY_QA, prompts.STUDENT_FINAL_QA,
    hub_path="mandarjoshi/trivia_qa", hub_config="rc", test_split="validation", small_w2s_part=True,
    cot_template=prompts.COT_QA, seed_gold=grading.seed_gold_triviaqa, fields="answer: {value, aliases}",
))
