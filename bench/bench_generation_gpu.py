"""Issue 13: generation speed with real weights, the shipped path beside the new ones, in one run.

Workloads (gsm8k through the project's own prompts and sampling settings):
  sampling   Alice's cluster stage: the 0.5B model, N samples per question (temperature 0.9, top-p 0.95) on the first
             questions of the gsm8k W2S part (issue 13: N=16, 1,000 questions; target >= 40,000 tok/s)
  eval       evaluation.py: the 1.5B model, greedy, on the gsm8k test split (issue 13: all 1,319 questions; target
             <= 30 s wall including the model load)

Paths (each (path, workload) runs in a fresh process, so "wall" holds the imports and the model load):
  shipped        hf backend as shipped before issue 13: generate() calls of 64 sequences, over chunks of 64 prompts
  hf-padded      hf backend, padded batches of --hf-batch-size sequences sorted by prompt length, one call
  hf-continuous  hf backend, transformers' continuous batching (model.generate_batch), the chunks generate_resumable
                 hands it (the new default of the hf backend on a GPU)
  vllm-eager     vLLM, enforce_eager=True (no CUDA graphs)
  vllm-graphs    vLLM with CUDA graphs (its default on a GPU; the project's default backend there)
  vllm-inproc    vLLM eager with its engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): no engine
                 process to spawn and import again (start-up)
  vllm-graphs-dp2  vllm-graphs over 2 GPUs through the project's --data-parallel-size 2 (generate_resumable: one
                 worker process and engine per GPU, questions dealt round-robin); its "load" is inside its generation
                 time, so compare it by tok/s over the wall ("tok/s wall")
A path named twice in --paths runs twice (the second as PATH#2), e.g. vllm-graphs twice: torch.compile's cache warm.
Modifiers after a vLLM path, joined by "+": ``+engine-seed`` (``--seeding engine``: the engine's one RNG instead of a
seed per request), ``+bsN`` (``--batch-size N``: vLLM's max_num_seqs), ``+epgK`` (``--engines-per-gpu K``: with a -dp2
path, K workers share each card, each given --gpu-memory-utilization / K) and ``+kvN`` (``--kv-cache-gib N``), e.g.
``vllm-graphs+engine-seed+bs512`` or ``vllm-graphs-dp2+engine-seed+epg2+kv40`` (two engines on one card);
``+dpN`` (``--data-parallel-size N``: N workers, e.g. ``vllm-graphs+dp4+epg4+kv16``, four engines on one card),
``+nocompile`` (``--no-torch-compile``: CUDA graphs of decode steps without torch.compile) and ``+inproc`` (the engine
core in this process, as vllm-inproc), e.g. ``vllm-graphs+nocompile+inproc`` (start-up).
vLLM paths are skipped (noted in the table) when vllm cannot be imported.

Roofline (decode bound by HBM bandwidth): at a concurrency of B sequences and a mean context of c tokens, one decode
step reads every weight once plus B KV caches, so
    roofline tok/s = B * BW / (W + B * kv * c)
with W = weight bytes (bf16; a tied embedding once), kv = KV bytes per token (layers * 2 * kv_heads * head_dim * 2),
c = mean prompt tokens + mean answer tokens / 2, B = min(sequences, --roofline-batch), BW = measured device-to-device
copy bandwidth (bytes read + written per second). "of roofline" = measured tok/s (generation time only) / roofline.
Tokens are counted by re-tokenizing the returned answers (stop tokens not counted), the same way for every path.

Usage (GPU, models from the HF cache by hub id):
    python bench/bench_generation_gpu.py --data-dir .gpu_data --out $OUT/generation_gpu.json
CPU smoke run (fixture or SmolLM2 models, tiny limits):
    python bench/bench_generation_gpu.py --sample-model M --eval-model M --limit 2 --n 2 --max-new-tokens 8 \\
        --paths shipped,hf-padded,hf-continuous --data-dir ../shared/offline/data --out /tmp/g.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("shipped", "hf-padded", "hf-continuous", "vllm-eager", "vllm-graphs", "vllm-inproc", "vllm-graphs-dp2")
WORKLOADS = ("sampling", "eval")
TARGETS = {"sampling": "tok/s >= 40,000", "eval": "wall incl. load <= 30 s"}


# ---- one (path, workload) in its own process -------------------------------------------------------------------------
def workload_items(a, workload: str) -> tuple[list[dict], "object"]:
    from alice import data as data_mod
    from alice import prompts
    from alice.alice_stages import TEMPERATURE, TOP_P
    from alice.generation import Sampling

    if workload == "sampling":
        rows = data_mod.load_subset("gsm8k", "w2s_part", a.data_dir)[: a.sample_questions]
        items = [{"id": r["id"], "messages": prompts.question_messages(r["question"]), "gold": r["gold"],
                  "question": r["question"]} for r in rows]
        return items, Sampling(temperature=TEMPERATURE, top_p=TOP_P, n=a.n, max_new_tokens=a.max_new_tokens, seed=0)
    rows = data_mod.load_test("gsm8k", a.data_dir)
    rows = rows[: a.eval_questions] if a.eval_questions else rows
    items = [{"id": r["id"], "messages": prompts.eval_messages("gsm8k", r["question"]), "gold": r["gold"],
              "question": r["question"]} for r in rows]
    return items, Sampling(temperature=0.0, max_new_tokens=a.max_new_tokens)


def modifiers(label: str) -> tuple[str, dict]:
    """``PATH+mod+...`` -> (PATH, Generator keyword arguments of the modifiers); ValueError for an unknown one."""
    path, *mods = label.split("#")[0].split("+")
    kw: dict = {}
    for m in mods:
        if m == "engine-seed":
            kw["seeding"] = "engine"
        elif m.startswith("bs") and m[2:].isdigit() and int(m[2:]) > 0:
            kw["batch_size"] = int(m[2:])
        elif m.startswith("epg") and m[3:].isdigit() and int(m[3:]) > 0:
            kw["engines_per_gpu"] = int(m[3:])
        elif m.startswith("kv") and m[2:].isdigit() and int(m[2:]) > 0:
            kw["kv_cache_gib"] = float(m[2:])
        elif m.startswith("dp") and m[2:].isdigit() and int(m[2:]) > 1:
            kw["data_parallel_size"] = int(m[2:])  # as the -dp2 path, with N workers (with +epgK: sharing cards)
        elif m == "nocompile":
            kw["torch_compile"] = False
        elif m == "inproc":
            kw["in_process"] = True  # not a Generator argument: run_one sets the environment for it
        else:
            raise ValueError(f"unknown modifier {m!r} of {label!r}: +engine-seed, +bsN, +epgK, +kvN, +dpN, "
                             "+nocompile or +inproc")
    if mods and not path.startswith("vllm"):
        raise ValueError(f"{label!r}: modifiers apply to the vllm paths only")
    return path, kw


def run_one(a, label: str, workload: str) -> dict:
    t_start = time.perf_counter()
    path, mod_kw = modifiers(label)
    from alice import grading
    from alice.generation import Generator

    items, sampling = workload_items(a, workload)
    if a.limit:
        items = items[: a.limit]
    model = a.sample_model if workload == "sampling" else a.eval_model
    kw = dict(backend="vllm" if path.startswith("vllm") else "hf")
    if path == "shipped":
        kw.update(hf_batching="padded", batch_size=64)
        chunk = 64
    elif path == "hf-padded":
        kw.update(hf_batching="padded", batch_size=a.hf_batch_size)
        chunk = len(items)
    elif path == "hf-continuous":
        kw.update(hf_batching="continuous")
        chunk = None
    else:
        kw.update(enforce_eager=path in ("vllm-eager", "vllm-inproc"), gpu_memory_utilization=a.gpu_memory_utilization)
        chunk = None
        if path == "vllm-inproc" or mod_kw.get("in_process"):
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if path.endswith("-dp2"):
            kw["data_parallel_size"] = 2
    if "engines_per_gpu" in mod_kw:  # K engines on one card: each its share of the memory
        kw["gpu_memory_utilization"] = a.gpu_memory_utilization / mod_kw["engines_per_gpu"]
    gen = Generator(model, **{**kw, **{k: v for k, v in mod_kw.items() if k != "in_process"}})  # +dpN over -dp2
    chunk = chunk or gen.default_chunk_size
    convs = [it["messages"] for it in items]
    texts: list[list[str]] = []
    if gen.data_parallel_size > 1:  # the workers load their own engines: load time is inside the generation time
        import tempfile

        from alice.generation import generate_resumable

        load_s, t1 = None, time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            got = generate_resumable(gen, [{"id": str(i), "messages": c} for i, c in enumerate(convs)], sampling,
                                     Path(d) / "out.jsonl", desc=f"{path} {workload}")
        texts = [got[str(i)] for i in range(len(convs))]
        gen_s = time.perf_counter() - t1
    else:
        t0 = time.perf_counter()
        gen._load()
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for c in range(0, len(convs), chunk):
            texts += gen.generate(convs[c : c + chunk], sampling, desc=f"{path} {workload}")
        gen_s = time.perf_counter() - t1
    tok = gen.tokenizer()
    answer_tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for ts in texts for t in ts]
    from alice.generation import chat_prompt_ids

    prompt_tokens = [len(chat_prompt_ids(tok, c)) for c in convs]
    correct = sum(grading.grade("gsm8k", t, it["gold"], it["question"]).correct for it, ts in zip(items, texts) for t in ts)
    hf_mode = gen.hf_batching if kw["backend"] == "hf" else None
    gen.close()
    n_tok = sum(answer_tokens)
    return {
        "path": label, "workload": workload, "model": model, "generator_settings": {**kw, **mod_kw}, "questions": len(items), "n": sampling.n,
        "max_new_tokens": sampling.max_new_tokens, "hf_batching_used": hf_mode, "chunk_prompts": chunk,
        "load_s": load_s, "gen_s": gen_s, "in_process_s": time.perf_counter() - t_start, "tokens": n_tok,
        "tokens_per_s": n_tok / max(gen_s, 1e-9), "sequences": len(answer_tokens),
        "mean_prompt_tokens": sum(prompt_tokens) / max(len(prompt_tokens), 1),
        "mean_answer_tokens": n_tok / max(len(answer_tokens), 1),
        "answers_at_cap": sum(t >= sampling.max_new_tokens for t in answer_tokens),
        "accuracy": correct / max(len(answer_tokens), 1),
        "texts": texts,
    }


# ---- the parent: bandwidth, runs, roofline, equality, table ------------------------------------------------------------
def copy_bandwidth() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device_name": "cpu"}
    n = 1 << 30
    src, dst = torch.randn(n, device="cuda", dtype=torch.bfloat16), torch.empty(n, device="cuda", dtype=torch.bfloat16)
    dst.copy_(src)
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return {"device_name": torch.cuda.get_device_name(), "copy_bw_rw_bytes_per_s": 2 * n * 2 / sorted(times)[5]}


def model_bytes(model: str) -> dict:
    """Weight bytes in bf16 (a tied embedding counted once) and KV bytes per token, from the model's config."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    h, i, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    hd = getattr(c, "head_dim", None) or h // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    bias = q + 2 * kv if getattr(c, "model_type", "") == "qwen2" else 0
    layer = h * q + 2 * h * kv + q * h + bias + 3 * h * i + 2 * h
    params = L * layer + v * h * (1 if getattr(c, "tie_word_embeddings", False) else 2) + h
    return {"weight_bytes": 2 * params, "kv_bytes_per_token": L * 2 * kv * 2, "params": params}


def roofline(r: dict, mb: dict, bw: float | None, max_batch: int) -> dict:
    if not bw:
        return {}
    b = min(r["sequences"], max_batch)
    ctx = r["mean_prompt_tokens"] + r["mean_answer_tokens"] / 2
    roof = b * bw / (mb["weight_bytes"] + b * mb["kv_bytes_per_token"] * ctx)
    return {"roofline_batch": b, "roofline_tokens_per_s": roof, "fraction_of_roofline": r["tokens_per_s"] / roof}


def vllm_importable() -> str | None:
    p = subprocess.run([sys.executable, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                       capture_output=True, text=True, timeout=300)
    return p.stdout.strip() if p.returncode == 0 else None



def _git_commit() -> str | None:
    from alice.fresh import git_commit  # imported when used, as the other alice modules here

    return git_commit(ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample-model", default="Qwen/Qwen2.5-Coder-0.5B-Instruct")
    ap.add_argument("--eval-model", default="Qwen/Qwen2.5-Coder-1.5B-Instruct")
    ap.add_argument("--data-dir", default=os.environ.get("ALICE_DATA_DIR"))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--skip", default="", help="comma list of PATH or PATH:WORKLOAD to leave out")
    ap.add_argument("--sample-questions", type=int, default=1000)
    ap.add_argument("--n", type=int, default=16, help="samples per question (sampling workload)")
    ap.add_argument("--eval-questions", type=int, default=0, help="0 = the whole test split (1,319)")
    ap.add_argument("--limit", type=int, default=None, help="cap the questions of every workload (quick runs)")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--hf-batch-size", type=int, default=256, help="hf-padded: sequences per generate() call")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM paths")
    ap.add_argument("--roofline-batch", type=int, default=256, help="B of the roofline (concurrent sequences)")
    ap.add_argument("--equal", type=int, default=64, help="greedy equality vs --equal-ref on the first N eval questions")
    ap.add_argument("--equal-ref", default="shipped", help="the eval path the others are compared with")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per (path, workload) process")
    ap.add_argument("--out", default=str(ROOT / "results" / "generation_gpu.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.one:
        path, workload = a.one.split(":")
        Path(a.one_out).write_text(json.dumps(run_one(a, path, workload)))
        return

    paths = [p for p in a.paths.split(",") if p]
    workloads = [w for w in a.workloads.split(",") if w]
    bad = [p for p in paths if p.split("#")[0].split("+")[0] not in PATHS] + [w for w in workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown path/workload {bad}; paths: {', '.join(PATHS)}; workloads: {', '.join(WORKLOADS)}")
    for p in paths:
        try:
            modifiers(p)
        except ValueError as e:
            ap.error(str(e))
    if a.data_dir and not Path(a.data_dir).is_dir():
        ap.error(f"--data-dir {a.data_dir} is not a folder; pass the offline data folder (shared/offline/data)")
    skip = {s for s in a.skip.split(",") if s}
    env = copy_bandwidth()
    env["vllm"] = vllm_importable() if any(p.startswith("vllm") for p in paths) else None
    import torch
    import transformers

    env.update(torch=torch.__version__, transformers=transformers.__version__)
    bw = env.get("copy_bw_rw_bytes_per_s")
    mbytes = {w: model_bytes(a.sample_model if w == "sampling" else a.eval_model) for w in workloads}
    results, notes = [], []
    passthrough = ["--sample-model", a.sample_model, "--eval-model", a.eval_model, "--sample-questions",
                   str(a.sample_questions), "--n", str(a.n), "--eval-questions", str(a.eval_questions),
                   "--max-new-tokens", str(a.max_new_tokens), "--hf-batch-size", str(a.hf_batch_size),
                   "--gpu-memory-utilization", str(a.gpu_memory_utilization)]
    passthrough += ["--data-dir", a.data_dir] if a.data_dir else []
    passthrough += ["--limit", str(a.limit)] if a.limit else []
    tmp = Path(a.out).with_suffix(".parts")
    tmp.mkdir(parents=True, exist_ok=True)
    for w in workloads:
        seen: dict[str, int] = {}
        for p in paths:
            if p in skip or f"{p}:{w}" in skip:
                continue
            seen[p] = seen.get(p, 0) + 1
            label = p if seen[p] == 1 else f"{p}#{seen[p]}"
            if p.startswith("vllm") and not env["vllm"]:
                notes.append(f"{p} {w}: skipped, vllm cannot be imported here")
                continue
            one = tmp / f"{label.replace('#', '_')}_{w}.json"
            one.unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--one", f"{p}:{w}", "--one-out", str(one)] + passthrough
            print(f"[bench] {label} {w} ...", flush=True)
            t0 = time.perf_counter()
            # its own process group: a timeout kills the vLLM engine process too, which would otherwise keep its
            # share of the card and fail every later path (seen on the H200)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=a.timeout)
                err = None if proc.returncode == 0 and one.exists() else out[-3000:]
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                err = f"timeout after {a.timeout}s"
            wall = time.perf_counter() - t0
            if out:  # the path's own output (vLLM's start-up phases: weights, compile, graph capture, KV cache)
                one.with_suffix(".log").write_text(out)
            if err:
                notes.append(f"{label} {w}: FAILED: {err.strip().splitlines()[-1] if err.strip() else '?'}")
                print(err, flush=True)
                continue
            r = json.loads(one.read_text())
            r["wall_s"] = wall
            r["path"] = label
            r["tokens_per_s_wall"] = r["tokens"] / wall
            r.update(roofline(r, mbytes[w], bw, a.roofline_batch))
            results.append(r)
            print(f"[bench] {label} {w}: {r['tokens_per_s']:.0f} tok/s, wall {wall:.1f}s (load {_f(r['load_s'])}s, "
                  f"generation {r['gen_s']:.1f}s), accuracy {r['accuracy']:.3f}", flush=True)

    # greedy equality of every eval path with the --equal-ref one, on the first --equal questions
    ref = next((r for r in results if r["workload"] == "eval" and r["path"] == a.equal_ref), None)
    for r in results:
        if ref is not None and r["workload"] == "eval":
            k = min(a.equal, len(ref["texts"]), len(r["texts"]))
            r["greedy_equal_to_ref"] = {"ref": a.equal_ref, "questions": k,
                                            "identical": sum(x == y for x, y in zip(ref["texts"][:k], r["texts"][:k]))}
    for r in results:
        r.pop("texts")
    out = {
        "date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "command": " ".join([Path(sys.executable).name] + sys.argv),
        "env": env, "model_bytes": mbytes, "targets": TARGETS, "results": results, "notes": notes,
        "roofline": "tok/s = B*BW/(W + B*kv*c): W weight bytes (bf16, tied embedding once), kv KV bytes/token, c mean "
                    "prompt + answer/2, B = min(sequences, --roofline-batch), BW measured copy bandwidth (r+w)",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"\ndevice: {env['device_name']}; copy bandwidth (read+write): {(bw or 0) / 1e12:.2f} TB/s; vllm: {env['vllm']}")
    print(f"{'workload':9s} {'path':16s} {'q x n':>9s} {'tok/s':>9s} {'tok/s wall':>10s} {'wall s':>7s} {'load s':>7s} "
          f"{'gen s':>7s} {'of roofline':>11s} {'acc':>6s} {'= ' + a.equal_ref:>9s}")
    for r in results:
        eq = r.get("greedy_equal_to_ref")
        eq_s = f"{eq['identical']}/{eq['questions']}" if eq else ""
        roof = r.get("fraction_of_roofline")
        roof_s = f"{roof:.1%}" if roof is not None else "n/a"
        print(f"{r['workload']:9s} {r['path']:16s} {r['questions']:>5d}x{r['n']:<3d} {r['tokens_per_s']:9.0f} "
              f"{r['tokens_per_s_wall']:10.0f} {r['wall_s']:7.1f} {_f(r['load_s']):>7s} {r['gen_s']:7.1f} "
              f"{roof_s:>11s} {r['accuracy']:6.3f} {eq_s:>9s}")
    print("targets: " + "; ".join(f"{w}: {t}" for w, t in TARGETS.items()))
    print("roofline: " + out["roofline"])
    for n in notes:
        print("note: " + n)
    print(f"wrote {a.out}")


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
