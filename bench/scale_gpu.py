"""Real-shape capacity figures on one GPU, no weights needed (issue 26): what the memory plan picks for the paper's
students on this card and whether one training step then runs, and the 70B-class summarizer's load and tokens/s.

    python bench/scale_gpu.py --config bench/configs/scale_gpu.yaml --out results/scale_gpu.json   # on the GPU
    python bench/scale_gpu.py --train Qwen/Qwen2.5-7B-Instruct --tokens 1024 --no-vllm              # one model

Training: a model of the committed real shape (``alice/shapes/``) with random weights, built on the GPU, trained by the
project's own trainer (``alice.sft.build_trainer``: fp32 master weights, bf16 autocast, AdamW) for ``--steps``
optimizer steps on synthetic rows of ``--tokens`` tokens, at the plan's micro-batch x accumulation and checkpointing
(``alice.plan.plan_training`` for this card). Per case: the plan (or its refusal), the estimate against the measured
peak (``torch.cuda.max_memory_allocated``), step time, tokens/s and MFU (6 x parameters x tokens / time / the card's
dense bf16 peak). ``--force`` also runs what the plan refuses, to check the refusal (expect an out-of-memory error).

Generation: vLLM with dummy weights (``load_format="dummy"``) of a committed shape, tokenizer-free (random prompt token
ids), e.g. Llama-3-70B in FP8 on one H200: load seconds and generated tokens/s for ``--prompts`` prompts of
``--prompt-tokens`` tokens, ``--new-tokens`` each (EOS ignored: random weights never stop).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import fresh  # noqa: E402
from alice import plan as P  # noqa: E402
from alice.jsonl import replace_run  # noqa: E402
from alice.stages import common as stage_common  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM


def _device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"name": "cpu"}
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / P.GIB, 1)}


def _peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _rows(n: int, tokens: int, tokenizer) -> list[dict]:
    """``n`` rows whose chat-formatted text is about ``tokens`` tokens long (each a different question)."""
    filler = " ".join(["alpha beta gamma delta"] * (tokens // 4))
    ids = tokenizer(filler)["input_ids"][: max(tokens - 40, 8)]
    body = tokenizer.decode(ids)
    return [{"question": f"Question {i}: sum the words.", "answer": f"{body} #### {i}"} for i in range(n)]


def _chat_tokens(tok, row: dict) -> int:
    """The number of tokens of ``row`` as a chat (transformers 5's apply_chat_template returns a mapping)."""
    ids = tok.apply_chat_template([{"role": "user", "content": row["question"]},
                                   {"role": "assistant", "content": row["answer"]}], tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def train_case(model_id: str, tokens: int, steps: int, lora: bool, tokenizer_id: str, force: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alice import sft
    from alice.sft_config import BatchSettings, TrainOptions

    hw = P.detect_hardware()
    case = {"model": model_id, "lora": lora, "tokens": tokens, "hardware": hw.describe(),
            "params": P.shape(model_id).params}
    try:
        plan = P.plan_training(model_id, lora=lora, effective_batch=16, tokens=tokens, hw=hw)
        case["plan"] = plan.to_dict()
    except P.PlanError as e:
        case["plan_refused"] = str(e)
        if not force:
            return case
        plan = P.TrainPlan(model_id, lora, hw.describe(), 1, "single", 1, 16, True, tokens, 16,
                           round(P.gpu_bytes(P.training_memory(P.shape(model_id), strategy="single", gpus=1,
                                                               micro_batch=1, tokens=tokens, checkpointing=True,
                                                               lora=lora)) / P.GIB, 1), 0.0, note="forced")
        case["forced"] = plan.to_dict()
    if plan.gpus > 1:
        case["skipped"] = "the plan needs several GPUs (run on a multi-GPU machine)"
        return case
    tok = AutoTokenizer.from_pretrained(tokenizer_id)
    cfg = P.load_config(model_id)
    cuda = torch.cuda.is_available()  # no GPU: the same code path on the CPU (a smoke run of this script, no figures)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak_gib = (lambda f: round(f() / P.GIB, 2)) if cuda else (lambda f: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if lora else torch.float32)
    case["build_s"] = round(time.time() - t0, 1)
    rows = _rows(16 * (steps + 1), tokens, tok)
    opts = TrainOptions(max_steps=steps + 1, lora=lora, gradient_checkpointing=plan.gradient_checkpointing,
                        save_steps=10**6, logging_steps=1, memory_plan=False)
    batch = BatchSettings(plan.per_device, plan.grad_accum, 1, None, "bench", {"per_device": "plan", "grad_accum": "plan"})
    out = Path(tempfile.mkdtemp(prefix="scale_gpu_"))
    times = []
    try:
        trainer = sft.build_trainer(model_id, rows, out, batch, opts, model=model, tokenizer=tok)
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sync()
                self.t = time.time()

            def on_step_end(self, args, state, control, **kw):
                sync()
                times.append(time.time() - self.t)

        trainer.add_callback(Clock())
        trainer.train()
        step_s = min(times[1:]) if len(times) > 1 else times[0]  # the first step pays the optimizer's allocation
        real_tokens = sum(min(_chat_tokens(tok, r), tokens) for r in rows[:16])
        peak = _peak_tflops(_device()["name"])
        trained = P.shape(model_id).lora_params() if lora else P.shape(model_id).params
        flops = (6 if not lora else 4) * P.shape(model_id).params * real_tokens  # LoRA: no weight gradients of the base
        case.update(ran=True, step_s=round(step_s, 3), step_times_s=[round(t, 3) for t in times],
                    tokens_per_s=round(real_tokens / step_s), trained_params=trained,
                    peak_allocated_gib=peak_gib(torch.cuda.max_memory_allocated),
                    peak_reserved_gib=peak_gib(torch.cuda.max_memory_reserved),
                    mfu=round(flops / step_s / (peak * 1e12), 3) if peak else None)
    except Exception as e:  # noqa: BLE001 - an OOM (or any failure) is this case's figure
        case.update(ran=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                    peak_allocated_gib=peak_gib(torch.cuda.max_memory_allocated))
    finally:
        trainer = model = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    est = (case.get("plan") or case.get("forced") or {}).get("estimate_gib")
    if est and case.get("peak_allocated_gib") and case.get("ran"):
        case["estimate_over_measured"] = round(est / case["peak_allocated_gib"], 2)
    return case


def generate_case(model_id: str, quantization: str | None, prompts: int, prompt_tokens: int, new_tokens: int,
                  utilization: float, force: bool = False) -> dict:
    import random

    hw = P.detect_hardware()
    case = {"model": model_id, "quantization": quantization, "hardware": hw.describe(), "prompts": prompts,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "params": P.shape(model_id).params}
    try:
        case["plan"] = P.plan_generation(model_id, hw, max_tokens=prompt_tokens + new_tokens, sequences=prompts,
                                         quantization=quantization).to_dict()
    except P.PlanError as e:
        case["plan_refused"] = str(e)
        if not force:
            return case
        case["forced"] = True  # run anyway: does the refusal hold on the card?
    from alice.generation.vllm_engine import cuda_engine_env

    cuda_engine_env()
    from vllm import LLM, SamplingParams  # after the plan: a refused case needs no vLLM
    from vllm.inputs import TokensPrompt

    folder = Path(tempfile.mkdtemp(prefix="shape_"))
    cfg = json.loads(P.shape_file(model_id).read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, architectures=cfg["architectures"])))
    t0 = time.time()
    llm = LLM(model=str(folder), load_format="dummy", skip_tokenizer_init=True, quantization=quantization,
              gpu_memory_utilization=utilization, max_model_len=prompt_tokens + new_tokens, seed=0,
              compilation_config={"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})
    case["load_s"] = round(time.time() - t0, 1)
    rng = random.Random(0)
    vocab = cfg["vocab_size"]
    reqs = [TokensPrompt(prompt_token_ids=[rng.randrange(1000, vocab - 1000) for _ in range(prompt_tokens)])
            for _ in range(prompts)]
    sp = SamplingParams(temperature=1.0, max_tokens=new_tokens, ignore_eos=True, detokenize=False)
    t0 = time.time()
    outs = llm.generate(reqs, sp, use_tqdm=False)
    dt = time.time() - t0
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    case.update(generate_s=round(dt, 1), generated_tokens=n, tokens_per_s=round(n / dt))
    cache = llm.llm_engine.vllm_config.cache_config
    try:
        case["kv_cache_gib"] = round(cache.kv_cache_memory_bytes / P.GIB, 1)
    except (AttributeError, TypeError):
        pass
    if getattr(cache, "num_gpu_blocks", None):  # the KV cache in tokens (vLLM logs it as "GPU KV cache size")
        case["kv_cache_tokens"] = cache.num_gpu_blocks * cache.block_size
    return case


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="a YAML file with the cases (bench/configs/scale_gpu.yaml)")
    p.add_argument("--train", nargs="*", default=None, help="models to train one step (hub ids with a committed shape)")
    p.add_argument("--lora", nargs="*", default=None, help="models to train with LoRA")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--tokenizer", default="Qwen/Qwen2.5-Coder-0.5B-Instruct", help="a Qwen-vocabulary chat tokenizer")
    p.add_argument("--force", action="store_true", help="also run what the plan refuses")
    p.add_argument("--generate", nargs="*", default=None, help="models to generate with (vLLM dummy weights)")
    p.add_argument("--quantization", default=None)
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=1024)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    p.add_argument("--no-vllm", action="store_true")
    p.add_argument("--out", default=None)
    a = stage_common.parse_args(p, argv)  # a --config file's values are defaults: a flag given overrides them
    res = {"command": "python bench/scale_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "commit": fresh.git_commit(ROOT), "device": _device(), "training": [], "generation": []}

    def done(kind: str, case: dict) -> None:  # the file is written after every case: a later case's crash keeps these
        res[kind].append(case)
        print(json.dumps(case), flush=True)
        if a.out:  # one run per card: an H100's beside an H200's
            replace_run(a.out, res, key=lambda r: r.get("device", {}).get("name"))

    for m in a.train or []:
        done("training", train_case(m, a.tokens, a.steps, False, a.tokenizer, a.force))
    for m in a.lora or []:
        done("training", train_case(m, a.tokens, a.steps, True, a.tokenizer, a.force))
    for m in ([] if a.no_vllm else a.generate or []):
        try:
            case = generate_case(m, a.quantization, a.prompts, a.prompt_tokens, a.new_tokens, a.gpu_memory_utilization,
                                 a.force)
        except Exception as e:  # noqa: BLE001 - a failed engine start (an OOM, a missing wheel) is this case's figure
            case = {"model": m, "quantization": a.quantization, "ran": False,
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        done("generation", case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
