"""GSM8K (openai/gsm8k, main): grade-school math word problems whose answers are worked solutions ending in
``#### N``. It ships its own chain-of-thought (no CoT step); Alice clusters samples by their final number."""

from __future__ import annotations

import re
from decimal import Decimal

from .base import DataError, DatasetSpec, Grade
from .shared import UNCERTAINTY_INSTRUCTIONS, extract_boxed, normalize_number

VERSION = "1"


def normalize(split: str, i: int, raw: dict) -> dict:
    if "####" not in raw["answer"]:  # no gold number: a row that would be graded against nothing
        raise DataError("its answer has no final '#### <number>' line (gsm8k's gold answer)")
    return {"id": f"gsm8k-{split}-{i:05d}", "question": raw["question"].strip(), "answer": raw["answer"],
            "gold": gsm8k_gold(raw["answer"])}


def qa_target(row: dict) -> str:
    """The 'qa' teacher's target: ``#### N`` (N as the solution writes it, as the seed's
    ``'#### ' + answer.split('####')[1].strip()``)."""
    return f"#### {row['answer'].split('####')[1].strip()}"


# ---- answer extraction and the grader ----------------------------------------------------------------
def gsm8k_gold(answer: str) -> str:
    """The number after ``####`` in a GSM8K reference solution."""
    return normalize_number(answer.split("####")[-1]) or answer.split("####")[-1].strip()


def extract_gsm8k(response: str, strict: bool = False) -> str | None:
    """The final number: the first number after the FIRST ``####`` (up to the next ``####``), as the seed's
    evaluation (``split('####')[1]``) and lm-evaluation-harness read it, so text a model writes after its answer
    is never graded; without ``####``, the number in the last ``\\boxed{}``.

    ``strict``: only the format the final-answer prompt requires, ``#### <answer>`` with the number right after the
    ``####`` (on its line); no ``\\boxed{}`` fallback and no number found further on."""
    if strict:
        m = gsm8k_final_marker(response)
        return None if m is None else normalize_number(response[m:].split("####")[1])
    if "####" in response:
        return normalize_number(response.split("####")[1])
    boxed = extract_boxed(response)
    if boxed is not None:
        return normalize_number(boxed.replace("\\!", "").replace("{,}", ","))
    return None


_STRICT_GSM8K = re.compile(r"[ \t]*(?:\$[ \t]*)?-?(?:\$[ \t]*)?(?:\d|\.\d)")


def gsm8k_final_marker(response: str, question: str | None = None) -> int | None:
    """Where the required ``#### <answer>`` starts: the index of the first ``####`` (the one every grader reads) when a
    number follows it directly and it is the LAST answer marker (no second ``####`` and no ``\\boxed{}`` after it);
    else None."""
    i = response.find("####")
    if i < 0:
        return None
    rest = response[i + 4:]
    if "####" in rest or "\\boxed{" in rest or not _STRICT_GSM8K.match(rest):
        return None
    return i


def grade_gsm8k(response: str, gold: str) -> Grade:
    pred = extract_gsm8k(response)
    if pred is None:
        return Grade(False, False, None)
    return Grade(Decimal(pred) == Decimal(normalize_number(gold) or "nan"), True, pred)


# ---- the seed's metric (evaluation/evaluate.py of the paper's code) --------------------------------------
def seed_gold_gsm8k(row: dict):
    """gsm8k: the raw text after ``####`` of the reference solution."""
    return row["answer"].split("####")[1].strip() if "####" in row["answer"] else str(row["gold"])


def seed_grade_gsm8k(response: str, gold, cot_trained: bool = False) -> Grade:
    """The text between the first and second ``####``, stripped, equal to the gold string."""
    parts = response.split("####")
    if len(parts) < 2:
        return Grade(False, False, None)
    pred = parts[1].strip()
    return Grade(pred == gold, True, pred)


def seed_answer_key_gsm8k(response: str) -> str | None:
    """The seed's clustering key for gsm8k: the raw text after the first ``#### `` (with its space) to the end,
    stripped (``44`` and ``44.0`` differ; ``\\boxed{44}`` or ``####44`` has none)."""
    return response.split("#### ")[1].strip() if "#### " in response else None


# ---- prompts ---------------------------------------------------------------------------------------------
# seed: W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py: template_to_generate_uncertainty2
UNCERTAINTY_GSM8K = UNCERTAINTY_INSTRUCTIONS + '''    Question: A pen and pencil have a total cost of $6. If the pen costs twice as much as the pencil, what is the cost of the pen?
    
    Responses:
    1. Let x be the cost of the pencil.\nThe total cost of the pen and pencil is x + x = 6.\n2x = 6.\nThe cost of the pen is 6/2 = $<<6/2=3>>3.\n#### 3
    2. Let p be the cost of the pen and c be the cost of the pencil.\nWe know that p + c = 6\nWe also know that p = 2 * c\nSubstituting the second equation into the first equation, we get 2 * c + c = 6\nCombining like terms, we get 3 * c = 6\nDividing both sides by 3, we get c = <<3=2>>2\nSubstituting this value back into p + c = 6, we get p + 2 = 6\nSubtracting 2 from both sides, we get p = <<2=4>>4\n#### 4
    3. 
    
    The output can be: I am uncertain about how to formulate the cost of pen and pencil. There is a probability that the cost of pen and pencil are the same. But there is also a probability that the cost of the pen is twice as much as the pencil.

    Now consier the following case:
    Question: {}

    Responses: 
    {}
    '''

# The example response each format-asking final prompt shows (the templates below end with it, as the seed's do).
# A small student sometimes writes the example instead of its answer (measured: 113 of 746 'new' gsm8k rows on an
# H200, results/archive/gsm8k_final_answer_format.before_final_check.json); the final stage's well-formedness check
# (grading.well_formed) rejects a response that reproduces it.
FINAL_EXAMPLE_GSM8K = "Each sandwich needs 3 slices of bread for a total of 3*5=<<3*5=15>>15 slices of bread\n#### 15"

# seed: W2SG_pipeline/ours/new_weak_to_strong_final.py: prompt_to_student_gsm8k
STUDENT_FINAL_GSM8K = '''
    You will be provided with a question,  a response from yourself, and a response from another model and the uncertainty statement from that model as well.
    You should refer to another model's response and the uncertainty statement to update your original response, if necessary, based on your own knowledge.
    Here is the question: {}
    Here is your original answer: {}
    Here is another model's answer: {}
    Here is another model's uncertainty statement: {}

    Note: You should not mention your original response, the model's response or the uncertainty statement in your new response. If you think your original response is correct, just restate it and format it as requested later. If you think it should be revised, provide the revised response and format it as requested as well. DO NOT explain why you choose to keep the original response or give a revised one.
    Format Requirement: You should add a small part at the very end of your response to report the final answer in number only in this format: '#### <answer>'.
    Here is an example of your response: ''' + f"'{FINAL_EXAMPLE_GSM8K}'."


SPEC = DatasetSpec(
    "gsm8k", normalize, lambda r, gold, q=None: grade_gsm8k(r, gold),
    UNCERTAINTY_GSM8K, STUDENT_FINAL_GSM8K,
    hub_path="openai/gsm8k", hub_config="main", test_split="test",
    answer_key=lambda r, q=None: extract_gsm8k(r),
    cot_template=None,  # ships its own worked solutions
    qa_target=qa_target, seed_gold=seed_gold_gsm8k, seed_grade=seed_grade_gsm8k,
    final_marker=gsm8k_final_marker,  # '#### <answer>'
    final_example=FINAL_EXAMPLE_GSM8K, seed_answer_key=seed_answer_key_gsm8k, version=VERSION,
)
