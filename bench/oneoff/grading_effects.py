"""Measure what the grading choices change, on stored evaluation predictions (no model).

    python bench/oneoff/grading_effects.py PRED.jsonl [PRED.jsonl ...] --data gsm8k [--data-dir DIR] --out results/grading_effects.json

For each predictions file (``model_outputs/eval/<data>/<run>.jsonl`` written by evaluation.py) it regrades every
stored response: the project's grader (gsm8k: the FIRST ``####``), the same grader reading the LAST ``####``
(this project before issue 12), and the seed's metric (``grading.seed_grade``: its lenient matches and its
denominator). The run's method comes from its ``_summary.json`` next to it (it picks the seed's ARC parsing).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path


def last_marker_grade(data: str, response: str, row: dict) -> bool:
    from alice import grading

    if data == "gsm8k" and "####" in response:
        pred = grading.normalize_number(response.split("####")[-1])
        return pred is not None and Decimal(pred) == Decimal(grading.normalize_number(row["gold"]) or "nan")
    return grading.grade(data, response, row["gold"], row["question"]).correct


def measure(path: Path, data: str, rows_by_id: dict) -> dict:
    from alice import grading
    from alice.evaluate import grade_prediction

    summary_path = path.with_name(path.stem + "_summary.json")
    meta = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    preds = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    n = len(preds)
    first = last = seed_k = seed_den = differ = 0
    examples = []
    for p in preds:
        row = rows_by_id[p["id"]]
        g = grade_prediction(data, p["response"], row, meta.get("method"), meta.get("original_wts_type"))
        lm = last_marker_grade(data, p["response"], row)
        first += g["correct"]
        last += lm
        seed_k += g["seed_correct"]
        seed_den += g["seed_counted"]
        if lm != g["correct"]:
            differ += 1
            if len(examples) < 3:
                examples.append({"id": p["id"], "gold": row["gold"], "first": grading.extract_gsm8k(p["response"])
                                 if data == "gsm8k" else None, "tail": p["response"][-160:]})
    return {"file": str(path), "run": meta.get("run", path.stem), "n": n,
            "project_first_marker": {"correct": first, "accuracy": first / n},
            "project_last_marker": {"correct": last, "accuracy": last / n},
            "first_vs_last_disagree": differ, "disagree_examples": examples,
            "seed_metric": {"correct": seed_k, "denominator": seed_den, "accuracy": seed_k / seed_den if seed_den else 0.0},
            "seed_correct_over_all_n": seed_k / n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", nargs="+")
    p.add_argument("--data", required=True, choices=("gsm8k", "arc_challenge", "hotpotqa", "triviaqa"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/grading_effects.json")
    args = p.parse_args(argv)
    from alice import data as data_mod

    rows = {r["id"]: r for r in data_mod.load_test(args.data, args.data_dir)}
    results = [measure(Path(f), args.data, rows) for f in args.predictions]
    print(f"{'run':40} {'n':>5} {'first ####':>11} {'last ####':>10} {'differ':>6} {'seed metric':>20}")
    for r in results:
        s = r["seed_metric"]
        print(f"{r['run']:40} {r['n']:5d} {r['project_first_marker']['accuracy']:11.4f} "
              f"{r['project_last_marker']['accuracy']:10.4f} {r['first_vs_last_disagree']:6d} "
              f"{s['accuracy']:8.4f} ({s['correct']}/{s['denominator']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", "bench/oneoff/grading_effects.py", *sys.argv[1:]]),
                               "data": args.data, "results": results}, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
