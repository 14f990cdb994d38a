"""Generation throughput of the project's ``hf`` backend (``alice.generation.Generator``), and the batch-1 roofline.

The model is the Qwen2.5-1.5B-Instruct architecture (official config) with random weights built on the GPU (the
bench replaces ``from_pretrained`` by ``from_config``); prompts are gsm8k questions through the real chat template.
Exactly ``--new-tokens`` tokens are generated per sequence: ``generation_config.min_new_tokens`` is set, which masks
the stop tokens until then (random weights would otherwise stop anywhere).

Variants (each in its own process):
  plain         the backend as it is (dynamic KV cache, eager)
  static+compile  opt-in of this bench only: ``generation_config.cache_implementation = "static"``, which makes
                transformers' generate compile the decode step (torch.compile, mode "reduce-overhead" = CUDA graphs)

Roofline at batch 1: bytes read per decode step (every weight once, bf16; the tied embedding once as lm_head; plus
the KV cache) over the measured device-to-device copy bandwidth (bytes read + written per second).

Usage:
    python bench/bench_generation.py --out bench/results/generation.json            # H100
    python bench/bench_generation.py --tiny --batches 1,2 --new-tokens 8 --out /tmp/gen_smoke.json   # CPU plumbing
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
REPEATS = int(__import__('os').environ.get('BENCH_GEN_REPEATS', '1'))
TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)


def copy_bandwidth() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    n = 1 << 30  # 2 GiB of bf16 per buffer
    src = [torch.randn(n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    dst = torch.empty_like(src[0])
    for s in src:
        dst.copy_(s)
    torch.cuda.synchronize()
    times = []
    for r in range(20):
        s_, e_ = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s_.record()
        dst.copy_(src[r % 2])
        e_.record()
        e_.synchronize()
        times.append(s_.elapsed_time(e_) / 1e3)
    times.sort()
    med = times[len(times) // 2]
    del src, dst
    torch.cuda.empty_cache()
    return {"copy_bw_rw_bytes_per_s": 2 * n * 2 / med, "device_name": torch.cuda.get_device_name()}


def run_variant(variant: str, batches: list[int], new_tokens: int, tiny: bool, data: Path, partial_out=None) -> list[dict]:
    import torch
    import transformers
    from transformers import AutoConfig

    from alice.generation import Generator, Sampling

    cuda = torch.cuda.is_available()

    def fake_from_pretrained(cls, path, *a, **kw):
        cfg = AutoConfig.from_pretrained(path)
        if tiny:
            for k, val in TINY.items():
                setattr(cfg, k, val)
        with torch.device("cuda" if cuda else "cpu"):
            return transformers.AutoModelForCausalLM.from_config(cfg, dtype=kw.get("dtype") or torch.float32)

    transformers.AutoModelForCausalLM.from_pretrained = classmethod(fake_from_pretrained)
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    gen = Generator(str(ASSETS / "qwen2.5-1.5b-instruct"), backend="hf")
    gen._load()
    model = gen._engine
    model.generation_config.min_new_tokens = new_tokens  # exactly new_tokens per sequence
    if variant == "static+compile":
        model.generation_config.cache_implementation = "static"
    n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_bytes_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * hd * 2
    sampling = Sampling(temperature=0.0, max_new_tokens=new_tokens)
    out = []
    for bs in batches:
        convs = [[{"role": "user", "content": r["question"]}] for r in rows[:bs]]
        gen.batch_size = bs
        counted = []
        orig = model.generate

        def counting_generate(*a, **kw):
            res = orig(*a, **kw)
            counted.append((kw["input_ids"].shape, res.shape))
            return res

        model.generate = counting_generate
        # warm-up at the same shapes (compiles / captures graphs for the static variant), then two timed calls
        t_w = time.perf_counter()
        gen.generate(convs, sampling, desc=f"warm bs{bs}")
        warm_s = time.perf_counter() - t_w
        times = []
        for _ in range(REPEATS):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            gen.generate(convs, sampling, desc=f"bs{bs}")
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        model.generate = orig
        (in_shape, out_shape) = counted[-1]
        made = out_shape[1] - in_shape[1]
        assert made == new_tokens, f"generated {made} tokens, wanted {new_tokens}"
        dt = min(times)
        prompt_len = in_shape[1]
        ctx = prompt_len + new_tokens / 2  # mean context over the decode
        out.append({
            "variant": variant, "batch": bs, "new_tokens": new_tokens, "prompt_len_padded": prompt_len,
            "seconds": dt, "seconds_all": times, "warmup_s": warm_s, "tokens_per_s": bs * new_tokens / dt,
            "ms_per_step": 1e3 * dt / new_tokens, "params": n_params, "weight_bytes": weight_bytes,
            "bytes_per_step": weight_bytes + bs * kv_bytes_per_token * ctx,
        })
        print(f"[bench_generation] {variant} bs{bs}: {out[-1]['tokens_per_s']:.0f} tok/s, {out[-1]['ms_per_step']:.2f} ms/step "
              f"(warm-up {warm_s:.0f}s)", flush=True)
        if partial_out:
            Path(partial_out).write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="static+compile,plain")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--compile-batches", default="1,64", help="batches for the static+compile variant")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--data", default=str(ASSETS / "gsm8k_train_3000.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generation.json"))
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.one:
        v, bs = a.one.split(":")
        res = run_variant(v, [int(x) for x in bs.split(",")], a.new_tokens, a.tiny, Path(a.data), a.one_out)
        Path(a.one_out).write_text(json.dumps(res))
        return

    env = copy_bandwidth()
    results, errors = [], []
    for v in a.variants.split(","):
        batches = a.compile_batches if v == "static+compile" else a.batches
        tmp = Path(f"/tmp/bench_gen_{v.replace('+', '_')}.json")
        tmp.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--one", f"{v}:{batches}", "--one-out", str(tmp), "--new-tokens", str(a.new_tokens),
               "--data", a.data] + (["--tiny"] if a.tiny else [])
        try:
            p = subprocess.run(cmd, timeout=a.timeout if v != "plain" else 240, capture_output=True, text=True)
            print("\n".join(ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("[bench_generation]")),
                  flush=True)
            if p.returncode == 0 and tmp.exists():
                results += json.loads(tmp.read_text())
            else:
                errors.append({"variant": v, "error": (p.stdout + p.stderr)[-2000:]})
                print(errors[-1]["error"], flush=True)
        except subprocess.TimeoutExpired as e:
            errors.append({"variant": v, "error": f"timeout after {a.timeout}s"})
            if tmp.exists():
                results += json.loads(tmp.read_text())
            partial = (e.stdout or b"")[-1500:] if isinstance(e.stdout, bytes) else e.stdout
            print(f"[bench_generation] {v}: timeout; partial output:\n{partial}", flush=True)

    bw = env.get("copy_bw_rw_bytes_per_s")
    for r in results:
        if bw:
            r["roofline_tokens_per_s"] = r["batch"] / (r["bytes_per_step"] / bw)
            r["fraction_of_roofline"] = r["tokens_per_s"] / r["roofline_tokens_per_s"]
    out = {"date": time.strftime("%Y-%m-%d"), "env": env, "results": results, "errors": errors,
           "roofline": "bytes/step = all weights (bf16, tied embedding once) + batch*KV bytes at mean context; / copy bandwidth (r+w)"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"\ndevice: {env.get('device_name', 'cpu')}; copy bandwidth (read+write): {(bw or 0) / 1e12:.2f} TB/s")
    print(f"{'variant':16s} {'batch':>5s} {'tok/s':>9s} {'ms/step':>8s} {'roofline tok/s':>14s} {'of roofline':>11s} {'warm-up s':>9s}")
    for r in results:
        print(f"{r['variant']:16s} {r['batch']:5d} {r['tokens_per_s']:9.0f} {r['ms_per_step']:8.2f} "
              f"{r.get('roofline_tokens_per_s', float('nan')):14.0f} {r.get('fraction_of_roofline', float('nan')):11.1%} {r['warmup_s']:9.1f}")
    for e in errors:
        print(f"{e['variant']}: ERROR {e['error'].strip().splitlines()[-1] if e['error'].strip() else ''}")


if __name__ == "__main__":
    main()
