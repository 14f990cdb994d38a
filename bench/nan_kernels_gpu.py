"""Which kernel gives the NaN gradient norms (issue 30): single forward/backward passes over the batches of a
training step, as the project's trainer builds them, under several attention kernels.

    python bench/nan_kernels_gpu.py --config bench/configs/nan_kernels_gpu.yaml --data-dir DIR --out results/nan_kernels_gpu.json

``bench/configs/nan_norms_gpu.yaml`` found the teacher's gsm8k CoT SFT skipping the same three optimizer steps in two
runs with the default kernels and none with ``--full-determinism``; those three batches, and no other of the 189, are
padded to exactly 320 tokens. Here each chosen batch (by optimizer step, the trainer's own order) goes once forward
(bf16 autocast over fp32 weights, as the training does) and backward per variant, each variant in its own process:
``sdpa`` (the default), ``sdpa_math``, ``sdpa_efficient``, ``sdpa_cudnn`` (one SDPA backend allowed),
``sdpa_no_cudnn`` (the default without cuDNN's kernel: the project's training since), ``eager`` attention, and
``deterministic`` (the default with ``torch.use_deterministic_algorithms`` and ``CUBLAS_WORKSPACE_CONFIG``, as
``--full-determinism`` sets them). ``--pad`` adds a batch padded to other lengths (extra padding: attention mask 0,
labels ignored): the same rows at another length, another length for the same rows. Written per batch and variant:
the loss, the gradient norm and the first parameters whose gradient is not finite.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import fresh, paths  # noqa: E402
from alice.hardware import detect_hardware  # noqa: E402
from alice.jsonl import replace_run  # noqa: E402
from alice.stages import common as stage_common  # noqa: E402

VARIANTS = ("sdpa", "sdpa_math", "sdpa_efficient", "sdpa_cudnn", "sdpa_no_cudnn", "eager", "deterministic")


def build_batches(train_argv: list[str], steps: list[int], pads: list[tuple[int, int]]) -> dict:
    """The trainer's own batches (its sampler, collator and epochs) at ``steps`` (1-based optimizer steps, one
    micro-batch each), plus (step, length) pads of them; ``{name: {input_ids, attention_mask, labels}}`` as lists."""
    import torch

    from alice.sft_trainer import build_trainer
    from alice.stages import train as T

    cfg = T.parse(train_argv)
    job, batch, opts = T.job(cfg), T.batch_of(cfg), cfg.options
    if batch.grad_accum != 1:
        raise SystemExit("error: use --gradient-accumulation-steps 1 in --train-args (one micro-batch a step)")
    rows = job.training_rows(opts.limit)
    trainer = build_trainer(job.model_id, rows, Path(tempfile.mkdtemp()), batch, opts)
    dl, want, got, step = trainer.get_train_dataloader(), set(steps) | {s for s, _ in pads}, {}, 0
    for epoch in range(int(opts.epochs)):
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(epoch)
        for b in dl:
            step += 1
            if step in want:
                got[step] = {k: b[k].cpu() for k in ("input_ids", "attention_mask", "labels")}
        if len(got) == len(want):
            break
    out = {}
    for s in steps:
        out[f"step{s}"] = {k: v.tolist() for k, v in got[s].items()}
    pad_id = trainer.processing_class.pad_token_id
    for s, length in pads:
        b, n = got[s], length - got[s]["input_ids"].shape[1]
        if n <= 0:
            raise SystemExit(f"error: --pad {s}:{length}: step {s}'s batch is already {got[s]['input_ids'].shape[1]} long")
        fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
        out[f"step{s}_pad{length}"] = {k: torch.cat([v, torch.full((v.shape[0], n), fill[k], dtype=v.dtype)], 1).tolist()
                                      for k, v in b.items()}
    return {"model": job.model_id, "batches": out}


def run_variant(variant: str, batches_file: str) -> dict:
    """One variant over every batch, in this process: loss, gradient norm, the first non-finite gradients."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    spec = json.loads(Path(batches_file).read_text())
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    if variant == "deterministic":
        torch.use_deterministic_algorithms(True)
    attn = "eager" if variant == "eager" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation=attn).to(dev)
    model.train()
    backend = {"sdpa_math": "MATH", "sdpa_efficient": "EFFICIENT_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}.get(variant)
    if variant == "sdpa_no_cudnn":  # the default dispatch without the cuDNN kernel: what the project's training does
        torch.backends.cuda.enable_cudnn_sdp(False)
    res = {}
    for name, b in spec["batches"].items():
        t = {k: torch.tensor(v, device=dev) for k, v in b.items()}
        model.zero_grad(set_to_none=True)
        ctx = contextlib.ExitStack()
        if backend:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            ctx.enter_context(sdpa_kernel([getattr(SDPBackend, backend)]))
        with ctx, torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda):
            loss = model(**t).loss
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        res[name] = {"length": len(b["input_ids"][0]), "loss": round(loss.item(), 6), "grad_norm": norm,
                     "nonfinite_grads": len(bad), "first_nonfinite": bad[:4]}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="a YAML file of these flags (bench/configs/nan_kernels_gpu.yaml)")
    p.add_argument("--train-args", default="", help="training/SFT.py flags of the training step whose batches are used")
    p.add_argument("--steps", default="13", help="optimizer steps whose batches are run, comma-separated")
    p.add_argument("--pad", default="", help="STEP:LENGTH,... : that step's batch padded to LENGTH too")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--variant-run", nargs=2, metavar=("VARIANT", "BATCHES"), help=argparse.SUPPRESS)
    a = stage_common.parse_args(p, argv)
    if a.variant_run:
        print(json.dumps(run_variant(*a.variant_run)))
        return 0
    variants = [v for v in a.variants.split(",") if v]
    if bad := [v for v in variants if v not in VARIANTS]:
        p.error(f"unknown variant {bad[0]!r}: choose from {', '.join(VARIANTS)}")
    steps = [int(s) for s in str(a.steps).split(",") if s]
    pads = [tuple(int(x) for x in item.split(":")) for item in a.pad.split(",") if item]
    train_argv = shlex.split(a.train_args) + (["--data-dir", a.data_dir] if a.data_dir else [])
    spec = build_batches(train_argv, steps, pads)
    res = {"command": "python bench/nan_kernels_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": fresh.git_commit(ROOT), "device": detect_hardware().describe(), "model": spec["model"],
           "train_args": a.train_args, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.json"
        batches.write_text(json.dumps(spec))
        for v in variants:
            # deterministic: CUBLAS_WORKSPACE_CONFIG is read by cuBLAS at its first use in the process, so set at start
            env = paths.child_env(**({"CUBLAS_WORKSPACE_CONFIG": ":16:8"} if v == "deterministic" else {}))
            pr = subprocess.run([sys.executable, __file__, "--variant-run", v, str(batches)], env=env,
                                capture_output=True, text=True)
            errors = [ln for ln in pr.stderr.splitlines() if "Error" in ln] or pr.stderr.strip().splitlines() or ["?"]
            res["variants"][v] = (json.loads(pr.stdout.strip().splitlines()[-1]) if pr.returncode == 0 else
                                  {"error": f"exit {pr.returncode}: {errors[-1][:300]}"})
            print(v, json.dumps(res["variants"][v]), flush=True)
            if a.out:  # one run per card and command: a rerun of some variants is kept beside the full run
                replace_run(a.out, res, key=lambda r: (r.get("device"), r.get("command")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
