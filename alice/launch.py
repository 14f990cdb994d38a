"""Training steps on several GPUs: the accelerate config a plan needs, and a launch that survives an out-of-memory error.

``config_for(plan, folder)`` writes the accelerate config of a ``plan.TrainPlan`` (from the shipped files in
``accelerate_configs/``: DeepSpeed ZeRO-2/3 with or without CPU offload, FSDP, or plain data parallel) with the plan's
number of processes and DeepSpeed's accumulation left to the trainer (``auto``: each process plans its micro-batch
from its rows, ``alice.sft_memory``). On a machine without CUDA the same config runs its processes on the CPU (gloo):
that is how the tests run the multi-GPU placements.

``python -m alice.launch OUTPUT_DIR -- COMMAND...`` runs a training command; when it fails after an out-of-memory error
(the processes record it in ``OUTPUT_DIR/oom.json``) it runs it again one rung down the plan's ladder (half the
micro-batch, double accumulation; then gradient checkpointing), and stops with one line when no rung is left. A
failure that is not an out-of-memory error is not retried: the same command would fail the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from . import lifeline
from . import plan as plan_mod
from .sft_memory import read_oom

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {"deepspeed": REPO / "accelerate_configs" / "deepspeed_zero2.yaml", "fsdp": REPO / "accelerate_configs" / "fsdp.yaml",
           "ddp": REPO / "accelerate_configs" / "cpu_2proc.yaml"}


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def accelerate_config(strategy: str, processes: int, cpu: bool | None = None) -> dict:
    """The accelerate config (a dict) of ``strategy`` on ``processes`` processes."""
    cpu = (not cuda_available()) if cpu is None else cpu
    if strategy.startswith("zero"):
        cfg = yaml.safe_load(SHIPPED["deepspeed"].read_text())
        ds = cfg["deepspeed_config"]
        ds["zero_stage"] = 3 if strategy.startswith("zero3") else 2
        ds["gradient_accumulation_steps"] = "auto"  # the trainer's (each process's memory plan)
        offload = "cpu" if strategy.endswith("offload") else "none"
        ds["offload_optimizer_device"] = offload
        ds["offload_param_device"] = offload
        if ds["zero_stage"] == 3:
            ds["zero3_init_flag"] = True  # each process loads only its shard
            ds["zero3_save_16bit_model"] = True  # the final save gathers one plain folder
    elif strategy.startswith("fsdp"):
        cfg = yaml.safe_load(SHIPPED["fsdp"].read_text())
        f = cfg["fsdp_config"]
        f["fsdp_reshard_after_forward"] = strategy != "fsdp-grad-op"
        f["fsdp_offload_params"] = strategy.endswith("offload")
    elif strategy == "ddp":
        cfg = yaml.safe_load(SHIPPED["ddp"].read_text())
    else:
        raise plan_mod.PlanError(f"no accelerate config for strategy {strategy!r} (one process needs none)")
    cfg["num_processes"] = processes
    cfg["use_cpu"] = cpu
    cfg["mixed_precision"] = "no" if cpu else "bf16"
    return cfg


def config_for(strategy: str, processes: int, folder: Path, cpu: bool | None = None, write: bool = True) -> Path:
    """``folder/<strategy>_<n>proc.yaml``, written with ``accelerate_config(...)`` (same content: same file) unless
    ``write`` is False (a dry run names it only)."""
    cfg = accelerate_config(strategy, processes, cpu)
    path = folder / f"{strategy}_{processes}proc{'_cpu' if cfg['use_cpu'] else ''}.yaml"
    text = ("# written by alice.launch from the plan (docs/scale.md); the batch is each process's memory plan\n"
            + yaml.safe_dump(cfg, sort_keys=True))
    if write and (not path.is_file() or path.read_text() != text):
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def launcher(strategy: str, processes: int, folder: Path, python: str = sys.executable, write: bool = True) -> list[str]:
    """The command prefix that runs a training script on ``processes`` processes with ``strategy``."""
    return [python, "-m", "accelerate.commands.launch", "--config_file",
            str(config_for(strategy, processes, folder, write=write))]


def launch_env() -> dict:
    """This environment for the launched processes: no rank variables of an outer launcher; on the CPU, one thread
    per process and DeepSpeed's CPU accelerator."""
    env = dict(os.environ)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ALICE_ACCELERATE_CONFIG"):
        env.pop(k, None)
    if not cuda_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _with_rung(cmd: list[str], rung: tuple[int, int, bool]) -> list[str]:
    """``cmd`` with the micro-batch, accumulation and checkpointing of ``rung`` (earlier such flags dropped)."""
    out, skip = [], False
    for a in cmd:
        if skip:
            skip = False
            continue
        if a in ("--per-device-batch-size", "--gradient-accumulation-steps"):
            skip = True
            continue
        if a == "--gradient-checkpointing":
            continue
        out.append(a)
    b, acc, ckpt = rung
    return out + ["--per-device-batch-size", str(b), "--gradient-accumulation-steps", str(acc)] + (
        ["--gradient-checkpointing"] if ckpt else [])


def _processes(cmd: list[str]) -> int:
    """The processes an ``accelerate launch --config_file X`` command starts (1 for any other command)."""
    if "--num_processes" in cmd:
        return int(cmd[cmd.index("--num_processes") + 1])
    if "--config_file" in cmd:
        return int(yaml.safe_load(Path(cmd[cmd.index("--config_file") + 1]).read_text()).get("num_processes", 1))
    return 1


def run_with_retries(out_dir: Path, cmd: list[str], effective_batch: int = 16) -> int:
    """Run ``cmd`` (a training command); after a failure that recorded an out-of-memory error in ``out_dir/oom.json``,
    run it again on the next rung of the ladder. The exit status of the last run."""
    seen = len(read_oom(out_dir))
    lifeline.guard()  # the launcher and its training processes die with this one, kill -9 included
    while True:
        print(f"[launch] $ {' '.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, env=launch_env()).returncode
        tried = read_oom(out_dir)
        if rc == 0 or len(tried) == seen:
            return rc
        seen = len(tried)
        last = tried[-1]
        rungs = plan_mod.ladder_rungs(last["per_device"], effective_batch, _processes(cmd), last["gradient_checkpointing"])
        if not rungs:
            print(f"error: out of memory at every micro-batch and with gradient checkpointing (tried "
                  f"{', '.join(str(t['per_device']) + ' x ' + str(t['grad_accum']) for t in tried)}): use more or "
                  f"larger GPUs, --lora, or a smaller --max-length", file=sys.stderr, flush=True)
            return rc
        cmd = _with_rung(cmd, rungs[0])
        print(f"[launch] out of memory at {last['per_device']} x {last['grad_accum']}: relaunching at "
              f"{rungs[0][0]} x {rungs[0][1]}{' with gradient checkpointing' if rungs[0][2] else ''}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m alice.launch OUTPUT_DIR [--effective-batch N] -- COMMAND...", file=sys.stderr)
        return 2
    return run_with_retries(Path(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main())
