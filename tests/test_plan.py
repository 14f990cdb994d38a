"""The resource plan (alice/plan.py): the committed real-shape configs, the planner's choices for the paper's settings
on 1-8 GPUs of 80 / 141 GiB, the OOM ladder (injected OutOfMemoryError, in one process and relaunched under
accelerate), one-line refusals, and the multi-GPU placement run for real on 2 CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alice import launch, pipeline
from alice import plan as P
from alice.testing import write_sum_data

REPO = Path(__file__).resolve().parents[1]
H100 = P.Hardware(1, 79.2, 128.0)  # nvidia-smi's 81,559 MiB
H200 = P.Hardware(1, 139.8, 128.0)


def hw(n, gib=79.2, cpu=128.0 * 4):
    return P.Hardware(n, gib, cpu)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(P.HARDWARE_ENV, raising=False)


# ---------------------------------------------------------------------------------------------------- shapes
# Parameter counts the model cards publish (tied embeddings counted once); the committed configs must reproduce them.
PUBLISHED = {
    "Qwen/Qwen2.5-0.5B-Instruct": 0.49e9, "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9, "Qwen/Qwen2.5-3B-Instruct": 3.09e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.61e9, "Qwen/Qwen2.5-72B-Instruct": 72.7e9, "meta-llama/Llama-3.2-1B-Instruct": 1.24e9,
    "meta-llama/Llama-3.2-3B-Instruct": 3.21e9, "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "meta-llama/Meta-Llama-3-70B-Instruct": 70.6e9,
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_committed_real_shape_configs_give_the_published_parameter_counts(model):
    s = P.shape(model)
    assert abs(s.params - PUBLISHED[model]) / PUBLISHED[model] < 0.01, (model, s.params)
    assert s.largest_layer * s.layers < s.params  # blocks plus embeddings


def test_every_family_size_the_registry_names_has_a_shape():
    from alice import registry

    for family in ("qwen2.5", "llama3"):
        for size, hub_id in registry.FAMILIES[family].items():
            assert P.shape_file(hub_id).is_file() or size in ("14B", "32B"), hub_id
    assert P.shape_file(registry.SUMMARIZER_HUB_ID).is_file()


def test_a_folder_without_config_or_an_unknown_offline_id_is_one_line(tmp_path):
    with pytest.raises(P.PlanError, match="no config.json"):
        P.shape(str(tmp_path))
    with pytest.raises(P.PlanError, match="HF_HUB_OFFLINE"):
        P.shape("nobody/no-such-model")


# ---------------------------------------------------------------------------------------------------- training plans
def test_the_issues_oom_16_x_1_on_an_h100_is_planned_smaller_with_the_same_effective_batch():
    """The 1.5B full fine-tuning at 16 x 1 died on an 80 GB H100 (CoT rows); the plan keeps 16 but not as 16 x 1."""
    p = P.plan_training("Qwen/Qwen2.5-Coder-1.5B-Instruct", lora=False, effective_batch=16, tokens=1024, hw=H100,
                        per_device=16)
    assert (p.gpus, p.strategy) == (1, "single") and p.per_device < 16
    assert p.per_device * p.grad_accum == 16 and "lowered" in p.note
    assert p.estimate_gib <= p.capacity_gib < 79.2
    big = P.training_memory(P.shape("Qwen/Qwen2.5-Coder-1.5B-Instruct"), strategy="single", gpus=1, micro_batch=16,
                            tokens=1024, checkpointing=False)
    assert P.gpu_bytes(big) / P.GIB > 79.2  # what was asked does not fit the card


def test_estimates_grow_with_the_batch_and_rows_and_shrink_with_checkpointing_and_sharding():
    s = P.shape("Qwen/Qwen2.5-7B-Instruct")
    m = lambda **kw: P.gpu_bytes(P.training_memory(s, **{**dict(strategy="single", gpus=1, micro_batch=2,  # noqa: E731
                                                              tokens=1024, checkpointing=False), **kw}))
    assert m(micro_batch=4) > m() and m(tokens=2048) > m() and m(checkpointing=True) < m()
    assert m(strategy="zero3", gpus=4) < m(strategy="zero2", gpus=4) < m(strategy="single", gpus=1)
    assert m(strategy="zero2", gpus=8) < m(strategy="zero2", gpus=4)
    assert m(lora=True) < m() / 2
    # full fine-tuning keeps fp32 masters + AdamW: at least 16 bytes a parameter on one GPU
    assert P.training_memory(s, strategy="single", gpus=1, micro_batch=1, tokens=1, checkpointing=True)["optimizer"] == 8 * s.params


@pytest.mark.parametrize("student,gpus,gib,expect", [
    ("Qwen/Qwen2.5-7B-Instruct", 1, 79.2, "refuse"),
    ("Qwen/Qwen2.5-7B-Instruct", 4, 79.2, "zero2"),
    ("Qwen/Qwen2.5-7B-Instruct", 8, 79.2, "zero2"),
    ("meta-llama/Llama-3.1-8B-Instruct", 1, 139.8, "refuse"),
    ("meta-llama/Llama-3.1-8B-Instruct", 4, 79.2, "zero2"),
    ("Qwen/Qwen2.5-3B-Instruct", 1, 79.2, "single"),
    ("meta-llama/Llama-3.2-3B-Instruct", 4, 79.2, "zero2"),
])
def test_paper_students_full_fine_tuning(student, gpus, gib, expect, monkeypatch):
    monkeypatch.setattr(P, "deepspeed_available", lambda: True)
    if expect == "refuse":
        with pytest.raises(P.PlanError) as e:
            P.plan_training(student, lora=False, effective_batch=16, tokens=2048, hw=hw(gpus, gib, 128))
        msg = str(e.value)
        assert "\n" not in msg and "needs" in msg and "GPUs" in msg and "--lora" in msg
        return
    p = P.plan_training(student, lora=False, effective_batch=16, tokens=2048, hw=hw(gpus, gib))
    assert (p.strategy, p.gpus) == (expect, gpus)
    assert p.per_device * p.grad_accum * p.gpus == 16 and p.estimate_gib <= p.capacity_gib
    assert p.launched == (gpus > 1)


def test_without_deepspeed_fsdp_stands_in(monkeypatch):
    monkeypatch.setattr(P, "deepspeed_available", lambda: False)
    p = P.plan_training("Qwen/Qwen2.5-7B-Instruct", lora=False, effective_batch=16, tokens=2048, hw=hw(4))
    assert p.strategy == "fsdp-grad-op"


def test_lora_of_a_7b_fits_one_h100_and_uses_data_parallel_on_several():
    p = P.plan_training("Qwen/Qwen2.5-7B-Instruct", lora=True, effective_batch=16, tokens=2048, hw=H100)
    assert (p.gpus, p.strategy) == (1, "single")
    p = P.plan_training("Qwen/Qwen2.5-7B-Instruct", lora=True, effective_batch=16, tokens=2048, hw=hw(4))
    assert (p.gpus, p.strategy, p.per_device * p.grad_accum * 4) == (4, "ddp", 16)


def test_checkpointing_only_when_no_micro_batch_fits_without_it():
    s = "Qwen/Qwen2.5-3B-Instruct"
    p = P.plan_training(s, lora=False, effective_batch=16, tokens=2048, hw=H100)
    assert not p.gradient_checkpointing
    tight = P.Hardware(1, 70.0, 128)
    q = P.plan_training(s, lora=False, effective_batch=16, tokens=2048, hw=tight)
    assert q.gradient_checkpointing and q.estimate_gib <= q.capacity_gib


def test_cpu_plan_is_one_row_a_micro_batch_unless_asked():
    cpu = P.Hardware(0, 0.0, 24.0)
    p = P.plan_training("Qwen/Qwen2.5-Coder-0.5B-Instruct", lora=True, effective_batch=16, tokens=512, hw=cpu)
    assert (p.strategy, p.per_device, p.grad_accum) == ("cpu", 1, 16)
    assert P.plan_training("Qwen/Qwen2.5-Coder-0.5B-Instruct", lora=True, effective_batch=16, tokens=512, hw=cpu,
                           per_device=4).grad_accum == 4


# ---------------------------------------------------------------------------------------------------- ladder
def test_the_ladder_halves_keeps_the_effective_batch_then_checkpoints_and_never_repeats():
    rungs = P.ladder_rungs(16, 16, 1, False)
    assert rungs == [(8, 2, False), (4, 4, False), (2, 8, False), (1, 16, False), (1, 16, True)]
    assert all(b * a == 16 for b, a, _ in rungs)
    assert P.ladder_rungs(4, 16, 4, False) == [(2, 2, False), (1, 4, False), (1, 4, True)]
    assert P.ladder_rungs(1, 16, 1, True) == []  # nothing left to change: no retry
    p = P.plan_training("Qwen/Qwen2.5-Coder-1.5B-Instruct", lora=False, effective_batch=16, tokens=1024, hw=H100)
    plans = [p, *P.ladder(p)]
    assert len({(x.per_device, x.gradient_checkpointing) for x in plans}) == len(plans)


# ---------------------------------------------------------------------------------------------------- generation
def test_the_70b_summarizer_gets_tensor_parallelism_or_a_one_line_refusal():
    s = "meta-llama/Meta-Llama-3-70B-Instruct"
    assert P.plan_generation(s, hw(4)).tensor_parallel_size == 4
    assert P.plan_generation(s, hw(8)).tensor_parallel_size == 4  # the smallest that fits
    assert P.plan_generation(s, hw(2, 139.8)).tensor_parallel_size == 2
    assert P.plan_generation(s, H200, quantization="fp8").tensor_parallel_size == 1
    with pytest.raises(P.PlanError, match=r"needs 4 GPUs of 79 GiB \(tensor parallel 4\)"):
        P.plan_generation(s, H100)
    assert P.plan_generation("Qwen/Qwen2.5-7B-Instruct", H100).tensor_parallel_size == 1


def test_plan_command_line(capsys):
    assert P.main(["tp", "meta-llama/Meta-Llama-3-70B-Instruct", "--gpus", "4", "--gpu-memory-gib", "80"]) == 0
    assert capsys.readouterr().out.strip() == "4"
    assert P.main(["tp", "meta-llama/Meta-Llama-3-70B-Instruct", "--gpus", "1", "--gpu-memory-gib", "80"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "tensor parallel 4" in err
    assert P.main(["train", "Qwen/Qwen2.5-7B-Instruct", "--gpus", "4", "--gpu-memory-gib", "80"]) == 0
    assert "4 GPUs" in capsys.readouterr().out


def test_hardware_from_the_environment_and_too_many_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv(P.HARDWARE_ENV, "2x80")
    h = P.detect_hardware()
    assert (h.gpus, h.gpu_gib, h.assumed) == (2, 80.0, True)
    assert P.detect_hardware(gpus=1).gpus == 1
    with pytest.raises(P.PlanError, match="--gpus 4: only 2 GPU"):
        P.detect_hardware(gpus=4)
    with pytest.raises(P.PlanError, match="GPUSxGIB"):
        P.parse_hardware("lots")


# ---------------------------------------------------------------------------------------------------- the pipeline
def test_dry_run_prints_each_steps_memory_and_strategy(capsys, tmp_path):
    argv = ["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--paper", "--dry-run",
            "--root", str(tmp_path)]
    assert pipeline.main(argv) == 0
    out = capsys.readouterr().out
    assert "# hardware:" in out
    plans = [line for line in out.splitlines() if line.startswith("#     plan:")]
    assert len(plans) == out.count("training/SFT.py") + out.count("evaluation.py") + out.count("new_weak_to_strong") + \
        out.count("original_weak_to_strong")
    assert any("GiB per GPU" in line and "single" in line for line in plans)  # the 1.5B teacher
    assert any("DOES NOT FIT" in line and "4 GPUs" in line for line in plans)  # the 7B student on one 80 GiB GPU
    assert any("tensor parallel 4" in line for line in plans)  # the 70B summarizer
    assert not (tmp_path / "model_outputs").exists()  # a dry run writes nothing
    # on 4 GPUs of 80 GiB: every training step launched on all four, the summarizer at TP 4
    assert pipeline.main(argv + ["--gpus", "4", "--gpu-memory-gib", "80"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT" not in out
    trains = [line for line in out.splitlines() if "training/SFT.py" in line and not line.startswith("#")]
    assert trains and all("-m alice.launch" in line and "accelerate.commands.launch" in line and "_4proc" in line
                          for line in trains)
    assert "new_weak_to_strong_uncertainty.py" in out and "--tensor-parallel-size 4" in out


def test_a_run_that_fits_nowhere_refuses_in_one_line_before_any_step(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(P.HARDWARE_ENV, "1x80")
    rc = pipeline.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--paper",
                        "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: step 'base 7B'") and err.count("\n") == 1 and "4 GPUs" in err
    assert not (tmp_path / "model_outputs" / "logs").exists()
    assert pipeline.main(["--gpus", "3", "--root", str(tmp_path)]) == 2  # more than visible
    assert "only 1 GPU" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- OOM, for real
def _data(tmp_path, n=32):
    return write_sum_data(tmp_path / "data", n)


INJECT = """
import runpy, sys, torch
import transformers
real = transformers.Trainer.train
def train(self, *a, **kw):  # a card that holds micro-batches of at most MAX rows (and more with checkpointing)
    limit = MAX * (4 if self.args.gradient_checkpointing else 1)
    if self.args.per_device_train_batch_size > limit:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    return real(self, *a, **kw)
transformers.Trainer.train = train
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _inject(tmp_path, max_rows):
    f = tmp_path / "inject.py"
    f.write_text(INJECT.replace("MAX", str(max_rows)))
    return f


def _sft(tiny_models, tmp_path, *flags):
    return [str(REPO / "training" / "SFT.py"), "--model", "custom", "--data", "gsm8k", "--student",
            str(tiny_models["qwen_small"]), "--method", "base", "--data-dir", str(_data(tmp_path)), "--root",
            str(tmp_path), "--limit", "32", "--max-steps", "2", "--save-steps", "1000", *flags]


def _record(tmp_path):
    out = next(x for x in (tmp_path / "model_outputs" / "base").iterdir() if x.is_dir())
    return out, json.loads((out / "train_config.json").read_text())


def test_an_oom_retries_at_half_the_micro_batch_keeping_the_effective_batch(tiny_models, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(_inject(tmp_path, 2)), *_sft(tiny_models, tmp_path, "--per-device-batch-size", "8",
                                                             "--gradient-accumulation-steps", "2")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "out of memory at 8 x 2: retrying at 4 x 4 (same effective batch 16)" in p.stdout
    out, rec = _record(tmp_path)
    assert [(r["per_device"], r["grad_accum"]) for r in rec["out_of_memory_retries"]] == [(8, 2), (4, 4)]
    assert (rec["per_device_train_batch_size"], rec["gradient_accumulation_steps"], rec["effective_batch"]) == (2, 8, 16)
    assert rec["optimizer_steps"] == 2 and not (out / "oom.json").exists()
    assert rec["cudnn_attention"] is False  # its backward's NaN bug (pytorch/pytorch#196678): off in every training


def test_an_oom_at_every_rung_fails_in_one_line_and_saves_nothing(tiny_models, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(_inject(tmp_path, 0)), *_sft(tiny_models, tmp_path, "--per-device-batch-size", "2",
                                                             "--gradient-accumulation-steps", "8")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: out of memory at every micro-batch") and "Traceback" not in p.stderr
    assert "2 x 8, 1 x 16, 1 x 16 with gradient checkpointing" in last
    out = next(x for x in (tmp_path / "model_outputs" / "base").iterdir() if x.is_dir())
    assert not (out / "config.json").exists()


@pytest.mark.slow
def test_a_planned_two_gpu_step_runs_on_two_processes_and_relaunches_after_an_oom(tiny_models, tmp_path, monkeypatch):
    """The placement the pipeline makes for 2 GPUs (alice.launch: the planned accelerate config, DeepSpeed's
    accumulation left to each process's plan), run for real on 2 CPU processes; an OOM in one process relaunches one
    rung down."""
    strategy = "zero2" if P.deepspeed_available() else "fsdp-grad-op"
    monkeypatch.setenv(P.HARDWARE_ENV, "2x80")  # the processes plan as if on two 80 GiB GPUs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    model_out = tmp_path / "model_outputs" / "base" / "planned"
    cmd = [*launch.launcher(strategy, 2, tmp_path / "launch"), str(_inject(tmp_path, 2)),
           *_sft(tiny_models, tmp_path, "--per-device-batch-size", "4", "--output-dir", str(model_out))]
    monkeypatch.chdir(tmp_path)
    # the OOM is recorded in the step's output folder; the relaunch finds it there
    rc = launch.run_with_retries(model_out, cmd)
    assert rc == 0
    out, rec = _record(tmp_path)
    assert out == model_out
    assert rec["num_processes"] == 2 and rec["effective_batch"] == 16
    assert [(r["per_device"], r["grad_accum"]) for r in rec["out_of_memory_retries"]][:1] == [(4, 2)]
    assert rec["per_device_train_batch_size"] == 2 and rec["gradient_accumulation_steps"] == 4
    assert rec["memory_plan"] is None or rec["memory_plan"]["gpus"] == 2


def test_shell_script_takes_the_summarizers_tp_from_the_plan_or_refuses_in_one_line(tmp_path):
    """ours-wts-single.sh no longer defaults the 70B summarizer to one GPU: on one 80 GiB card it stops before any
    stage runs, saying what the summarizer needs."""
    env = dict(os.environ, ALICE_PLAN_HARDWARE="1x80", HF_HUB_OFFLINE="1", PYTHON=sys.executable)
    p = subprocess.run(["bash", str(REPO / "W2SG_pipeline" / "ours" / "ours-wts-single.sh"), "--root", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2
    assert "error: generating with meta-llama/Meta-Llama-3-70B-Instruct" in p.stderr and "tensor parallel 4" in p.stderr
    assert "new_weak_to_strong" not in p.stderr and not (tmp_path / "data").exists()  # no stage started


@pytest.mark.slow
def test_the_pipeline_runs_a_step_planned_on_two_gpus_as_two_processes(tiny_models, tmp_path, monkeypatch):
    """The pipeline's own placement, end to end: with two (pretend) 80 GiB GPUs the first training step is planned on
    both, runs under alice.launch + accelerate launch (2 CPU processes here, gloo) and trains at the effective 16."""
    from alice import steps as steps_mod

    monkeypatch.setenv(P.HARDWARE_ENV, "2x80")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    root = tmp_path / "run"
    argv = ["--model", "custom", "--data", "gsm8k", "--teacher", str(tiny_models["qwen_small"]), "--student",
            str(tiny_models["qwen_large"]), "--no-lora", "--epochs", "1", "--train-limit", "16",
            "--extra-sft-args", "--max-steps 2", "--root", str(root), "--data-dir", str(_data(tmp_path))]
    args = pipeline.options_from_argv(argv)
    steps = pipeline.plan(args)
    hw, problems = pipeline.place(steps, args)
    st = steps[0]
    assert (hw.gpus, problems, st.trains) == (2, [], True)
    assert "alice.launch" in st.launcher and any(a.endswith("_2proc_cpu.yaml") for a in st.launcher)
    rc = steps_mod.execute([st], root / "logs", in_process=True)
    log = "\n".join(p.read_text() for p in (root / "logs").glob("*.log"))
    assert rc == 0, log[-3000:]
    rec = json.loads((st.outputs[0] / "train_config.json").read_text())
    assert (rec["num_processes"], rec["effective_batch"], rec["optimizer_steps"]) == (2, 16, 2)
    assert rec["memory_plan"]["gpus"] == 2 and rec["memory_plan"]["strategy"] in ("zero2", "fsdp-grad-op")
