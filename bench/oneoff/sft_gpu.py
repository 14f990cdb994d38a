"""Issue 11 on the GPU with real weights: base SFT of Qwen2.5-Coder 0.5B and 1.5B on gsm8k W2S-part rows (full
fine-tuning, lr 1e-5, 3 epochs), accuracy on the whole gsm8k test untrained vs trained, the loss curves, and the size
of the weight change under the default precision (fp32 master weights + bf16 autocast) vs the old pure-bf16 path.

Every number comes from the project's own commands (``evaluation.py``, ``training/SFT.py``) run as subprocesses;
this script only orders them, measures the weight change and collects the files into one JSON.

Phases (each fits one device call; they share --root, so run them in one hold, in order):
    python bench/oneoff/sft_gpu.py untrained --root /tmp/sftgpu --data-dir .gpu_data        # eval 0.5B + 1.5B as published
    python bench/oneoff/sft_gpu.py train --size 0.5B --root /tmp/sftgpu --data-dir .gpu_data  # SFT (mixed + pure), deltas, eval
    python bench/oneoff/sft_gpu.py train --size 1.5B ...
    python bench/oneoff/sft_gpu.py collect --root /tmp/sftgpu --out results/sft_gpu.json      # one JSON (+ loss plot)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAMILY, DATA = "qwen2.5-coder", "gsm8k"


def sh(argv: list[str], log: Path) -> float:
    """Run one of the project's commands; its output goes to ``log`` and the screen. Returns wall seconds."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+ " + " ".join(argv), flush=True)
    with open(log, "a") as f:
        f.write("+ " + " ".join(argv) + "\n")
        f.flush()
        p = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    tail = log.read_text().splitlines()[-3:]
    print("\n".join("  | " + t[-300:] for t in tail), flush=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}) after {dt:.0f}s: {' '.join(argv)}; log {log}")
    return dt


def common(a) -> list[str]:
    return ["--model", FAMILY, "--data", DATA, "--root", a.root, "--data-dir", a.data_dir]


def gen_flags(a) -> list[str]:
    return ["--backend", a.backend, "--batch-size", str(a.batch_size), "--max-new-tokens", str(a.max_new_tokens)] + \
        (["--limit", str(a.eval_limit)] if a.eval_limit else [])


def timings(a) -> dict:
    p = Path(a.root) / "sft_gpu_timings.json"
    return json.loads(p.read_text()) if p.exists() else {}


def note_time(a, key: str, seconds: float) -> None:
    t = timings(a)
    t[key] = round(seconds, 1)
    (Path(a.root) / "sft_gpu_timings.json").write_text(json.dumps(t, indent=1))


def untrained(a) -> None:
    for size in a.sizes:
        dt = sh(["evaluation.py", *common(a), "--student", size, "--method", "naive", *gen_flags(a)],
                Path(a.root) / "logs" / f"eval_naive_{size}.log")
        note_time(a, f"eval_naive_{size}", dt)


def pure_dir(a, size: str) -> Path:
    return Path(a.root) / "pure_bf16" / size


def weight_change(base_id: str, trained: Path) -> dict:
    """||W_trained - W_0|| / ||W_0|| over all weights, and the share of elements that changed at all, both as saved."""
    from huggingface_hub import snapshot_download
    from safetensors.torch import load_file

    def tensors(folder: Path) -> dict:
        out = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    w0 = tensors(Path(snapshot_download(base_id)))
    w1 = tensors(trained)
    num = den = 0.0
    changed = total = 0
    per_kind: dict[str, list[float]] = {}
    for k, t0 in w0.items():
        if k not in w1 or not t0.is_floating_point():
            continue
        a0, a1 = t0.float(), w1[k].float()
        d = (a1 - a0)
        num += float(d.pow(2).sum())
        den += float(a0.pow(2).sum())
        changed += int((d != 0).sum())
        total += a0.numel()
        kind = k.split(".")[-2] if k.endswith("weight") else k.split(".")[-1]
        per_kind.setdefault(kind, [0.0, 0.0])
        per_kind[kind][0] += float(d.pow(2).sum())
        per_kind[kind][1] += float(a0.pow(2).sum())
    return {"relative_change": math.sqrt(num / den), "changed_fraction": changed / total, "elements": total,
            "relative_change_by_matrix": {k: math.sqrt(v[0] / v[1]) for k, v in sorted(per_kind.items()) if v[1] > 0}}


def train(a) -> None:
    from alice import registry

    size = a.size
    base_id = registry.resolve_model(FAMILY, size)
    sft_flags = ["--student", size, "--method", "base", "--limit", str(a.train_limit), "--epochs", str(a.epochs),
                 "--lr", str(a.lr), "--per-device-batch-size", str(a.per_device), "--gradient-accumulation-steps",
                 str(a.grad_accum), "--logging-steps", "5"]
    dt = sh(["training/SFT.py", *common(a), *sft_flags], Path(a.root) / "logs" / f"sft_mixed_{size}.log")
    note_time(a, f"sft_mixed_{size}", dt)
    mixed = Path(a.root) / "model_outputs" / "base" / f"{FAMILY}_{size}_{DATA}"
    runs = {"bf16-mixed": mixed}
    if not a.skip_pure:
        dt = sh(["training/SFT.py", *common(a), *sft_flags, "--pure-bf16", "--output-dir", str(pure_dir(a, size))],
                Path(a.root) / "logs" / f"sft_pure_{size}.log")
        note_time(a, f"sft_pure_{size}", dt)
        runs["bf16-pure"] = pure_dir(a, size)
    deltas = {name: weight_change(base_id, folder) for name, folder in runs.items()}
    (Path(a.root) / f"weight_change_{size}.json").write_text(json.dumps(deltas, indent=1))
    print(json.dumps({k: {kk: v[kk] for kk in ("relative_change", "changed_fraction")} for k, v in deltas.items()}))
    dt = sh(["evaluation.py", *common(a), "--student", size, "--method", "base", *gen_flags(a)],
            Path(a.root) / "logs" / f"eval_base_{size}.log")
    note_time(a, f"eval_base_{size}", dt)
    if a.eval_pure and not a.skip_pure:
        dt = sh(["evaluation.py", *common(a), "--student", str(pure_dir(a, size)), "--method", "naive", *gen_flags(a)],
                Path(a.root) / "logs" / f"eval_pure_{size}.log")
        note_time(a, f"eval_pure_{size}", dt)


def paired_bootstrap(x: dict[str, bool], y: dict[str, bool], n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean of y - x over shared ids, with a 95% percentile bootstrap CI (questions resampled, pairs kept)."""
    ids = sorted(set(x) & set(y))
    d = [int(y[i]) - int(x[i]) for i in ids]
    rng = random.Random(seed)
    n = len(d)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {"diff": sum(d) / n, "ci95": [boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]], "n": n,
            "method": f"paired percentile bootstrap, {n_boot} resamples, seed {seed}"}


def collect(a) -> None:
    from alice.evaluate import load_correct

    root = Path(a.root)
    ev = root / "model_outputs" / "eval" / DATA
    summaries = {p.name.removesuffix("_summary.json"): json.loads(p.read_text()) for p in sorted(ev.glob("*_summary.json"))}
    out: dict = {"issue": 11, "command": a.command, "commit": a.commit, "device": a.device, "data": DATA,
                 "family": FAMILY, "timings_s": timings(a), "models": {}}
    for size in a.sizes:
        m: dict = {}
        for run, s in summaries.items():
            if s.get("student") == size or s.get("student") == str(pure_dir(a, size)):
                kind = {"naive": "untrained", "base": "trained (bf16-mixed)"}.get(s["method"], s["method"])
                if s.get("student") == str(pure_dir(a, size)):
                    kind = "trained (bf16-pure, old path)"
                m[kind] = {k: s[k] for k in ("accuracy", "ci95", "n", "correct", "parsed")} | {
                    "run": run, "wall_s": s.get("wall_s"), "settings": s.get("settings")}
                m[kind]["_pred"] = str(ev / f"{run}.jsonl")  # here, not the path recorded on the GPU machine
        if "untrained" in m and "trained (bf16-mixed)" in m:
            x, y = load_correct(m["untrained"]["_pred"]), load_correct(m["trained (bf16-mixed)"]["_pred"])
            if x and y:
                m["trained_minus_untrained"] = paired_bootstrap(x, y)
        for v in m.values():
            if isinstance(v, dict) and v.get("_pred") and Path(v["_pred"]).exists():
                rows = [json.loads(line) for line in open(v["_pred"])]
                chars = sorted(len(r["response"]) for r in rows)
                v["response_chars_median"] = chars[len(chars) // 2]
                v["share_with_gsm8k_format"] = sum("####" in r["response"] for r in rows) / len(rows)
            if isinstance(v, dict):
                v.pop("_pred", None)
        cfg = root / "model_outputs" / "base" / f"{FAMILY}_{size}_{DATA}" / "train_config.json"
        if cfg.exists():
            c = json.loads(cfg.read_text())
            m["training"] = {k: c.get(k) for k in ("rows", "epochs", "learning_rate", "effective_batch", "optimizer_steps",
                                                   "precision", "trained_weights_dtype", "warmup_steps", "train_wall_time_s",
                                                   "versions")}
            losses = json.loads(cfg.with_name("loss_log.json").read_text())
            m["loss_curve"] = [{"step": h["step"], "loss": h["loss"], "grad_norm": h.get("grad_norm")}
                               for h in losses if "loss" in h]
        pc = pure_dir(a, size) / "loss_log.json"
        if pc.exists():
            m["loss_curve_bf16_pure"] = [{"step": h["step"], "loss": h["loss"], "grad_norm": h.get("grad_norm")}
                                         for h in json.loads(pc.read_text()) if "loss" in h]
        wc = root / f"weight_change_{size}.json"
        if wc.exists():
            m["weight_change"] = json.loads(wc.read_text())
        out["models"][size] = m
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")
    plot_losses(out, Path(a.out).with_suffix(".png"))
    for size, m in out["models"].items():
        for kind, v in m.items():
            if isinstance(v, dict) and "accuracy" in v:
                print(f"{size:5s} {kind:32s} {v['accuracy']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] n={v['n']}")


def plot_losses(out: dict, path: Path) -> None:
    """Loss curves, one panel per size: the default precision and the old pure-bf16 path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s, m in out["models"].items() if m.get("loss_curve")]
    if not sizes:
        return
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        m = out["models"][size]
        for key, label in (("loss_curve", "fp32 masters + bf16 autocast"), ("loss_curve_bf16_pure", "pure bf16 (old)")):
            if m.get(key):
                ax.plot([h["step"] for h in m[key]], [h["loss"] for h in m[key]], label=label)
        ax.set_title(f"Qwen2.5-Coder-{size}: gsm8k SFT")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("untrained", "train", "collect"))
    p.add_argument("--root", required=True, help="scratch root for data/ and model_outputs/")
    p.add_argument("--data-dir", default=os.environ.get("ALICE_DATA_DIR"))
    p.add_argument("--sizes", nargs="+", default=["0.5B", "1.5B"])
    p.add_argument("--size", default="0.5B", help="train: which size")
    p.add_argument("--train-limit", type=int, default=1200)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--per-device", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--skip-pure", action="store_true")
    p.add_argument("--eval-pure", action="store_true", help="also evaluate the pure-bf16 model")
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--eval-limit", type=int, default=None, help="first N test questions (default: all)")
    p.add_argument("--out", default=str(ROOT / "results" / "sft_gpu.json"))
    p.add_argument("--command", default=" ".join(sys.argv))
    p.add_argument("--commit", default=os.environ.get("ALICE_COMMIT", ""))
    p.add_argument("--device", default="")
    a = p.parse_args()
    if a.phase != "collect" and not a.data_dir:
        p.error("--data-dir (or $ALICE_DATA_DIR) is required")
    {"untrained": untrained, "train": train, "collect": collect}[a.phase](a)


if __name__ == "__main__":
    main()
