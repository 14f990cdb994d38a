"""The datasets: one module each (``gsm8k``, ``arc_challenge``, ``hotpotqa``, ``triviaqa``), and their registry.

A dataset module holds everything about its dataset: how a raw record becomes a row (``normalize``) and where it loads
from (the Hub, or a local folder: ``alice.data``), the evaluation split, answer extraction and the grader, the seed's
metric, its prompt templates, the 'qa' teacher's target, and a ``VERSION`` that evaluation summaries record. It ends
with one ``SPEC = DatasetSpec(...)``; registering it (``register_dataset``) makes ``--data <name>`` work in every stage
script, grader, prompt, the CLI's choices and the pipeline. ``tests/test_new_dataset.py`` registers a toy fifth one.

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

``shared`` holds what several datasets share (number and text normalisation, the QA prompt templates); ``base`` the
``DatasetSpec``, ``Grade`` and ``DataError``. The by-name helpers (``grading.grade(data, ...)``,
``prompts.cot_messages(data, ...)``) and the loaders and splits (``alice.data``) sit above this package.
"""

from __future__ import annotations

from . import arc_challenge, gsm8k, hotpotqa, triviaqa
from .base import DATA_DIR_ENV, DataError, DatasetSpec, Grade

__all__ = ["DATASETS", "DATA_DIR_ENV", "DataError", "DatasetSpec", "Grade", "cot_datasets", "register_dataset", "spec"]

DATASETS: dict[str, DatasetSpec] = {}


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


for _module in (gsm8k, arc_challenge, hotpotqa, triviaqa):  # the paper's four, in the paper's order
    register_dataset(_module.SPEC)
