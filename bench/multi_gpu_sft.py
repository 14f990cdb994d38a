"""Issue 15: SFT on one device vs DeepSpeed ZeRO-2 and FSDP over two, same data and effective batch, then evaluation.

Each run is the project's own command, in a fresh process:
  one     python training/SFT.py ... --per-device-batch-size B --gradient-accumulation-steps 2       (1 device)
  zero2   accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml --num_processes 2 training/SFT.py
          ... --per-device-batch-size B                                    (DeepSpeed's accumulation: 1)
  fsdp    accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 2 training/SFT.py ...
          --per-device-batch-size B --gradient-accumulation-steps 1
so every run takes 2B rows per optimizer step. The same seed gives the same shuffled order, and accelerate deals the
per-device batches of a step to the processes in turn, so step k sees the same 2B rows in every run and the loss curves
can be compared step by step. The config files are the shipped ones with num_processes set to 2 (and, with --cpu,
use_cpu: true and no mixed precision: the CPU check of the same path, gloo between the processes).

Figures per run: the per-step loss, tokens/s (TRL's num_tokens / train_runtime: real tokens, all processes) and per
device, scaling efficiency = (tokens/s on 2 devices) / (2 x tokens/s on 1), wall time of the process; against "one":
max and mean |loss difference| per step, judged by --tolerance. With --eval, each saved model is evaluated with
evaluation.py (greedy, the test split) and the accuracies are compared.

GPU (2 GPUs, models by hub id from the HF cache):
    python bench/multi_gpu_sft.py --data-dir .gpu_data --eval --out $OUT/multi_gpu_sft.json
CPU check (tiny models; tests/test_multi_gpu_sft.py runs it):
    python bench/multi_gpu_sft.py --cpu --model custom --student PATH --data-dir DATA --limit 32 --per-device 4 --out X
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import fresh  # noqa: E402
CONFIGS = {"zero2": "accelerate_configs/deepspeed_zero2.yaml", "fsdp": "accelerate_configs/fsdp.yaml"}


def two_process_config(name: str, cpu: bool, folder: Path) -> Path:
    """The shipped config file of ``name`` with 2 processes (on the CPU: use_cpu, no mixed precision)."""
    cfg = yaml.safe_load((ROOT / CONFIGS[name]).read_text())
    cfg["num_processes"] = 2
    if cpu:
        cfg.update(use_cpu=True, mixed_precision="no")
    out = folder / f"{name}_2proc.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def launch_env(cpu: bool) -> dict:
    """This environment without a launcher's rank variables (each run starts its own), and on the CPU one thread per
    process and DeepSpeed's CPU accelerator."""
    env = dict(os.environ)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ALICE_ACCELERATE_CONFIG"):
        env.pop(k, None)
    if cpu:
        env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    return env


def command(a, run: str, folder: Path) -> tuple[list[str], dict]:
    sft = [str(ROOT / "training" / "SFT.py"), "--model", a.model, "--data", a.data, "--student", a.student,
           "--method", "base", "--root", str(folder / run), "--limit", str(a.limit), "--epochs", str(a.epochs),
           "--per-device-batch-size", str(a.per_device), "--logging-steps", "1", "--seed", "0"]
    if a.data_dir:
        sft += ["--data-dir", a.data_dir]
    if a.cpu:  # fp32, as the CPU configs (no mixed precision): the processes' losses then agree to summation order
        sft += ["--no-bf16"]
    env = launch_env(a.cpu)
    if run == "one":
        if not a.cpu:
            env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        return [sys.executable, *sft, "--gradient-accumulation-steps", "2"], env
    cfg = two_process_config(run, a.cpu, folder)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg)]
    return launch + sft + (["--gradient-accumulation-steps", "1"] if run == "fsdp" else []), env


def read_run(root: Path) -> dict:
    """Loss per step, tokens and runtime from the saved folder's loss_log.json / train_config.json."""
    out = next(p for p in (root / "model_outputs" / "base").iterdir() if p.is_dir())  # beside it: <name>.meta.json
    hist = json.loads((out / "loss_log.json").read_text())
    cfg = json.loads((out / "train_config.json").read_text())
    losses = [h["loss"] for h in hist if "loss" in h]
    tokens = max((h.get("num_tokens", 0) for h in hist), default=0)
    runtime = next((h["train_runtime"] for h in hist if "train_runtime" in h), None)
    return {"model_dir": str(out), "loss": losses, "steps": len(losses), "tokens": tokens, "train_runtime_s": runtime,
            "tokens_per_s": tokens / runtime if runtime else None,
            "num_processes": cfg.get("num_processes"), "effective_batch": cfg.get("effective_batch")}


def compare(ref: list[float], other: list[float], tolerance: float) -> dict:
    n = min(len(ref), len(other))
    d = [abs(x - y) for x, y in zip(ref[:n], other[:n])]
    return {"steps_compared": n, "same_step_count": len(ref) == len(other),
            "max_abs_loss_diff": max(d) if d else None, "mean_abs_loss_diff": sum(d) / n if n else None,
            "tolerance": tolerance, "within_tolerance": bool(d) and len(ref) == len(other) and max(d) <= tolerance}


def evaluate(a, runs: list[str], folder: Path, logs: Path) -> dict:
    """evaluation.py on each trained model; on a GPU up to one process per visible device at once."""
    devices = [None] if a.cpu else [str(i) for i in range(a.eval_devices)]
    results, pending = {}, list(runs)
    while pending:
        batch, pending = pending[: len(devices)], pending[len(devices):]
        procs = []
        for run, dev in zip(batch, devices):
            cmd = [sys.executable, str(ROOT / "evaluation.py"), "--model", a.model, "--data", a.data, "--student",
                   a.student, "--method", "base", "--root", str(folder / run), *a.eval_args.split()]
            if a.data_dir:
                cmd += ["--data-dir", a.data_dir]
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": dev} if dev is not None else {}))
            log = open(logs / f"eval_{run}.log", "w")
            procs.append((run, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()))
        for run, p, t0 in procs:
            rc = p.wait()
            summ = sorted((folder / run / "model_outputs" / "eval").rglob("*_summary.json"))
            s = json.loads(summ[0].read_text()) if summ else {}
            results[run] = {"exit_code": rc, "accuracy": s.get("accuracy"), "n": s.get("n"),
                            "wall_s": round(time.time() - t0, 1)}
            print(f"[multi_gpu_sft] eval {run}: {results[run]}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder")
    ap.add_argument("--student", default="0.5B")
    ap.add_argument("--data", default="gsm8k")
    ap.add_argument("--data-dir", default=os.environ.get("ALICE_DATA_DIR"))
    ap.add_argument("--runs", default="one,zero2,fsdp")
    ap.add_argument("--limit", type=int, default=2048, help="training rows (the W2S part's first N)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--per-device", type=int, default=8, help="per-device batch; effective batch = 2 x this")
    ap.add_argument("--tolerance", type=float, default=0.05, help="max |loss difference| per step vs 'one'")
    ap.add_argument("--eval", action="store_true", help="evaluate each saved model (evaluation.py)")
    ap.add_argument("--eval-args", default="--backend vllm --enforce-eager --max-new-tokens 512 "
                                           "--gpu-memory-utilization 0.4")
    ap.add_argument("--eval-devices", type=int, default=2)
    ap.add_argument("--cpu", action="store_true", help="2 CPU processes over gloo (the check of the same path)")
    ap.add_argument("--work", default="/tmp/multi_gpu_sft", help="folder for the trained models and logs")
    ap.add_argument("--out", default=str(ROOT / "results" / "multi_gpu_sft.json"))
    a = ap.parse_args()

    folder = Path(a.work)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs = a.runs.split(",")
    res = {"issue": 15, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
           "commit": fresh.git_commit(), "device": "cpu" if a.cpu else _gpus(),
           "settings": {k: v for k, v in vars(a).items() if k not in ("out", "work")}, "runs": {}}

    def save():
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))

    for run in runs:
        cmd, env = command(a, run, folder)
        t0 = time.time()
        with open(logs / f"sft_{run}.log", "w") as log:
            rc = subprocess.run(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode
        r = {"exit_code": rc, "process_wall_s": round(time.time() - t0, 1), "command": " ".join(cmd[1:])}
        if rc == 0:
            r.update(read_run(folder / run))
        else:
            r["log_tail"] = (logs / f"sft_{run}.log").read_text()[-3000:]
        res["runs"][run] = r
        print(f"[multi_gpu_sft] {run}: exit {rc}, {r['process_wall_s']} s, "
              f"{r.get('steps')} steps, tokens/s {r.get('tokens_per_s')}", flush=True)
        save()
    one = res["runs"].get("one", {})
    for run in runs:
        r = res["runs"][run]
        if run == "one" or "loss" not in r or "loss" not in one:
            continue
        r["vs_one"] = compare(one["loss"], r["loss"], a.tolerance)
        if one.get("tokens_per_s") and r.get("tokens_per_s"):
            r["tokens_per_s_per_device"] = r["tokens_per_s"] / 2
            r["scaling_efficiency"] = r["tokens_per_s"] / (2 * one["tokens_per_s"])
        print(f"[multi_gpu_sft] {run} vs one: {r['vs_one']}", flush=True)
    save()
    if a.eval:
        res["eval"] = evaluate(a, [r for r in runs if res["runs"][r]["exit_code"] == 0], folder, logs)
        save()
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "loss"} for k, v in res["runs"].items()}, indent=1))


def _gpus() -> list[str]:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()
    except OSError:
        return []


if __name__ == "__main__":
    main()
