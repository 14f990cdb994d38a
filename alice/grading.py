"""Answer extraction and one grader per dataset.

Each grader takes a model response and the row's ``gold`` (see ``alice.data``) and returns a ``Grade``:
whether the response is correct, whether an answer could be read from it at all (``parsed``) and what was
read (``extracted``). ``extract_final_answer`` gives the key that Alice clusters gsm8k/arc samples by.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True)
class Grade:
    correct: bool
    parsed: bool
    extracted: str | None


# ----------------------------------------------------------------------------------------------------
# GSM8K
# ----------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\$?\s*-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def normalize_number(text: str) -> str | None:
    """``'$1,234.50.'`` -> ``'1234.5'``; ``'72.0'`` -> ``'72'``; None when ``text`` holds no number."""
    m = _NUMBER.search(text)
    if not m:
        return None
    s = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    neg = s.count("-") % 2 == 1
    s = s.replace("-", "")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if neg:
        d = -d
    if d == d.to_integral_value():  # not quantize(): it raises for more digits than the context's 28 (seen in samples)
        return format(d.to_integral_value(), "f")
    return format(d.normalize(), "f")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, with nested braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


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


# ----------------------------------------------------------------------------------------------------
# ARC-Challenge (processed: options as lines "A. text"; gold "C. text"). A few ARC questions label their
# options 1-4, and the seed's processed copy keeps those labels ("1. text", gold "2. text"): a question's
# labels are read from its own option lines, so both kinds grade.
# ----------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------
# HotpotQA / TriviaQA: SQuAD-style normalisation, gold contained in the response
# ----------------------------------------------------------------------------------------------------
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—"}


def normalize_text(s: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace."""
    s = "".join(" " if ch in _PUNCT else ch for ch in s.lower())
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _contains(response_norm: str, gold: str) -> bool:
    g = normalize_text(gold)
    return bool(g) and re.search(rf"(?:^|\s){re.escape(g)}(?:\s|$)", response_norm) is not None


def grade_hotpotqa(response: str, gold: str) -> Grade:
    r = normalize_text(response)
    return Grade(_contains(r, gold), bool(r), response.strip() or None)


def grade_triviaqa(response: str, gold: list[str] | str) -> Grade:
    aliases = [gold] if isinstance(gold, str) else gold
    r = normalize_text(response)
    return Grade(any(_contains(r, a) for a in aliases), bool(r), response.strip() or None)


# ----------------------------------------------------------------------------------------------------
# The seed's metric (evaluation/evaluate.py of the paper's code), reproduced so numbers compare with the paper.
# ``parsed`` here means "counted in the seed's denominator": the seed divided by the number of responses it could
# parse for gsm8k (and for ARC when it looked for "My choice is"), by all responses otherwise.
# ----------------------------------------------------------------------------------------------------

def seed_gold_gsm8k(row: dict):
    """gsm8k: the raw text after ``####`` of the reference solution."""
    return row["answer"].split("####")[1].strip() if "####" in row["answer"] else str(row["gold"])


def seed_gold_arc(row: dict):
    """arc: the answer split on ``'. '`` (``['C', 'option text']``)."""
    return row["answer"].split(". ")


def seed_gold_triviaqa(row: dict):
    """triviaqa: the normalised aliases only (``gold_seed``)."""
    return row.get("gold_seed") or row["gold"]


def seed_gold_plain(row: dict):
    """hotpotqa (and any dataset without its own rule): the row's gold."""
    return row["gold"]


def seed_arc_reads_choice(method: str | None, original_wts_type: str | None) -> bool:
    """The seed parsed ``My choice is`` (and dropped responses without it) only for models trained on
    CoT-style targets: ``--original-wts-type cot`` or ``--method ours-wts``; other runs split the whole response."""
    return original_wts_type == "cot" or method == "ours-wts"


def seed_grade_gsm8k(response: str, gold, cot_trained: bool = False) -> Grade:
    """The text between the first and second ``####``, stripped, equal to the gold string."""
    parts = response.split("####")
    if len(parts) < 2:
        return Grade(False, False, None)
    pred = parts[1].strip()
    return Grade(pred == gold, True, pred)


def seed_grade_substring(response: str, gold, cot_trained: bool = False) -> Grade:
    """hotpotqa/triviaqa: the lower-cased gold (any normalised alias) is a substring of the lower-cased response."""
    aliases = [gold] if isinstance(gold, str) else gold
    return Grade(any(a.lower() in response.lower() for a in aliases), True, None)


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


# ----------------------------------------------------------------------------------------------------
# By dataset name: each dataset's grader, seed rule and answer extractor are named in its spec (``alice.data``)
# ----------------------------------------------------------------------------------------------------

def _spec(data: str):
    from .data import spec  # alice.data registers the graders above: imported here to keep the layering one-way

    return spec(data)


def grade(data: str, response: str, gold, question: str | None = None) -> Grade:
    """Grade one response for dataset ``data``."""
    return _spec(data).grade(response, gold, question)


def seed_gold(data: str, row: dict):
    """The reference the seed compared with, from a ``data`` row (the dataset's ``seed_gold`` rule)."""
    return _spec(data).seed_gold(row)


def seed_grade(data: str, response: str, gold, *, method: str | None = None,
               original_wts_type: str | None = None) -> Grade:
    """The seed's grading of one response (``gold`` from ``seed_gold``), its lenient matches included."""
    return _spec(data).seed_grade(response, gold, seed_arc_reads_choice(method, original_wts_type))


# A well-formed final answer (Alice's final stage keeps only these, ``alice_stages.run_final``): the format the final
# prompt requires (the dataset's ``final_marker``: gsm8k ``#### N``, arc ``My choice is X``; hotpotqa/triviaqa's prompt
# asks for a step-by-step solution and an answer but no checkable format) AND reasoning before it: at least
# MIN_REASONING_CHARS non-space characters before the marker (the whole response when there is no marker).
# 40 is the shortest worked solution among the 7,473 gsm8k train references (non-space characters before '####'), and
# about one short sentence ("Each sandwich needs 3 slices, so 3*5=15 slices."); a bare "#### 15", "\\boxed{15}" or
# "The answer is 15." falls short. Measured motivation (README, Alice stage;
# results/archive/gsm8k_final_answer_format.before_final_check.json):
# the untrained 1.5B student wrote 269 of 746 final answers as a bare "#### 15", 113 as a copy of the prompt's example.
MIN_REASONING_CHARS = 40


def reasoning_chars(text: str) -> int:
    """Non-space characters of ``text``."""
    return sum(not ch.isspace() for ch in text)


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def copies_example(response: str, example: str) -> bool:
    """The response reproduces the example response of its prompt: the example's first line (its reasoning), compared
    case- and whitespace-insensitively, appears in it."""
    first = _squash(example.splitlines()[0])
    return bool(first) and first in _squash(response)


def well_formed(data: str, response: str, question: str | None = None) -> bool:
    """The response ends its reasoning with the final-answer format dataset ``data``'s final prompt requires, read in
    the dataset's strict mode (``final_marker``), with at least ``MIN_REASONING_CHARS`` of reasoning before it, and
    is not a copy of the prompt's example response (``final_example``)."""
    spec = _spec(data)
    if spec.final_example and copies_example(response, spec.final_example):
        return False
    marker = spec.final_marker
    if marker is None:
        reasoning = response
    else:
        i = marker(response, question)
        if i is None:
            return False
        reasoning = response[:i]
    return reasoning_chars(reasoning) >= MIN_REASONING_CHARS


def extract_final_answer(data: str, response: str, question: str | None = None) -> str | None:
    """The key Alice clusters samples by (gsm8k: the number; arc: the letter); None when unreadable."""
    key = _spec(data).answer_key
    if key is None:
        raise ValueError(f"{data} is clustered by embeddings, not by a final answer")
    return key(response, question)
