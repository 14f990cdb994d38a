"""TriviaQA (mandarjoshi/trivia_qa, rc): trivia questions whose gold is a list of aliases, graded SQuAD-style (any
alias contained in the response); rows carry ``gold_seed``, the ``normalized_aliases`` the seed's metric compared
with. Evaluated on validation; the W2S stages use the first 20% of the W2S half; clustered by embeddings."""

from __future__ import annotations

from .base import DatasetSpec, Grade
from .shared import COT_QA, STUDENT_FINAL_QA, UNCERTAINTY_QA, _contains, normalize_text

VERSION = "1"


def normalize(split: str, i: int, raw: dict) -> dict:
    a = raw["answer"]
    aliases = list(dict.fromkeys([a["value"], *a.get("aliases", []), *a.get("normalized_aliases", [])]))
    return {"id": str(raw.get("question_id") or f"triviaqa-{split}-{i:05d}"), "question": raw["question"].strip(),
            "answer": a["value"], "gold": aliases, "gold_seed": list(a.get("normalized_aliases") or [])}


def grade_triviaqa(response: str, gold: list[str] | str) -> Grade:
    aliases = [gold] if isinstance(gold, str) else gold
    r = normalize_text(response)
    return Grade(any(_contains(r, a) for a in aliases), bool(r), response.strip() or None)


def seed_gold_triviaqa(row: dict):
    """triviaqa: the normalised aliases only (``gold_seed``)."""
    return row.get("gold_seed") or row["gold"]


SPEC = DatasetSpec(
    "triviaqa", normalize, lambda r, gold, q=None: grade_triviaqa(r, gold),
    UNCERTAINTY_QA, STUDENT_FINAL_QA,
    hub_path="mandarjoshi/trivia_qa", hub_config="rc", test_split="validation", small_w2s_part=True,
    cot_template=COT_QA, seed_gold=seed_gold_triviaqa, fields="answer: {value, aliases}", version=VERSION,
)
