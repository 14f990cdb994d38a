"""HotpotQA (hotpotqa/hotpot_qa, fullwiki): multi-hop questions with short answers, graded SQuAD-style (the
normalised gold contained in the response); evaluated on validation; the W2S stages use the first 20% of the W2S
half. Alice clusters its answers by sentence embeddings."""

from __future__ import annotations

from .base import DatasetSpec, Grade
from .shared import COT_QA, STUDENT_FINAL_QA, UNCERTAINTY_QA, _contains, normalize_text

VERSION = "1"


def normalize(split: str, i: int, raw: dict) -> dict:
    return {"id": str(raw.get("id") or f"hotpotqa-{split}-{i:05d}"), "question": raw["question"].strip(),
            "answer": raw["answer"], "gold": raw["answer"]}


def grade_hotpotqa(response: str, gold: str) -> Grade:
    r = normalize_text(response)
    return Grade(_contains(r, gold), bool(r), response.strip() or None)


SPEC = DatasetSpec(
    "hotpotqa", normalize, lambda r, gold, q=None: grade_hotpotqa(r, gold),
    UNCERTAINTY_QA, STUDENT_FINAL_QA,
    hub_path="hotpotqa/hotpot_qa", hub_config="fullwiki", test_split="validation", small_w2s_part=True,
    cot_template=COT_QA, version=VERSION,
)
