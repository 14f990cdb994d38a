"""bench/nan_kernels_gpu.py on the CPU with a fixture model: the trainer's own batches are taken at the chosen
optimizer steps, padding a batch to another length changes neither its loss nor its gradient (the padding is masked
out and ignored by the loss), and every attention variant computes the same loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alice.testing import write_sum_data

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, tmp_path):
    return subprocess.run([sys.executable, str(REPO / "bench/nan_kernels_gpu.py"), *args], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=tmp_path)


def test_batches_padding_and_variants(tiny_models, tmp_path):
    data = write_sum_data(tmp_path / "data", 24)
    train = (f"--model custom --data gsm8k --teacher {tiny_models['qwen_small']} --method ours-wts-stage1 --limit 24 "
             f"--epochs 2 --per-device-batch-size 4 --gradient-accumulation-steps 1 --root {tmp_path / 'root'}")
    out = tmp_path / "nk.json"
    p = _run(["--train-args", train, "--data-dir", str(data), "--steps", "1,4", "--pad", "4:200",
              "--variants", "sdpa,sdpa_math,sdpa_no_cudnn,eager,deterministic", "--out", str(out)], tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert set(run["variants"]) == {"sdpa", "sdpa_math", "sdpa_no_cudnn", "eager", "deterministic"}
    ref = run["variants"]["eager"]
    assert set(ref) == {"step1", "step4", "step4_pad200"}
    assert ref["step4_pad200"]["length"] == 200 and ref["step4"]["length"] < 200
    for v, res in run["variants"].items():
        assert "error" not in res, (v, res)
        for name, r in res.items():
            assert r["nonfinite_grads"] == 0 and r["first_nonfinite"] == [], (v, name)
            assert r["loss"] == pytest.approx(ref[name]["loss"], rel=1e-4), (v, name)
            assert r["grad_norm"] == pytest.approx(ref[name]["grad_norm"], rel=1e-3), (v, name)
        # the same rows padded 4 -> 200 tokens: masked padding, ignored labels, the same loss and gradient
        assert res["step4_pad200"]["loss"] == pytest.approx(res["step4"]["loss"], rel=1e-5), v
        assert res["step4_pad200"]["grad_norm"] == pytest.approx(res["step4"]["grad_norm"], rel=1e-4), v
    # the epoch-2 step is another batch than step 1 (the trainer's shuffled order, 3 batches an epoch)
    assert ref["step1"]["loss"] != ref["step4"]["loss"]


def test_bad_input_is_one_line(tiny_models, tmp_path):
    p = _run(["--train-args", "--model custom", "--variants", "sdpa,flash9"], tmp_path)
    assert p.returncode == 2 and "unknown variant 'flash9'" in p.stderr.strip().splitlines()[-1]
    assert "Traceback" not in p.stderr
