"""ARC-Challenge (allenai/ai2_arc, in the paper's processed format: the stem + ``A. text`` option lines; answer
``C. text``). The teacher writes chain-of-thought ending ``My choice is X.``; Alice clusters samples by the chosen
label. A few ARC questions label their options 1-4, and the seed's processed copy keeps those labels ("1. text", gold "2. text"): a question's
labels are read from its own option lines, so both kinds grade.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import DATA_DIR_ENV, DataError, DatasetSpec, Grade
from .shared import UNCERTAINTY_QA, extract_boxed, normalize_text

VERSION = "1"
# Where the processed ARC-Challenge lives (the seed repository ships it in this folder).
ARC_PROCESSED_DIR = Path(__file__).resolve().parents[2] / "arc_challenge_processed"


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


def normalize(split: str, i: int, raw: dict) -> dict:
    return {"id": f"arc_challenge-{split}-{i:05d}", "question": raw["question"].strip(), "answer": raw["answer"],
            "gold": raw["answer"]}


# ---- answer extraction and the grader ----------------------------------------------------------------
LETTERS, DIGITS = "ABCDE", "12345"


def arc_options(question: str) -> dict[str, str]:
    """``{'A': 'dry palms', ...}`` (or ``{'1': ...}``) from the option lines of a processed ARC question."""
    letters = dict(re.findall(r"^([A-E])\. (.*)$", question, flags=re.MULTILINE))
    if len(letters) >= 2:
        return letters
    digits = dict(re.findall(r"^([1-5])\. (.*)$", question, flags=re.MULTILINE))
    return digits if len(digits) >= 2 else letters


def _arc_patterns(labels: str):
    c = f"[{labels}]"
    return (
        re.compile(rf"my (?:final )?choice is[\s:*]*[\[\(]?\s*(?:option\s+)?({c})\b", re.IGNORECASE),
        re.compile(rf"^\s*(?:answer\s*:\s*)?[\[\(]?({c})(?:[\]\)]|[.:](?=\s|$)|\s*$)", re.IGNORECASE),
        re.compile(rf"(?:answer|option) is[\s:*]*[\[\(]?({c})\b[\]\)]?", re.IGNORECASE),
    )


_PATTERNS = {labels: _arc_patterns(labels) for labels in (LETTERS, DIGITS)}


def _arc_labels(options: dict[str, str] | None, labels: str | None) -> str:
    if labels is None:
        labels = DIGITS if options and all(k.isdigit() for k in options) else LETTERS
    return labels


def _arc_last_choice(response: str, labels: str):
    """The last ``My choice is X`` match (None when there is none)."""
    found = list(_PATTERNS[labels][0].finditer(response))
    return found[-1] if found else None


def arc_final_marker(response: str, question: str | None = None) -> int | None:
    """Where the required ``My choice is X`` starts: the index of the last one (the one ``extract_arc`` reads), with
    X one of the question's option labels (letters when no question is given); else None."""
    options = arc_options(question) if question else None
    m = _arc_last_choice(response, _arc_labels(options, None))
    if m is None or (options and m.group(1).upper() not in options):
        return None
    return m.start()


def _arc_boxed(response: str, labels: str) -> str | None:
    """The label of a ``\\boxed{C}`` answer (``\\boxed{C. text}``, ``\\boxed{\\text{C}}``, ``\\boxed{(C)}``): the way
    the untrained instruct models end (it reads 672 of the 1,172 test answers of Qwen2.5-Coder-1.5B-Instruct in issue
    14's H200 run), read as gsm8k reads ``\\boxed{N}``."""
    inner = extract_boxed(response)
    if inner is None:
        return None
    inner = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", inner).strip()
    m = re.match(rf"^[\[\(]?\s*([{labels}])\s*(?:[\]\)]|[.:]|$)", inner, flags=re.IGNORECASE)
    return m.group(1).upper() if m else None


def extract_arc(response: str, options: dict[str, str] | None = None, labels: str | None = None,
                strict: bool = False) -> str | None:
    """The chosen option label: ``My choice is X`` (last one), else a leading ``X.``, else ``\\boxed{X}``, else
    ``answer is X``, else the single option whose text the response quotes. Labels are letters, or digits when the question's
    options (or ``labels``) are numbered. ``strict``: only ``My choice is X`` (the format the prompts require)."""
    labels = _arc_labels(options, labels)
    _, leading, answer_is = _PATTERNS[labels]
    last = _arc_last_choice(response, labels)
    if last:
        return last.group(1).upper()
    if strict:
        return None
    m = leading.match(response)
    if m:
        return m.group(1).upper()
    boxed = _arc_boxed(response, labels)
    if boxed:
        return boxed
    found = answer_is.findall(response)
    if found:
        return found[-1].upper()
    if options:
        low = normalize_text(response)
        hits = [k for k, v in options.items() if normalize_text(v) and normalize_text(v) in low]
        if len(hits) == 1:
            return hits[0]
    return None


def arc_gold_label(gold: str) -> str:
    """``'C. text'`` -> ``'C'``; ``'2. text'`` -> ``'2'``."""
    return gold.strip().split(".")[0].strip().upper()


def grade_arc(response: str, gold: str, question: str | None = None) -> Grade:
    gold_label = arc_gold_label(gold)
    options = arc_options(question) if question else None
    pred = extract_arc(response, options, None if options else (DIGITS if gold_label.isdigit() else LETTERS))
    if pred is None:
        return Grade(False, False, None)
    return Grade(pred == gold_label, True, pred)


# ---- the seed's metric ---------------------------------------------------------------------------------
def seed_gold_arc(row: dict):
    """arc: the answer split on ``'. '`` (``['C', 'option text']``)."""
    return row["answer"].split(". ")


def seed_grade_arc(response: str, gold, cot_trained: bool = False) -> Grade:
    """The response (after ``My choice is`` when ``cot_trained``: see ``seed_arc_reads_choice``) split on ``.``;
    correct when for some i the i-th part of the gold (``['C', 'option text']``) is a substring of the i-th part."""
    if cot_trained:
        parts = response.split("My choice is")
        if len(parts) < 2:
            return Grade(False, False, None)
        pieces = [x for x in parts[1].strip().split(".") if x.strip()]
    else:
        pieces = response.split(".")
    correct = any(gold[i].lower().strip() in pieces[i].lower().strip() for i in range(min(len(pieces), len(gold))))
    return Grade(correct, True, pieces[0].strip() if pieces else None)


# ---- the seed's CoT filter and clustering key (--seed-exact) ---------------------------------------------
SEED_CHOICE = "My choice is "


def seed_cot_arc(response: str, ground_truth: str) -> bool:
    """The seed's CoT filter for ARC: the text after the first ``My choice is `` up to the next ``.``, lower-cased;
    kept when either part of the gold split on ``'. '`` (``['c', 'wet palms']``) is a substring of it; a response
    without ``My choice is `` is dropped. So ``My choice is A, because`` with gold ``C. ...`` is kept (the ``c`` of
    "because"), and ``B. wet palms`` without the phrase is dropped. (The seed then also tested the whole gold against
    that text; the gold holds a ``.`` and the text, cut at the first ``.``, none: it never matched.)"""
    if SEED_CHOICE not in response:
        return False
    choice = response.split(SEED_CHOICE)[1].split(".")[0].lower()
    return any(part.lower() in choice for part in ground_truth.lower().split(". "))


def seed_answer_key_arc(response: str) -> str | None:
    """The seed's clustering key for ARC: the raw text after the first ``My choice is ``, stripped (``A.`` and
    ``A. because ...`` are different answers); None without the phrase."""
    return response.split(SEED_CHOICE)[1].strip() if SEED_CHOICE in response else None


# ---- prompts ---------------------------------------------------------------------------------------------
COT_ARC = (
    "Please solve the problem by breaking down your thinking process step by step. IMPORTANT: After explaining "
    "your reasoning, conclude with a sentence stating 'My choice is [your choice].' For example, if you choose "
    "option A, end with 'My choice is A.' \nHere is the question:{question}"
)

# The example response each format-asking final prompt shows (the templates below end with it, as the seed's do).
# A small student sometimes writes the example instead of its answer (measured: 113 of 746 'new' gsm8k rows on an
# H200, results/archive/gsm8k_final_answer_format.before_final_check.json); the final stage's well-formedness check
# (grading.well_formed) rejects a response that reproduces it.
FINAL_EXAMPLE_ARC = ("The Moon's constant rotation (lunar phases) completes in the same amount of time it takes to orbit the "
                     "Earth.\nMy choice is A.")

# seed: W2SG_pipeline/ours/new_weak_to_strong_final.py: prompt_to_student_arc
STUDENT_FINAL_ARC = '''
    You will be provided with a question,  a response from yourself, and a response from another model and the uncertainty statement from that model as well.
    You should refer to another model's response and the uncertainty statement to update your original response, if necessary, based on your own knowledge.
    Here is the question: {}
    Here is your original answer: {}
    Here is another model's answer: {}
    Here is another model's uncertainty statement: {}

    Note: You should not mention your original response, the model's response or the uncertainty statement in your new response. If you think your original response is correct, just restate it and format it as requested later. If you think it should be revised, provide the revised response and format it as requested as well. DO NOT explain why you choose to keep the original response or give a revised one.
    Format Requirement: You should add a small part at the very end of your response to report your final choice in this format: 'My choice is [your choice].' For example, if your final choice is option A, end with 'My choice is A.'
    Here is an example of your response: ''' + f"'{FINAL_EXAMPLE_ARC}'."


SPEC = DatasetSpec(
    "arc_challenge", normalize, grade_arc, UNCERTAINTY_QA, STUDENT_FINAL_ARC,
    hub_loader=lambda split: _arc_processed(split), test_split="test",
    answer_key=lambda r, q=None: extract_arc(r, arc_options(q) if q else None),
    cot_template=COT_ARC, seed_gold=seed_gold_arc, seed_grade=seed_grade_arc,
    final_marker=arc_final_marker,  # 'My choice is X.'
    final_example=FINAL_EXAMPLE_ARC, seed_cot_keep=seed_cot_arc, seed_answer_key=seed_answer_key_arc, version=VERSION,
)
