"""bench/train_variants.py on the CPU with a fixture model: each variant trains the strong baseline's step with its own
flags in its own root (padded and packed really differ in what the training recorded), is evaluated, and the second
is paired with the first on the shared test questions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alice.testing import write_sum_data

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_padded_and_packed_are_trained_evaluated_and_paired(tiny_models, tmp_path):
    data = write_sum_data(tmp_path / "data", 24)
    out = tmp_path / "packing.json"
    variants = {"padded": "--per-device-batch-size 8 --gradient-accumulation-steps 1",
                "packed": "--packing --per-device-batch-size 1 --gradient-accumulation-steps 1 --max-length 512"}
    cmd = [sys.executable, str(REPO / "bench/train_variants.py"), "--model", "custom", "--data", "gsm8k", "--size",
           str(tiny_models["qwen_small"]), "--limit", "24", "--epochs", "1", "--max-new-tokens", "4", "--backend", "hf",
           "--variants", json.dumps(variants), "--data-dir", str(data), "--root", str(tmp_path / "root"),
           "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert (run["data"], run["limit"], run["epochs"]) == ("gsm8k", 24, 1)
    padded, packed = run["variants"]["padded"], run["variants"]["packed"]
    for v in (padded, packed):
        assert "error" not in v, v
        assert v["train_wall_s"] > 0 and v["eval_wall_s"] > 0
        assert v["training"]["rows"] == 12 and v["training"]["skipped_nonfinite_steps"] == []  # the W2S half
        assert v["eval"]["n"] == 4 and 0 <= v["eval"]["accuracy"] <= 1
    # padded: 12 rows at 8 a step; packed: the short rows (~70 tokens with the chat template) share bins of 512 tokens, fewer sequences, fewer steps
    assert (padded["training"]["packing"], padded["training"]["optimizer_steps"]) == (False, 2)
    assert packed["training"]["packing"] is True
    assert packed["training"]["rows_after_preparation"] < 12
    assert packed["training"]["optimizer_steps"] == packed["training"]["rows_after_preparation"]
    assert "paired_difference" not in padded  # the reference
    d = packed["paired_difference"]
    assert d["against"] == "padded" and d["n"] == 4
    assert d["diff"] == pytest.approx(packed["eval"]["accuracy"] - padded["eval"]["accuracy"])


def test_a_teacher_step_trains_without_evaluation_and_refuses_evaluating_it(tiny_models, tmp_path):
    data = write_sum_data(tmp_path / "data", 24)
    out = tmp_path / "nan.json"
    base = [sys.executable, str(REPO / "bench/train_variants.py"), "--model", "custom", "--data", "gsm8k",
            "--method", "ours-wts-stage1", "--size", str(tiny_models["qwen_small"]), "--limit", "24", "--epochs", "1",
            "--train-flags", "--per-device-batch-size 4 --gradient-accumulation-steps 1",
            "--variants", json.dumps({"default": "", "deterministic": "--full-determinism"}), "--data-dir", str(data),
            "--root", str(tmp_path / "root"), "--out", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run(base, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 2 and "add --no-evaluate" in p.stderr.strip().splitlines()[-1]
    assert "Traceback" not in p.stderr and not out.exists()
    p = subprocess.run([*base, "--no-evaluate"], capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert (run["method"], run["train_flags"]) == ("ours-wts-stage1", "--per-device-batch-size 4 --gradient-accumulation-steps 1")
    for name, v in run["variants"].items():
        assert "error" not in v and "eval" not in v, v
        t = v["training"]
        # the teacher's CoT rows: gsm8k's first half (12 of 24), 4 a step
        assert (t["rows"], t["per_device_train_batch_size"], t["optimizer_steps"]) == (12, 4, 3), name
        assert t["skipped_nonfinite_steps"] == []
    assert (tmp_path / "root/default/model_outputs").is_dir() and (tmp_path / "root/deterministic/model_outputs").is_dir()
