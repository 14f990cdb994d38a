"""The stages of the paper, one module each, every one a function with a typed config.

    cot          step 1: the teacher's chain-of-thought, kept when correct     (cot/cot_generate_filter.py)
    train        supervised fine-tuning of one model for one method          (training/SFT.py)
    label        original W2S: a trained teacher labels the W2S questions    (W2SG_pipeline/original/original_weak_to_strong.py)
    cluster      Alice 4a: N samples per question, clustered                 (W2SG_pipeline/ours/new_weak_to_strong_cluster.py)
    uncertainty  Alice 4b: the summarizer states the teacher's uncertainty   (..._uncertainty.py)
    zeroshot     Alice 4c: the student answers zero-shot                     (..._zeroshot.py)
    final        Alice 4d: the student's final answers -> the training file  (..._final.py)
    ablation     an ablation of Alice's proactive step -> its training file  (..._ablation.py; docs/ablations.md)
    evaluate     greedy answers on the test split, graded, summarized        (evaluation.py)
    report       the setting's table, PGR, CIs and chart                     (report.py)

Each module: ``SCRIPT``, ``build_parser()``, ``Config``, ``parse(argv) -> Config``, ``inputs(cfg)``, ``outputs(cfg)``,
``run(cfg)``, ``main(argv)`` (``alice.stages.common``). The paper-named script is its front door (it re-exports
the module); ``python -m alice.stages.<name> [--config FILE] [flags]`` is the same command, needing no checkout.
"""

from __future__ import annotations

import importlib

from .. import artifacts

NAMES = ("cot", "train", "label", "cluster", "uncertainty", "zeroshot", "final", "ablation", "evaluate", "report")
# the paper-named script of each stage (relative to the repository root)
SCRIPTS = {artifacts.COT: "cot", artifacts.SFT: "train", artifacts.ORIGINAL: "label",
           **{artifacts.OURS.format(s): s for s in (*artifacts.ALICE_STAGES, "ablation")},
           artifacts.EVAL: "evaluate", artifacts.REPORT: "report"}


def get(name: str):
    """The stage module ``alice.stages.<name>`` (imported on first use: running one stage imports only it)."""
    if name not in NAMES:
        raise KeyError(f"no stage {name!r} (stages: {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")


def of_script(script: str) -> str | None:
    """The stage a paper-named script is the front door of (None for any other file)."""
    return SCRIPTS.get(script)


def module_name(name: str) -> str:
    return f"{__name__}.{name}"
