"""One training step of the pipeline, run with variants of its flags on real weights, each variant in its own --root
on the same rows: what the training recorded and, optionally, the trained model's test accuracy (issues 30 and 31).

    python bench/train_variants.py --config bench/configs/packing_gpu.yaml --data-dir DIR --root /tmp/packing \\
        --out results/packing_gpu.json      # padded 16 x 1 against padding-free packing (issue 31)
    python bench/train_variants.py --config bench/configs/nan_norms_gpu.yaml --data-dir DIR --root /tmp/nan \\
        --out results/nan_norms_gpu.json    # the teacher's CoT SFT with and without deterministic kernels (issue 30)

Per variant: ``training/SFT.py --method METHOD`` (``base``: the strong baseline's step, ground-truth rows, the model
as --student; ``ours-wts-stage1``: the teacher's CoT SFT, the model as --teacher) with the common flags and the
variant's, then, with --evaluate, ``evaluation.py`` on the whole test split. Written: each step's wall seconds, what
the training recorded (``train_config.json``: optimizer steps, micro-batch, peak memory, the loop's own seconds, the
steps skipped for a non-finite gradient norm), the accuracy with its 95% CI, and each variant's paired difference to
the first one on the shared questions. Two variants of the same flags are two runs of the same command. The file
holds one run per device (``alice.jsonl.replace_run``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import fresh, paths  # noqa: E402
from alice.evaluate import load_correct  # noqa: E402
from alice.hardware import detect_hardware  # noqa: E402
from alice.jsonl import replace_run  # noqa: E402
from alice.stages import common as stage_common  # noqa: E402
from alice.report import paired_diff  # noqa: E402

RECORDED = ("optimizer_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "packing", "rows",
            "rows_after_preparation", "peak_gpu_memory_gib", "peak_gpu_reserved_gib", "train_wall_time_s",
            "skipped_nonfinite_steps", "out_of_memory_retries")


def _timed(argv: list[str], log: Path) -> tuple[float, int]:
    t0 = time.time()
    with log.open("a") as f:
        rc = subprocess.run(argv, cwd=ROOT, env=paths.child_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    return round(time.time() - t0, 1), rc


ROLE = {"base": "--student", "ours-wts-stage1": "--teacher", "original-wts-stage1": "--teacher"}


def variant(flags: str, a, root: Path) -> dict:
    role = ROLE[a.method]
    common = ["--model", a.model, "--data", a.data, "--root", str(root), role, a.size]
    common += ["--data-dir", a.data_dir] if a.data_dir else []
    root.mkdir(parents=True, exist_ok=True)
    log = root / "bench.log"
    out: dict = {"flags": flags}
    train = [sys.executable, "training/SFT.py", *common, "--method", a.method, "--epochs", str(a.epochs),
             "--limit", str(a.limit), *shlex.split(a.train_flags), *shlex.split(flags)]
    out["train_wall_s"], rc = _timed(train, log)
    cfgs = sorted(root.glob("model_outputs/*/*/train_config.json"))
    if rc or not cfgs:
        return dict(out, error=f"training exited {rc}: see {log}")
    cfg = json.loads(cfgs[0].read_text())
    out["training"] = {k: cfg.get(k) for k in RECORDED}
    if not a.evaluate:
        return out
    ev = [sys.executable, "evaluation.py", *common, "--method", "base", "--backend", a.backend, "--max-new-tokens", str(a.max_new_tokens),
          *shlex.split(a.gen_args), *(["--limit", str(a.eval_limit)] if a.eval_limit else [])]
    out["eval_wall_s"], rc = _timed(ev, log)
    summaries = sorted(root.glob(f"model_outputs/eval/{a.data}/*_summary.json"))
    if rc or not summaries:
        return dict(out, error=f"evaluation exited {rc}: see {log}")
    s = json.loads(summaries[0].read_text())
    out["eval"] = {k: s.get(k) for k in ("accuracy", "ci95", "correct", "n")}
    out["_predictions"] = str(Path(summaries[0]).with_name(Path(s["predictions"]).name))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="a YAML file of these flags (bench/configs/packing_gpu.yaml)")
    p.add_argument("--model", default="qwen2.5-coder")
    p.add_argument("--data", default="gsm8k")
    p.add_argument("--method", default="base", choices=sorted(ROLE), help="the training step (training/SFT.py)")
    p.add_argument("--size", default="1.5B", help="the model trained (a size of --model, a hub id or a folder)")
    p.add_argument("--train-flags", default="--full-determinism", help="training/SFT.py flags of every variant")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate each trained model on the test split")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--backend", default="auto")
    p.add_argument("--gen-args", default="", help="evaluation.py's generation flags")
    p.add_argument("--variants", default={"padded": ""},
                   help='JSON {name: "training/SFT.py flags"} (a mapping in --config); the first is the reference')
    p.add_argument("--eval-limit", type=int, default=None, help="the first N test questions (a rehearsal; default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--out", default=None)
    a = stage_common.parse_args(p, argv)  # a --config file's values are defaults: a flag given overrides them
    if a.evaluate and a.method != "base":
        p.error(f"--evaluate evaluates a trained student (--method base); --method {a.method}: add --no-evaluate")
    res = {"command": "python bench/train_variants.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": fresh.git_commit(ROOT), "device": detect_hardware().describe(), "data": a.data, "model": a.model,
           "method": a.method, "size": a.size, "train_flags": a.train_flags, "limit": a.limit, "epochs": a.epochs,
           "eval_limit": a.eval_limit, "variants": {}}
    variants = json.loads(a.variants) if isinstance(a.variants, str) else a.variants
    ref = None
    for name, flags in variants.items():
        v = variant(flags, a, a.root / name)
        preds = v.pop("_predictions", None)
        if preds and ref is None:
            ref = (name, load_correct(preds))
        elif preds:
            d = paired_diff(load_correct(preds), ref[1])
            v["paired_difference"] = dict(d, against=ref[0]) if d else None
        res["variants"][name] = v
        print(name, json.dumps(v), flush=True)
        if a.out:
            replace_run(a.out, res, key=lambda r: r.get("device"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
