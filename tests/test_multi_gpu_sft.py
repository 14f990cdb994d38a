"""Issue 15 on the CPU: DeepSpeed ZeRO-2 and FSDP over 2 processes (gloo) follow the 1-process loss curve at the same
effective batch (bench/multi_gpu_sft.py --cpu, the shipped config files with 2 processes), and a non-finite gradient
under DeepSpeed skips its step instead of crashing the run (seen on 2 H200s: DeepSpeedEngine.zero_grad() takes no
set_to_none)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alice.testing import write_sum_data

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(not HAVE_DEEPSPEED, reason="deepspeed is not installed (.ci/run installs it)")


def _data(tmp_path, n=64):
    return write_sum_data(tmp_path / "data", n)


def _bench():
    """bench/multi_gpu_sft.py as a module: the test launches with its 2-process config and environment."""
    spec = importlib.util.spec_from_file_location("multi_gpu_sft", REPO / "bench" / "multi_gpu_sft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env():
    return dict(_bench().launch_env(cpu=True), HF_HUB_OFFLINE="1")


def test_two_process_zero2_and_fsdp_follow_the_one_process_loss(tiny_models, tmp_path):
    runs = "one,zero2,fsdp" if HAVE_DEEPSPEED else "one,fsdp"
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(REPO / "bench" / "multi_gpu_sft.py"), "--cpu", "--model", "custom", "--student",
           str(tiny_models["qwen_small"]), "--data-dir", str(_data(tmp_path)), "--limit", "32", "--per-device", "4",
           "--runs", runs, "--tolerance", "1e-4", "--work", str(tmp_path / "w"), "--out", str(out), "--eval",
           "--eval-args", "--backend hf --max-new-tokens 4"]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    one = res["runs"]["one"]
    # 32 rows, 2 x 4 per optimizer step: 4 steps, on 1 process (accumulation 2) and on 2 (accumulation 1)
    assert (one["steps"], one["num_processes"], one["effective_batch"]) == (4, 1, 8)
    for run in runs.split(",")[1:]:
        r = res["runs"][run]
        assert (r["exit_code"], r["steps"], r["num_processes"], r["effective_batch"]) == (0, 4, 2, 8)
        assert r["tokens"] == one["tokens"]  # the same rows, dealt to two processes
        # fp32 on the CPU: the same 8 rows per step give the same loss up to summation order
        assert r["vs_one"]["within_tolerance"] and r["vs_one"]["max_abs_loss_diff"] < 1e-4, r["vs_one"]
        assert len({round(x, 5) for x in r["loss"]}) > 1  # a curve of its own steps, not one repeated figure
        assert 0 < r["scaling_efficiency"]
    for run in runs.split(","):  # every saved folder loads and evaluates on the 4 test questions
        assert res["eval"][run]["exit_code"] == 0 and res["eval"][run]["n"] == 4


POISON = """
import runpy, sys
from alice import sft
real = sft.build_trainer
seen = {"n": 0}
def poisoned(*a, **kw):
    trainer = real(*a, **kw)
    def hook(g):
        seen["n"] += 1
        return g * float("nan") if seen["n"] == 2 else g  # this process's 2nd backward only
    trainer.model.get_input_embeddings().weight.register_hook(hook)
    return trainer
sft.build_trainer = poisoned
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@needs_deepspeed
def test_a_nonfinite_gradient_under_deepspeed_skips_its_step(tiny_models, tmp_path):
    ds = _bench().two_process_config("zero2", cpu=True, folder=tmp_path)  # the shipped ZeRO-2 file, 2 CPU processes
    (tmp_path / "poison.py").write_text(POISON)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ds),
           str(tmp_path / "poison.py"), str(REPO / "training" / "SFT.py"), "--model", "custom", "--data", "gsm8k",
           "--student", str(tiny_models["qwen_small"]), "--method", "base", "--data-dir", str(_data(tmp_path)),
           "--root", str(tmp_path), "--limit", "32", "--per-device-batch-size", "4", "--max-steps", "4"]
    env = dict(_env(), PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "optimizer step 2/4 skipped" in p.stderr
    out = next(x for x in (tmp_path / "model_outputs" / "base").iterdir() if x.is_dir())
    rec = json.loads((out / "train_config.json").read_text())
    assert rec["optimizer_steps"] == 4 and [s["step"] for s in rec["skipped_nonfinite_steps"]] == [2]
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())  # DeepSpeed dropped the NaN step
