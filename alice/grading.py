"""Grading by dataset name, and the well-formedness rule of Alice's final stage.

Each dataset's grader, answer extractor and the seed's metric live in its module (``alice.datasets.<name>``, named in
its ``DatasetSpec``); the functions here look them up by ``--data`` name. A grader takes a model response and the row's
``gold`` (see ``alice.datasets``) and returns a ``Grade``: whether the response is correct, whether an answer could be
read from it at all (``parsed``) and what was read (``extracted``). ``extract_final_answer`` gives the key that Alice
clusters gsm8k/arc samples by. The datasets' own functions are re-exported under their names (``grading.grade_gsm8k``).
"""

from __future__ import annotations

import re

from . import methods
from .datasets import spec as _spec
from .datasets.arc_challenge import (DIGITS, LETTERS, arc_final_marker, arc_gold_label, arc_options,  # noqa: F401
                                     extract_arc, grade_arc, seed_gold_arc, seed_grade_arc)
from .datasets.base import Grade, seed_gold_plain, seed_grade_substring  # noqa: F401
from .datasets.gsm8k import (extract_gsm8k, grade_gsm8k, gsm8k_final_marker, gsm8k_gold, seed_gold_gsm8k,  # noqa: F401
                             seed_grade_gsm8k)
from .datasets.hotpotqa import grade_hotpotqa  # noqa: F401
from .datasets.shared import _contains, extract_boxed, normalize_number, normalize_text  # noqa: F401
from .datasets.triviaqa import grade_triviaqa, seed_gold_triviaqa  # noqa: F401


def seed_arc_reads_choice(method: str | None, original_wts_type: str | None) -> bool:
    """The seed parsed ``My choice is`` (and dropped responses without it) only for models trained on
    CoT-style targets: ``--original-wts-type cot`` or ``--method ours-wts``; other runs split the whole response."""
    try:
        return methods.by_eval_flags(method, original_wts_type).seed_reads_choice
    except methods.MethodError:  # no type given (ours-wts): what every entry of the method does
        return bool(method) and any(m.seed_reads_choice for m in methods.METHODS.values() if m.eval and m.eval[0] == method)


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
    """Lower case, runs of spaces as one, GSM8K's calculator annotations (``<<3*5=15>>``) removed."""
    return " ".join(_CALCULATOR.sub("", text).lower().split())


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def copies_example(response: str, example: str) -> bool:
    """The response reproduces the example response of its prompt: the example's first line (its reasoning), compared
    case- and whitespace-insensitively and without calculator annotations (a copy that drops ``<<3*5=15>>``, seen
    in the CPU demo, is a copy), appears in it."""
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


def extract_final_answer(data: str, response: str, question: str | None = None, seed_exact: bool = False) -> str | None:
    """The key Alice clusters samples by (gsm8k: the number; arc: the letter); None when unreadable. ``seed_exact``:
    the seed's raw key instead (the text after the first ``#### `` / ``My choice is ``, stripped)."""
    spec = _spec(data)
    key = spec.answer_key
    if key is None:
        raise ValueError(f"{data} is clustered by embeddings, not by a final answer")
    return spec.seed_answer_key(response) if seed_exact else key(response, question)


def cot_keeps(data: str, response: str, ground_truth: str, gold, question: str | None = None,
              seed_exact: bool = False) -> bool:
    """Step 1's filter: the teacher's CoT row is kept when the project's grader reads it correct; ``seed_exact``: when
    the seed's lower-cased substring test keeps it (the dataset's ``seed_cot_keep``; ARC: the text after the first
    ``My choice is `` up to the next ``.``)."""
    if seed_exact:
        return _spec(data).seed_cot_keep(response, ground_truth)
    return grade(data, response, gold, question).correct
