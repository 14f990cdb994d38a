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
    if d == d.to_integral_value():
        return str(d.quantize(Decimal(1)))
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


def extract_gsm8k(response: str) -> str | None:
    """The final number: after the last ``####``, else in the last ``\\boxed{}``."""
    if "####" in response:
        tail = response.split("####")[-1]
        n = normalize_number(tail)
        if n is not None:
            return n
    boxed = extract_boxed(response)
    if boxed is not None:
        return normalize_number(boxed.replace("\\!", "").replace("{,}", ","))
    return None


def grade_gsm8k(response: str, gold: str) -> Grade:
    pred = extract_gsm8k(response)
    if pred is None:
        return Grade(False, False, None)
    return Grade(Decimal(pred) == Decimal(normalize_number(gold) or "nan"), True, pred)


# ----------------------------------------------------------------------------------------------------
# ARC-Challenge (processed: options as lines "A. text"; gold "C. text")
# ----------------------------------------------------------------------------------------------------
_CHOICE = re.compile(r"my (?:final )?choice is[\s:*]*[\[\(]?\s*(?:option\s+)?([A-E])\b", re.IGNORECASE)
_LEADING = re.compile(r"^\s*(?:answer\s*:\s*)?[\[\(]?([A-E])(?:[\]\)]|[.:](?=\s|$)|\s*$)", re.IGNORECASE)
_ANSWER_IS = re.compile(r"(?:answer|option) is[\s:*]*[\[\(]?([A-E])\b[\]\)]?", re.IGNORECASE)


def arc_options(question: str) -> dict[str, str]:
    """``{'A': 'dry palms', ...}`` from the option lines of a processed ARC question."""
    return dict(re.findall(r"^([A-E])\. (.*)$", question, flags=re.MULTILINE))


def extract_arc(response: str, options: dict[str, str] | None = None) -> str | None:
    """The chosen option letter: ``My choice is X`` (last one), else a leading ``X.``, else ``answer is X``,
    else the single option whose text the response quotes."""
    found = _CHOICE.findall(response)
    if found:
        return found[-1].upper()
    m = _LEADING.match(response)
    if m:
        return m.group(1).upper()
    found = _ANSWER_IS.findall(response)
    if found:
        return found[-1].upper()
    if options:
        low = normalize_text(response)
        hits = [k for k, v in options.items() if normalize_text(v) and normalize_text(v) in low]
        if len(hits) == 1:
            return hits[0]
    return None


def grade_arc(response: str, gold: str, question: str | None = None) -> Grade:
    gold_letter = gold.strip()[0].upper()
    options = arc_options(question) if question else None
    pred = extract_arc(response, options)
    if pred is None:
        return Grade(False, False, None)
    return Grade(pred == gold_letter, True, pred)


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
# Dispatch
# ----------------------------------------------------------------------------------------------------

def grade(data: str, response: str, gold, question: str | None = None) -> Grade:
    """Grade one response for dataset ``data``."""
    if data == "gsm8k":
        return grade_gsm8k(response, gold)
    if data == "arc_challenge":
        return grade_arc(response, gold, question)
    if data == "hotpotqa":
        return grade_hotpotqa(response, gold)
    if data == "triviaqa":
        return grade_triviaqa(response, gold)
    raise ValueError(f"no grader for dataset {data!r}")


def extract_final_answer(data: str, response: str, question: str | None = None) -> str | None:
    """The key Alice clusters samples by (gsm8k: the number; arc: the letter); None when unreadable."""
    if data == "gsm8k":
        return extract_gsm8k(response)
    if data == "arc_challenge":
        return extract_arc(response, arc_options(question) if question else None)
    raise ValueError(f"{data} is clustered by embeddings, not by a final answer")
