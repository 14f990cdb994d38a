"""Evaluation: which model a method names, greedy answers on the test split, grading, summary with a 95% CI.

``evaluation.py`` (repository root) is the front door; ``alice.report`` reads the summaries this writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from . import artifacts, datasets, fresh, grading, methods, prompts
from .generation import Generator, Sampling, clear_resumable, generate_resumable
from .jsonl import read_jsonl, require_trained, write_json, write_jsonl
from .options import SAMPLING
from .paths import Layout, eval_run_name

GREEDY = SAMPLING["eval"]
# evaluation.py's choices: the paper's spellings of the method registry's evaluated entries (alice.methods)
METHODS = methods.eval_methods()
ORIGINAL_WTS_TYPES = methods.eval_types("--original-wts-type")
OURS_WTS_TYPES = methods.eval_types("--ours-wts-type")


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for z=1.96); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvalTarget:
    """The model one evaluation run scores, and the file names of the run."""

    run: str  # eval_run_name
    model_path: str  # hub id or local folder
    made_by: str | None  # the command that trains it (None: a hub model)


def target(layout: Layout, method: str, model: str, data: str, student: str, student_id: str | None = None,
           teacher: str | None = None, original_wts_type: str | None = None,
           ours_wts_type: str | None = None, data_dir: str | None = None) -> EvalTarget:
    """Resolve ``--method`` (and its type) to the model to evaluate (``artifacts.evaluated_model``).

    naive: the untrained ``student`` from the registry (``student_id``); base: the student trained on ground truth;
    original-wts / ours-wts: the student trained on a teacher's labels. For the cascade types ``teacher`` is the
    mid-level model (the last hop's teacher), as in the seed: ``--teacher 3B --student 7B`` for 1.5B -> 3B -> 7B.
    """
    if method not in methods.eval_methods():
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(methods.eval_methods())}")
    run = eval_run_name(model, student, method, teacher, original_wts_type, ours_wts_type)
    trained = artifacts.evaluated_model(layout, model, data, student, method, teacher, original_wts_type, ours_wts_type)
    if trained is None:
        return EvalTarget(run, student_id or student, None)
    return EvalTarget(run, str(trained.path), trained.command(layout.root, data_dir))


def model_inputs(t: EvalTarget) -> list:
    """The evaluated model: a trained folder (its retraining makes the summary stale), or the untrained hub model /
    folder (recorded by its revision or content)."""
    return [Path(t.model_path)] if t.made_by is not None else [t.model_path]


def require_model(t: EvalTarget) -> None:
    if t.made_by is not None:
        require_trained(t.model_path, t.made_by)


GRADINGS = ("project", "seed")


def grade_prediction(data: str, response: str, row: dict, method: str | None = None,
                     original_wts_type: str | None = None) -> dict:
    """One response graded both ways: the project's grader (``correct``, ``parsed``, ``extracted``) and the seed's
    metric (``seed_correct``; ``seed_counted``: in the seed's denominator)."""
    g = grading.grade(data, response, row["gold"], row["question"])
    sg = grading.seed_grade(data, response, grading.seed_gold(data, row), method=method,
                            original_wts_type=original_wts_type)
    return {"extracted": g.extracted, "parsed": g.parsed, "correct": g.correct,
            "seed_correct": sg.correct, "seed_counted": sg.parsed}


def evaluate(generator: Generator, rows: list[dict], data: str, pred_path, summary_path, *,
             max_new_tokens: int, meta: dict | None = None) -> dict:
    """Greedy answers for ``rows`` (``data.load_test`` rows), graded; writes predictions + summary, returns the summary.

    ``meta`` (``method``, ``original_wts_type``) also picks the seed's ARC parsing for the seed's metric."""
    t0 = time.perf_counter()
    meta = meta or {}
    sampling = Sampling(temperature=GREEDY.temperature, top_p=GREEDY.top_p, max_new_tokens=max_new_tokens)
    items = [{"id": r["id"], "messages": prompts.eval_messages(data, r["question"])} for r in rows]
    texts = generate_resumable(generator, items, sampling, pred_path, desc=f"eval {data}")
    preds = []
    for r in rows:
        response = texts[r["id"]][0]
        preds.append({"id": r["id"], "question": r["question"], "response": response, "gold": r["gold"],
                      **grade_prediction(data, response, r, meta.get("method"), meta.get("original_wts_type"))})
    write_jsonl(pred_path, preds)
    summary = summarize(preds)
    summary.update(meta)
    summary["dataset_version"] = datasets.spec(data).version  # what graded it (alice.datasets.<name>)
    summary["settings"] = dict(summary.get("settings", {}), max_new_tokens=max_new_tokens, temperature=GREEDY.temperature,
                               backend=generator.backend)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["predictions"] = str(pred_path)
    write_json(summary_path, summary)
    clear_resumable(pred_path)
    return summary


def regrade(data: str, summary: dict, rows: list[dict], summary_path, pred_path=None) -> dict:
    """Grade a finished run's stored responses again with the current graders (both metrics), without a model.

    Rewrites the predictions and the summary when a grade changed (or the seed's metric was missing), renewing their
    records' check of them; returns the summary. ``rows`` are the test rows (by id: their gold and the seed's gold);
    ``pred_path``: the predictions (default: the path the summary names)."""
    pred_path = Path(pred_path or summary["predictions"])
    if not pred_path.exists():
        return summary
    by_id = {r["id"]: r for r in rows}
    preds = read_jsonl(pred_path)
    new = [dict(p, **grade_prediction(data, p["response"], by_id.get(p["id"]) or dict(p, answer=str(p["gold"])),
                                       summary.get("method"), summary.get("original_wts_type"))) for p in preds]
    regraded = dict(summary, **summarize(new), dataset_version=datasets.spec(data).version)
    if new != preds or regraded != summary:
        write_jsonl(pred_path, new)
        write_json(summary_path, regraded)
        fresh.rerecord(pred_path)
        fresh.rerecord(summary_path)
    return regraded


def summarize(preds: list[dict]) -> dict:
    """Accuracy over every question (the project's grading) and, under ``seed``, the seed's metric: its
    correct count over its denominator (gsm8k, and ARC for CoT-trained runs: the parsed responses only)."""
    n = len(preds)
    k = sum(bool(p["correct"]) for p in preds)
    lo, hi = wilson(k, n)
    out = {"accuracy": k / n if n else 0.0, "n": n, "correct": k, "parsed": sum(bool(p["parsed"]) for p in preds),
           "ci95": [lo, hi], "ci_method": "wilson"}
    if n and all("seed_correct" in p for p in preds):
        den = sum(bool(p["seed_counted"]) for p in preds)
        ks = sum(bool(p["seed_correct"]) for p in preds)
        out["seed"] = {"accuracy": ks / den if den else 0.0, "correct": ks, "denominator": den, "n": n,
                       "ci95": list(wilson(ks, den)),
                       "rule": "the seed's evaluation/evaluate.py: lenient matches; denominator = responses it counted"}
    return out


def load_summary(path) -> dict | None:
    import json

    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else None


def load_correct(pred_path) -> dict[str, bool] | None:
    """``{id: correct}`` of a predictions file, None when absent."""
    p = Path(pred_path)
    if not p.exists():
        return None
    return {r["id"]: bool(r["correct"]) for r in read_jsonl(p)}


def one_line(data: str, run: str, s: dict, grading_: str = "project") -> str:
    if grading_ == "seed":
        sd = s.get("seed")
        if not sd:
            return f"{data} {run}: no seed's metric in this summary"
        lo, hi = sd["ci95"]
        return (f"{data} {run} (seed's metric): accuracy {sd['accuracy']:.3f} ({sd['correct']}/{sd['denominator']} "
                f"counted of {sd['n']}, 95% CI {lo:.3f}-{hi:.3f}); project's grading {s['accuracy']:.3f} "
                f"({s['correct']}/{s['n']})")
    lo, hi = s["ci95"]
    return (f"{data} {run}: accuracy {s['accuracy']:.3f} ({s['correct']}/{s['n']}, 95% CI {lo:.3f}-{hi:.3f}), "
            f"parsed {s['parsed']}/{s['n']}, backend {s['settings'].get('backend')}, {s.get('wall_s', '?')}s")
