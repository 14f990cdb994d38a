"""Two runs of the same pipeline command, compared output by output (issue 30: "run one setting twice"): each trained
model's plan (micro-batch x accumulation, estimate), memory (peak allocated / reserved, the scheduler's budget) and
weights (the record's content fingerprint), and each stage file's rows (how many identical). Works on runs that
stopped early: what exists in both is compared, what exists in one is listed with its rows.

    python bench/oneoff/compare_runs.py RUN_A RUN_B --out results/x.json

RUN_A / RUN_B: extracted `gpu_real_results.sh pack` tarballs (command.txt, device.txt, commit.txt, pipeline.log,
data/, model_outputs/ without weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from alice.jsonl import read_jsonl  # noqa: E402
from alice.steps import read_outcomes  # noqa: E402


def _read(p: Path) -> str | None:
    return p.read_text().strip() if p.exists() else None


def run_info(root: Path) -> dict:
    log = _read(root / "pipeline.log") or ""
    walls = {name: o["s"] for name, o in read_outcomes(log).items() if o["status"] == "ok"}
    return {"command": _read(root / "command.txt"), "commit": _read(root / "commit.txt"),
            "device": _read(root / "device.txt"), "steps_ok": len(walls), "step_wall_s": walls,
            "gpu_oom_retries": log.count("ran out of GPU memory beside other steps")}


def trained(root: Path) -> dict:
    """model folder (relative) -> what its train_config.json and record say."""
    out = {}
    for cfg in sorted((root / "model_outputs").rglob("train_config.json")):
        folder = cfg.parent
        c = json.loads(cfg.read_text())
        meta = folder.parent / (folder.name + ".meta.json")
        plan = c.get("memory_plan") if isinstance(c.get("memory_plan"), dict) else {}
        out[str(folder.relative_to(root))] = {
            "micro_batch": c.get("per_device_train_batch_size"), "accumulation": c.get("gradient_accumulation_steps"),
            "estimate_gib": plan.get("estimate_gib"), "peak_gpu_memory_gib": c.get("peak_gpu_memory_gib"),
            "peak_gpu_reserved_gib": c.get("peak_gpu_reserved_gib"), "gpu_budget_gib": c.get("gpu_budget_gib"),
            "skipped_nonfinite_steps": c.get("skipped_nonfinite_steps"), "optimizer_steps": c.get("optimizer_steps"),
            "train_wall_time_s": c.get("train_wall_time_s"),
            "fingerprint": json.loads(meta.read_text()).get("output", {}).get("fingerprint") if meta.exists() else None}
    return out


def compare(a: Path, b: Path) -> dict:
    ta, tb = trained(a), trained(b)
    models = []
    for name in sorted(set(ta) | set(tb)):
        x, y = ta.get(name), tb.get(name)
        row = {"model": name, "a": x, "b": y}
        if x and y:
            row["same_plan"] = (x["micro_batch"], x["accumulation"]) == (y["micro_batch"], y["accumulation"])
            row["identical_weights"] = bool(x["fingerprint"]) and x["fingerprint"] == y["fingerprint"]
        models.append(row)
    files = []
    names = {str(p.relative_to(r)) for r in (a, b) for p in (r / "data").rglob("*.jsonl")}
    for name in sorted(names):
        ra = read_jsonl(a / name) if (a / name).exists() else None
        rb = read_jsonl(b / name) if (b / name).exists() else None
        row = {"file": name, "rows_a": None if ra is None else len(ra), "rows_b": None if rb is None else len(rb)}
        if ra is not None and rb is not None:
            row["identical_rows"] = sum(x == y for x, y in zip(ra, rb))
        files.append(row)
    return {"a": run_info(a), "b": run_info(b), "trained": models, "stage_files": files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--note", default="", help="what the two runs are (stored with the figures)")
    args = p.parse_args(argv)
    for r in (args.run_a, args.run_b):
        if not (r / "model_outputs").is_dir():
            print(f"error: {r} is not an extracted run (no model_outputs/): cat real_<data>.tar.gz.part* | tar xz",
                  file=sys.stderr)
            return 2
    result = {"command": "python bench/oneoff/compare_runs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "note": args.note, **compare(args.run_a, args.run_b)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    same = [m for m in result["trained"] if m.get("identical_weights")]
    both = [m for m in result["trained"] if "identical_weights" in m]
    print(f"{args.out}: {len(same)} of {len(both)} models trained in both have identical weights; "
          f"{sum(m['same_plan'] for m in both)} had the same plan")
    for m in both:
        print(f"  {m['model']}: plan {m['a']['micro_batch']}x{m['a']['accumulation']} / "
              f"{m['b']['micro_batch']}x{m['b']['accumulation']}, weights {'identical' if m['identical_weights'] else 'differ'}")
    for f in result["stage_files"]:
        if "identical_rows" in f:
            print(f"  {f['file']}: {f['identical_rows']} of {f['rows_b']} rows identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
