"""The shipped accelerate config files pass accelerate's own checks, and their batch lines give the paper's batch."""

import os
from pathlib import Path
from unittest import mock

import pytest

from alice import sft

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "accelerate_config.yaml": ("NO", 1),
    "accelerate_configs/deepspeed_zero2.yaml": ("DEEPSPEED", 4),
    "accelerate_configs/fsdp.yaml": ("FSDP", 4),
    "accelerate_configs/cpu_2proc.yaml": ("MULTI_GPU", 2),  # torchrun's launcher, on the CPU (gloo)
    "accelerate_configs/deepspeed_zero2_multinode.yaml": ("DEEPSPEED", 16),  # 2 machines x 8 GPUs
}


def _launch_args(config_file):
    """What ``accelerate launch --config_file X training/SFT.py`` makes of the file (its own parser and checks)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "training/SFT.py", "--help"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accelerate_loads_the_file(name):
    from accelerate.commands.config import load_config_from_file

    cfg = load_config_from_file(str(REPO / name))  # accelerate's config class: unknown keys are an error
    dist, nproc = CONFIGS[name]
    assert cfg.distributed_type.value == dist and cfg.num_processes == nproc
    args, defaults, _ = _launch_args(REPO / name)
    assert args.num_processes == nproc


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batch_lines_give_the_papers_effective_batch(name, monkeypatch):
    for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    b = sft.batch_settings(str(REPO / name), world=CONFIGS[name][1])
    assert b.effective == sft.PAPER.effective_batch, b.describe()


def test_accelerate_rejects_unknown_keys_so_the_batch_keys_are_comments(tmp_path):
    from accelerate.commands.config import load_config_from_file

    text = (REPO / "accelerate_config.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "per_device_train_batch_size: 4\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config_from_file(str(bad))
    with pytest.raises(sft.SFTError, match="unknown key"):
        bad.write_text(text + "# sft.batch_size: 4\n")
        sft.read_sft_keys(bad)


def test_deepspeed_file_makes_a_zero2_plugin_that_agrees_with_the_batch():
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, mp = _launch_args(REPO / "accelerate_configs/deepspeed_zero2.yaml")
    assert args.use_deepspeed
    # as launch_command does before deepspeed_launcher
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, *(["mixed_precision"] if mp else [])])
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
        b = sft.batch_settings(str(REPO / "accelerate_configs/deepspeed_zero2.yaml"), world=args.num_processes)
    assert plugin.zero_stage == 2 and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == b.grad_accum  # DeepSpeed and the trainer agree
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"  # filled from the trainer's batch
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0  # the Trainer's max_grad_norm


def test_fsdp_file_makes_a_full_state_dict_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _launch_args(REPO / "accelerate_configs/fsdp.yaml")
    assert args.use_fsdp
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"


@pytest.mark.slow
def test_two_cpu_processes_train_and_save(tiny_models, tmp_path):
    """Issue 7 on CPU: `accelerate launch --config_file accelerate_configs/cpu_2proc.yaml training/SFT.py` (gloo)."""
    import json
    import subprocess
    import sys

    from alice.jsonl import write_jsonl

    data = tmp_path / "data"
    write_jsonl(data / "gsm8k" / "train.jsonl", [
        {"question": f"What is {i} plus {i}?", "answer": f"{i}+{i} = {2 * i}.\n#### {2 * i}"} for i in range(40)
    ])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_configs/cpu_2proc.yaml"),
           str(REPO / "training/SFT.py"), "--model", "custom", "--data", "gsm8k", "--student", str(tiny_models["qwen_small"]),
           "--method", "base", "--data-dir", str(data), "--root", str(tmp_path), "--limit", "16", "--max-steps", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", sft.CONFIG_ENV):
        env.pop(k, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "effective batch 16 = 2 per device" in proc.stdout and "x 2 process(es)" in proc.stdout
    assert proc.stdout.count("effective batch") == 1  # only the main process prints
    out = next(p for p in (tmp_path / "model_outputs" / "base").iterdir() if p.is_dir())
    rec = json.loads((out / "train_config.json").read_text())
    assert (rec["num_processes"], rec["effective_batch"], rec["optimizer_steps"]) == (2, 16, 2)
    assert rec["accelerate_config_found_by"] == "accelerate launch --config_file"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def test_multi_gpu_configs_compute_in_bf16_over_fp32_masters():
    """Issue 11: DeepSpeed's bf16 mode (fp32 master partitions in its optimizer) and FSDP2's mixed-precision policy
    (bf16 compute over the sharded parameters) both train the fp32 weights that build_trainer loads."""
    import torch
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, mp = _launch_args(REPO / "accelerate_configs/deepspeed_zero2.yaml")
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, *(["mixed_precision"] if mp else [])])
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        ds = DeepSpeedPlugin()
        ds.set_mixed_precision(env["ACCELERATE_MIXED_PRECISION"])
    assert ds.deepspeed_config["bf16"] == {"enabled": True} and ds.deepspeed_config["fp16"] == {"enabled": False}

    args, _, _ = _launch_args(REPO / "accelerate_configs/fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        fsdp = FullyShardedDataParallelPlugin()
        fsdp.set_mixed_precision(env["ACCELERATE_MIXED_PRECISION"])
    assert fsdp.mixed_precision_policy.param_dtype == torch.bfloat16
    # the weights the engines shard and update are loaded in fp32 for full fine-tuning (LoRA: bf16 frozen base)
    assert sft.load_dtype("bf16-mixed", lora=False) == torch.float32
    assert sft.load_dtype("bf16-mixed", lora=True) == torch.bfloat16


def test_multinode_config_names_its_machines_and_rendezvous():
    """Past one machine (issue 15): accelerate's own loader reads the machine count, rank and the main machine's
    address; each machine passes its own --machine_rank."""
    from accelerate.commands.config import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = REPO / "accelerate_configs/deepspeed_zero2_multinode.yaml"
    cfg = load_config_from_file(str(path))
    assert (cfg.num_machines, cfg.machine_rank, cfg.main_process_port) == (2, 0, 29500) and cfg.main_process_ip
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(path), "--machine_rank", "1", "training/SFT.py", "--help"]))
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 16)
    assert args.main_process_ip == cfg.main_process_ip
