"""Issue 14, "same command twice gives the same numbers": how far greedy evaluation and SFT repeat on a GPU.

    python bench/determinism_gpu.py DATA_DIR --out $OUT/determinism_gpu.json   # on the GPU machine, after provisioning

1. Evaluation: the untrained Qwen2.5-Coder-0.5B, greedy on the whole gsm8k test split (vLLM), four runs, two at a time
   on the card: with vLLM's default kernels and with ``--batch-invariant``, each once with vLLM's own batching and
   once with ``--batch-size 64`` (at most 64 requests per step: other batches, as on a busier card). Per pair: the
   number of identical answers and both accuracies; per run: the wall time (the cost of the invariant kernels).
2. Training: base SFT of the same model on 256 gsm8k rows (1 epoch, batch 16 x 1), twice with the default kernels
   and twice with ``--full-determinism``: whether the saved weights are byte-identical, and the wall times.

Each run is the project's own script in its own process and --root, so nothing is shared but the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EVAL = ["--model", "qwen2.5-coder", "--data", "gsm8k", "--student", "0.5B", "--method", "naive", "--backend", "vllm",
        "--max-new-tokens", "1024", "--gpu-memory-utilization", "0.15", "--kv-cache-gib", "12", "--enforce-eager"]
SFT = ["--model", "qwen2.5-coder", "--data", "gsm8k", "--method", "base", "--student", "0.5B", "--limit", "256",
       "--epochs", "1", "--per-device-batch-size", "16", "--gradient-accumulation-steps", "1"]


def _run(script: str, args: list[str], root: Path, log: Path) -> dict:
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, str(REPO / script), *args, "--root", str(root)], cwd=REPO,
                            stdout=f, stderr=subprocess.STDOUT).returncode
    return {"exit_code": rc, "process_wall_s": round(time.time() - t0, 1), "root": str(root), "log": log.name}


def evaluations(data_dir: str, work: Path, logs: Path) -> dict:
    runs = {"default": [], "default_batch64": ["--batch-size", "64"], "invariant": ["--batch-invariant"],
            "invariant_batch64": ["--batch-invariant", "--batch-size", "64"]}
    from alice.jsonl import read_jsonl

    out = {}
    with ThreadPoolExecutor(2) as pool:  # two engines on the card at once, as pipeline --jobs runs them
        futures = {k: pool.submit(_run, "evaluation.py", [*EVAL, "--data-dir", data_dir, *extra], work / f"eval_{k}",
                                  logs / f"eval_{k}.log") for k, extra in runs.items()}
        for k, f in futures.items():
            out[k] = dict(f.result(), flags=runs[k])
    answers = {}
    for k, r in out.items():
        preds = sorted(Path(r["root"]).glob("model_outputs/eval/gsm8k/*_naive.jsonl"))
        if preds:
            rows = read_jsonl(preds[0])
            answers[k] = {row["id"]: row for row in rows}
            r["accuracy"] = sum(bool(row["correct"]) for row in rows) / len(rows)
            r["n"] = len(rows)
    pairs = []
    for a, b in (("default", "default_batch64"), ("invariant", "invariant_batch64"), ("default", "invariant")):
        if a in answers and b in answers:
            same = sum(answers[a][i]["response"] == answers[b].get(i, {}).get("response") for i in answers[a])
            pairs.append({"a": a, "b": b, "n": len(answers[a]), "identical_answers": same,
                          "accuracy_a": out[a]["accuracy"], "accuracy_b": out[b]["accuracy"]})
    return {"runs": out, "pairs": pairs}


def trainings(data_dir: str, work: Path, logs: Path) -> dict:
    out = {}
    for k, extra in (("default_1", []), ("default_2", []), ("deterministic_1", ["--full-determinism"]),
                     ("deterministic_2", ["--full-determinism"])):
        r = _run("training/SFT.py", [*SFT, "--data-dir", data_dir, *extra], work / f"sft_{k}", logs / f"sft_{k}.log")
        weights = sorted(Path(r["root"]).glob("model_outputs/base/*/model*.safetensors"))
        r["weights_sha256"] = hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest() if weights else None
        cfg = sorted(Path(r["root"]).glob("model_outputs/base/*/train_config.json"))
        if cfg:
            c = json.loads(cfg[0].read_text())
            r.update(train_wall_time_s=c.get("train_wall_time_s"), optimizer_steps=c.get("optimizer_steps"),
                     full_determinism=c.get("full_determinism"))
        out[k] = dict(r, flags=extra)
    same = {kind: out[f"{kind}_1"]["weights_sha256"] is not None
            and out[f"{kind}_1"]["weights_sha256"] == out[f"{kind}_2"]["weights_sha256"] for kind in ("default", "deterministic")}
    return {"runs": out, "identical_weights": same}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/determinism"))
    ap.add_argument("--only", choices=("eval", "sft"), default=None)
    a = ap.parse_args(argv)
    logs = a.out.parent / "determinism_logs"
    logs.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    device = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    res = {"command": "python bench/determinism_gpu.py " + " ".join(argv or sys.argv[1:]), "device": device}
    from alice.fresh import git_commit

    res["commit"] = git_commit()  # $ALICE_COMMIT on the GPU machine (its copy has no .git), else HEAD
    if a.only in (None, "eval"):
        res["evaluation"] = evaluations(a.data_dir, a.work, logs)
        a.out.write_text(json.dumps(res, indent=1))
    if a.only in (None, "sft"):
        res["training"] = trainings(a.data_dir, a.work, logs)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
