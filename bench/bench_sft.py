"""SFT throughput (real tokens/s, MFU) of the project's training path (``alice.sft.build_trainer``), vs the seed's approach.

Everything that matters for speed comes from ``alice.sft`` itself: ``to_examples`` (conversational prompt-completion
rows), TRL's ``SFTTrainer`` with the project's ``SFTConfig`` (completion-only loss, bf16, BFD packing when asked,
LoRA via peft). The bench only (a) replaces ``AutoModelForCausalLM.from_pretrained`` by ``from_config`` with random
weights built on the GPU from the official config (no weights on the device machine), (b) counts the real tokens
each micro-batch holds, and (c) times a fixed number of optimizer steps after a warm-up.

FLOPs per optimizer step (stated, used for MFU):
    linear   = k * N_mm * T             N_mm: weights of every matmul (q,k,v,o, gate/up/down, lm_head), T: real tokens;
                                        k = 6 for full fine-tuning (fwd 2 + bwd 4), 4 for LoRA (frozen weights get no
                                        weight gradient; the adapters' own FLOPs, < 1%, are left out)
    attention= 6 * n_layers * d_q * sum_i L_i^2   (causal QK^T and AV, 2*L^2*d_q per layer forward, x3 for training;
                                        L_i the length of each real sequence: packed bins count per example)
MFU = FLOPs / time / 989.4e12 (H100 SXM bf16 dense peak); also vs the measured 8192^3 matmul ceiling.

Usage:
    python bench/bench_sft.py --suite gpu --out bench/results/sft.json        # on the H100 (runs each variant in a subprocess)
    python bench/bench_sft.py --suite cpu-smoke --out /tmp/sft_smoke.json     # tiny model on the CPU, checks the plumbing
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASSETS = ROOT / ".bench_assets"
H100_PEAK_BF16 = 989.4e12

# name, model, lora, per_device, grad_accum, packing, extra
GPU_SUITE = [
    # the seed's approach: one example per micro-batch, no packing, 16 accumulation steps (PAPER defaults)
    dict(name="1.5b-full seed bs1x16", model="qwen2.5-1.5b-instruct", per_device=1, grad_accum=16, warm=2, steps=6),
    dict(name="1.5b-full pad bs16", model="qwen2.5-1.5b-instruct", per_device=16, grad_accum=1, warm=3, steps=12),
    dict(name="1.5b-full pad bs32 group_by_length", model="qwen2.5-1.5b-instruct", per_device=32, grad_accum=1, warm=3,
         steps=12, args={"group_by_length": True}),
    dict(name="1.5b-full packed bs1x2048 (sdpa)", model="qwen2.5-1.5b-instruct", per_device=1, grad_accum=4, packing=True, warm=2, steps=6),
    dict(name="1.5b-full packed bs4x2048 (sdpa)", model="qwen2.5-1.5b-instruct", per_device=4, grad_accum=1, packing=True, warm=3, steps=12),
    dict(name="1.5b-full packed bs8x2048 (sdpa)", model="qwen2.5-1.5b-instruct", per_device=8, grad_accum=1, packing=True, warm=3, steps=10),
    dict(name="7b-lora seed bs1x16", model="qwen2.5-7b-instruct", lora=True, per_device=1, grad_accum=16, warm=1, steps=3),
    dict(name="7b-lora packed bs2x2048 (sdpa)", model="qwen2.5-7b-instruct", lora=True, per_device=2, grad_accum=2, packing=True, warm=2, steps=6),
    dict(name="7b-lora packed bs8x2048 gc (sdpa)", model="qwen2.5-7b-instruct", lora=True, per_device=8, grad_accum=1, packing=True,
         gc=True, warm=2, steps=5),
    dict(name="1.5b-full packed bs8x2048 (flex_attention)", model="qwen2.5-1.5b-instruct", per_device=8, grad_accum=1, packing=True,
         warm=3, steps=8, attn="flex_attention", timeout=150),
]

CPU_SUITE = [
    dict(name="tiny seed bs1x16", model="qwen2.5-1.5b-instruct", per_device=1, grad_accum=4, warm=1, steps=2, tiny=True),
    dict(name="tiny pad bs8 group_by_length", model="qwen2.5-1.5b-instruct", per_device=8, grad_accum=1, warm=1, steps=2, tiny=True,
         args={"group_by_length": True}),
    dict(name="tiny packed bs2x2048", model="qwen2.5-1.5b-instruct", per_device=2, grad_accum=1, packing=True, warm=1, steps=2, tiny=True),
    dict(name="tiny-lora packed bs2x2048", model="qwen2.5-7b-instruct", lora=True, per_device=2, grad_accum=1, packing=True, warm=1,
         steps=2, tiny=True),
]

TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)


def matmul_flops_per_token(cfg) -> int:
    """Weights of every matmul a token goes through (the embedding lookup is no matmul; a tied lm_head is)."""
    d, i, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * i
    return L * per_layer + V * d


def load_rows(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n]


# ------------------------------------------------------------------------------------------------------------------
# One variant (in its own process, so GPU memory starts clean)
# ------------------------------------------------------------------------------------------------------------------
def run_one(v: dict, data: Path) -> dict:
    import torch
    import transformers
    from transformers import AutoConfig, TrainerCallback

    from alice import sft

    cuda = torch.cuda.is_available()
    model_dir = ASSETS / v["model"]

    def fake_from_pretrained(cls, path, *a, **kw):  # random weights from the official config, built on the device
        cfg = AutoConfig.from_pretrained(path)
        if v.get("tiny"):
            for k, val in TINY.items():
                setattr(cfg, k, val)
        if v.get("attn"):
            cfg._attn_implementation = v["attn"]
        dtype = kw.get("dtype") or torch.float32
        with torch.device("cuda" if cuda else "cpu"):
            m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=v.get("attn") or "sdpa")
        return m

    transformers.AutoModelForCausalLM.from_pretrained = classmethod(fake_from_pretrained)

    steps_total = v["warm"] + v["steps"]
    micro = steps_total * v["per_device"] * v["grad_accum"]
    per_bin = 9 if v.get("packing") else 1  # ~9 gsm8k examples fill a 2048-token bin
    rows = load_rows(data, min(7473, int(micro * per_bin * 1.3) + 16))
    batch = sft.BatchSettings(v["per_device"], v["grad_accum"], 1, None, "bench", {"per_device": "bench", "grad_accum": "bench"})
    opts = sft.TrainOptions(
        epochs=1.0, max_steps=steps_total, packing=bool(v.get("packing")), lora=bool(v.get("lora")),
        gradient_checkpointing=bool(v.get("gc")), save_steps=10**9, logging_steps=1, bf16=cuda,
    )
    out_dir = Path("/tmp/bench_sft") / v["name"].replace(" ", "_").replace("(", "").replace(")", "")
    t_build = time.perf_counter()
    trainer = sft.build_trainer(str(model_dir), rows, out_dir, batch, opts)
    for k, val in (v.get("args") or {}).items():
        setattr(trainer.args, k, val)
    build_s = time.perf_counter() - t_build
    cfg = trainer.model.config if not v.get("lora") else trainer.model.base_model.model.config

    # count real tokens and sum(L_i^2) of every micro-batch, on the device (no host sync per step)
    counts: list = []
    orig_step = trainer.training_step

    def counting_step(model, inputs, *a, **kw):
        ids = inputs["input_ids"]
        if "attention_mask" in inputs:  # padded batch: one row per example
            lens = inputs["attention_mask"].sum(-1)
        elif "cu_seq_lens_q" in inputs:  # padding-free: one row, the collator's sequence boundaries
            lens = inputs["cu_seq_lens_q"].diff().to(ids.device, torch.int64)
        else:
            pos = inputs["position_ids"].reshape(-1)
            starts = torch.nonzero(pos == 0).reshape(-1)
            lens = torch.cat([starts, torch.tensor([pos.numel()], device=pos.device)]).diff()
        labels = inputs.get("labels")
        counts.append(torch.stack([lens.sum(), (lens.to(torch.float64) ** 2).sum().to(lens.dtype),
                                   (labels != -100).sum() if labels is not None else lens.sum(),
                                   torch.tensor(ids.numel(), device=ids.device)]))
        return orig_step(model, inputs, *a, **kw)

    trainer.training_step = counting_step

    marks = {}

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (v["warm"], steps_total):
                if cuda:
                    torch.cuda.synchronize()
                marks[state.global_step] = (time.perf_counter(), len(counts))
            return control

    trainer.add_callback(Timer())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, c0), (t1, c1) = marks[v["warm"]], marks[steps_total]
    window = torch.stack(counts[c0:c1]).sum(0).tolist()
    real, sq, completion, slots = (int(x) for x in window)
    dt = t1 - t0
    n_mm = matmul_flops_per_token(cfg)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_q = cfg.num_attention_heads * hd
    k = 4 if v.get("lora") else 6
    flops = k * n_mm * real + 6 * cfg.num_hidden_layers * d_q * sq
    if v.get("gc"):  # recomputed forward is overhead, not useful work: MFU counts the work above only
        pass
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    n_params = sum(p.numel() for p in trainer.model.parameters())
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        **{k_: v[k_] for k_ in v if k_ not in ("timeout",)},
        "timed_optimizer_steps": v["steps"], "micro_batches": c1 - c0, "seconds": dt,
        "real_tokens": real, "completion_tokens": completion, "token_slots_incl_padding": slots,
        "padding_fraction": 1 - real / slots if slots else 0.0,
        "tokens_per_s": real / dt, "s_per_optimizer_step": dt / v["steps"],
        "tokens_per_optimizer_step": real / v["steps"],
        "examples_per_optimizer_step": None,
        "flops": flops, "flops_linear_k": k, "matmul_weights": n_mm, "attn_sum_L2": sq,
        "tflops_per_s": flops / dt / 1e12, "mfu_vs_989": flops / dt / H100_PEAK_BF16,
        "params": n_params, "trainable_params": n_train,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "optim": str(trainer.args.optim), "attn_implementation": cfg._attn_implementation,
        "build_s": build_s, "prepared_rows": len(trainer.train_dataset),
    }


def matmul_ceiling() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    n = 8192
    sets = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]
    for a, b in sets:
        a @ b
    torch.cuda.synchronize()
    times = []
    for r in range(30):
        a, b = sets[r % 3]
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    med = times[len(times) // 2]
    return {"matmul_8192_bf16_tflops": 2 * n**3 / med / 1e12, "device_name": torch.cuda.get_device_name()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=("gpu", "cpu-smoke"), default="gpu")
    ap.add_argument("--only", default=None, help="comma-separated substrings of variant names")
    ap.add_argument("--data", default=str(ASSETS / "gsm8k_train_3000.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sft.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.one:
        res = run_one(json.loads(a.one), Path(a.data))
        Path(a.one_out).write_text(json.dumps(res, indent=1))
        return

    suite = GPU_SUITE if a.suite == "gpu" else CPU_SUITE
    if a.only:
        keys = a.only.split(",")
        suite = [v for v in suite if any(k in v["name"] for k in keys)]
    env_info = matmul_ceiling()
    results = []
    for v in suite:
        tmp = Path(f"/tmp/bench_sft_{len(results)}.json")
        tmp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", json.dumps(v), "--one-out", str(tmp), "--data", a.data]
        try:
            p = subprocess.run(cmd, timeout=v.get("timeout", 240), capture_output=True, text=True)
            ok = p.returncode == 0 and tmp.exists()
            if ok:
                res = json.loads(tmp.read_text())
            else:
                tail = (p.stdout + p.stderr)[-1500:]
                res = {"name": v["name"], "error": tail.strip().splitlines()[-1] if tail.strip() else f"rc {p.returncode}", "log_tail": tail}
        except subprocess.TimeoutExpired:
            res = {"name": v["name"], "error": f"timeout after {v.get('timeout', 240)}s"}
        res["wall_s"] = time.perf_counter() - t0
        results.append(res)
        summary = (f"{res['tokens_per_s']:.0f} tok/s, MFU {res['mfu_vs_989']:.1%}" if "error" not in res
                   else "ERROR " + res["error"])
        print(f"[bench_sft] {v['name']}: " + summary, flush=True)
        if "error" in res and "log_tail" in res:
            print(res["log_tail"], flush=True)

    # ratio against the seed approach of the same model
    for r in results:
        seed = next((s for s in results if "seed" in s["name"] and s.get("model") == r.get("model") and "error" not in s), None)
        if seed and "error" not in r:
            r["x_seed"] = r["tokens_per_s"] / seed["tokens_per_s"]
    ceiling = env_info.get("matmul_8192_bf16_tflops")
    out = {"date": time.strftime("%Y-%m-%d"), "env": env_info | _versions(), "h100_peak_bf16_tflops": H100_PEAK_BF16 / 1e12,
           "flops_formula": "k*N_mm*T_real + 6*n_layers*d_q*sum(L_i^2); k=6 full FT, 4 LoRA", "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))

    print(f"\ndevice: {env_info.get('device_name', 'cpu')}; matmul 8192^3 bf16: {ceiling or float('nan'):.0f} TFLOP/s; peak 989")
    hdr = (f"{'variant':44s} {'tok/s':>8s} {'x seed':>6s} {'s/step':>7s} {'tok/step':>8s} {'pad%':>5s} "
           f"{'TFLOP/s':>7s} {'MFU':>6s} {'MFU/ceil':>8s} {'mem GiB':>7s} {'loss':>11s}")
    print(hdr)
    for r in results:
        if "error" in r:
            print(f"{r['name']:44s} ERROR {r['error'][:100]}")
            continue
        mc = r["tflops_per_s"] / ceiling if ceiling else float("nan")
        mem = r["peak_mem_gib"] or 0
        print(f"{r['name']:44s} {r['tokens_per_s']:8.0f} {r.get('x_seed', float('nan')):6.2f} {r['s_per_optimizer_step']:7.3f} "
              f"{r['tokens_per_optimizer_step']:8.0f} {100 * r['padding_fraction']:5.1f} {r['tflops_per_s']:7.1f} {r['mfu_vs_989']:6.1%} "
              f"{mc:8.1%} {mem:7.1f} {r['loss_first']:5.2f}>{r['loss_last']:5.2f}")


def _versions() -> dict:
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import trl

        out["trl"] = trl.__version__
    except ImportError:
        pass
    return out


if __name__ == "__main__":
    main()
