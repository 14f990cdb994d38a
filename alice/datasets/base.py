"""What a dataset module declares: one ``DatasetSpec``; the ``Grade`` its grader returns; ``DataError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import AliceError

DATA_DIR_ENV = "ALICE_DATA_DIR"


class DataError(AliceError, ValueError):
    """A dataset that cannot be loaded; the message says what to pass or install instead."""


@dataclass(frozen=True)
class Grade:
    correct: bool
    parsed: bool
    extracted: str | None


def seed_gold_plain(row: dict):
    """hotpotqa (and any dataset without its own rule): the row's gold."""
    return row["gold"]


def seed_grade_substring(response: str, gold, cot_trained: bool = False) -> Grade:
    """hotpotqa/triviaqa: the lower-cased gold (any normalised alias) is a substring of the lower-cased response."""
    aliases = [gold] if isinstance(gold, str) else gold
    return Grade(any(a.lower() in response.lower() for a in aliases), True, None)


def seed_cot_substring(response: str, ground_truth: str) -> bool:
    """The seed's CoT filter (``cot/cot_generate_filter.py``) for hotpotqa/triviaqa: the lower-cased ground truth (the
    answer; triviaqa: its ``value``) is a substring of the lower-cased response."""
    return ground_truth.lower() in response.lower()


Grader = Callable[[str, Any, "str | None"], Grade]  # (response, gold, question) -> Grade


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one dataset (``alice.datasets``); each dataset module declares one, ``SPEC``."""

    name: str
    normalize: Callable[[str, int, dict], dict]  # (split, index, raw record) -> {id, question, answer, gold[, ...]}
    grade: Grader
    uncertainty_template: str  # the summarizer's prompt (shared.UNCERTAINTY_QA or the dataset's own)
    final_template: str  # the student's final-answer prompt (shared.STUDENT_FINAL_QA or the dataset's own)
    hub_path: str | None = None
    hub_config: str | None = None
    hub_loader: Callable[[str], list[dict]] | None = None  # split -> raw records, instead of load_dataset(hub_path)
    test_split: str = "test"  # the split the paper evaluates on
    small_w2s_part: bool = False  # the W2S stages use only the first 20% of the W2S half (hotpotqa/triviaqa)
    answer_key: Callable[[str, "str | None"], "str | None"] | None = None  # (response, question) -> clustering key;
    # None: answers are clustered by sentence embeddings (cosine > threshold)
    cot_template: str | None = None  # the teacher's CoT prompt (step 1); None: the dataset ships its own CoT
    qa_target: Callable[[dict], str] = lambda row: row["answer"]  # the 'qa' teacher's target for a row
    seed_gold: Callable[[dict], Any] = seed_gold_plain  # the reference the seed's metric compares with
    seed_grade: Callable[[str, Any, bool], Grade] = seed_grade_substring  # (response, gold, cot_trained)
    fields: str = "answer"  # the raw fields a row needs besides 'question' (for the error on a bad data file)
    final_marker: Callable[[str, "str | None"], "int | None"] | None = None  # (response, question) -> where the
    # final-answer format that ``final_template`` requires starts, read strictly (None: missing); None: the prompt
    # requires no checkable format (only the reasoning rule of ``grading.well_formed`` applies)
    final_example: str | None = None  # the example response ``final_template`` shows (a copy of it is no answer)
    seed_cot_keep: Callable[[str, str], bool] = seed_cot_substring  # (response, ground truth) -> the seed's CoT
    # filter keeps the row (``--seed-exact``)
    seed_answer_key: Callable[[str], "str | None"] | None = None  # response -> the seed's raw clustering key
    # (``--seed-exact``; None: the dataset is clustered by embeddings)
    version: str = "1"  # recorded in evaluation summaries: raise it when a change here changes what is graded

    @property
    def ships_cot(self) -> bool:
        """True when the dataset's answers are worked solutions already (gsm8k): no CoT generation step."""
        return self.cot_template is None

    @property
    def uses_embeddings(self) -> bool:
        """Alice clusters this dataset's answers by sentence embeddings (no final-answer extractor)."""
        return self.answer_key is None
