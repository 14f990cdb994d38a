"""The generation layer on the hf backend with tiny fixture models (the vLLM path: test_vllm_backend.py)."""

import json

import pytest

from alice import generation
from alice.generation import Generator, Sampling, cache_path, clear_resumable, generate_resumable, stop_token_ids


def convs(k=6):
    return [[{"role": "user", "content": f"What is {i} + {3 * i}? Natalia sold clips. " * (1 + i % 3)}] for i in range(k)]


def test_backend_resolution(monkeypatch):
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: False)
    assert generation.resolve_backend("auto") == "hf"
    assert generation.resolve_backend("hf") == "hf"
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: True)
    monkeypatch.setattr(generation.common, "vllm_available", lambda: True)
    assert generation.resolve_backend("auto") == "vllm"
    monkeypatch.setattr(generation.common, "vllm_available", lambda: False)
    assert generation.resolve_backend("auto") == "hf"
    with pytest.raises(generation.GenerationError, match="--backend hf"):
        generation.resolve_backend("vllm")
    with pytest.raises(generation.GenerationError):
        generation.resolve_backend("tgi")


def test_from_options_and_lazy_load(spiky):
    import argparse

    from alice.cli import add_generation_args, generation_options

    p = argparse.ArgumentParser()
    add_generation_args(p)
    g = Generator.from_options(spiky, generation_options(p.parse_args(["--backend", "hf", "--batch-size", "3"])))
    assert (g.backend, g.batch_size, g.loaded) == ("hf", 3, False)
    opts = generation_options(p.parse_args(["--max-new-tokens", "7"]))
    assert generation.Sampling.from_options(opts, temperature=0.7).max_new_tokens == 7


def test_stop_tokens(tiny_models):
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"]))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = stop_token_ids(tok, GenerationConfig(eos_token_id=[im_end, tok.pad_token_id]))
    assert ids == [im_end, tok.pad_token_id]


def test_greedy_is_batch_independent_and_ordered(spiky):
    s = Sampling(max_new_tokens=12)
    a = Generator(spiky, backend="hf", batch_size=4).generate(convs(), s)
    b = Generator(spiky, backend="hf", batch_size=1).generate(convs()[::-1], s)[::-1]
    assert a == b
    assert all(len(x) == 1 and x[0] for x in a)
    assert len({x[0] for x in a}) > 1  # different prompts, different texts: order is kept, not shuffled


def test_sampling_n_seeded_and_capped(spiky, monkeypatch):
    lengths = []
    until_stop = generation.hf._until_stop
    monkeypatch.setattr(generation.hf, "_until_stop", lambda ids, stop: lengths.append(len(until_stop(ids, stop))) or until_stop(ids, stop))
    g = Generator(spiky, backend="hf", batch_size=5)
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=10, n=3, seed=1)
    a = g.generate(convs(3), s)
    assert [len(x) for x in a] == [3, 3, 3]
    assert g.generate(convs(3), s) == a  # seeded
    assert len(set(a[0])) > 1  # samples differ
    assert len(lengths) == 18 and max(lengths) <= 10  # max_new_tokens holds
    assert g.generate(convs(3), Sampling(temperature=1.0, max_new_tokens=10, n=3, seed=2)) != a
    g.close()
    assert not g.loaded


@pytest.mark.slow
def test_hf_sampling_is_seeded_per_row(spiky):
    """Padded batching samples each (prompt, k) from its own seeded stream: the same texts whatever the batch size,
    the order or the other prompts of the call (what makes resumed and data-parallel runs equal to one run)."""
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=12, n=3, seed=1)
    a = Generator(spiky, backend="hf", batch_size=5, hf_batching="padded").generate(convs(), s)
    b = Generator(spiky, backend="hf", batch_size=1, hf_batching="padded").generate(convs()[::-1], s)[::-1]
    assert a == b
    alone = Generator(spiky, backend="hf", batch_size=7, hf_batching="padded")
    assert [alone.generate([c], s)[0] for c in convs()[:2]] == a[:2]
    assert generation.row_seed(1, [5, 6], 0) != generation.row_seed(1, [5, 6], 1) != generation.row_seed(2, [5, 6], 1)


def test_stops_at_end_of_turn(spiky, monkeypatch):
    """Generation stops at any stop token, which is not part of the returned text."""
    seen = []
    until_stop = generation.hf._until_stop
    monkeypatch.setattr(generation.hf, "_until_stop", lambda ids, stop: seen.append(until_stop(ids, stop)) or until_stop(ids, stop))
    g = Generator(spiky, backend="hf")
    conv = convs(1)
    g.generate(conv, Sampling(max_new_tokens=12))
    ids = seen[-1]
    j = next(j for j in range(1, len(ids)) if ids[j] not in ids[:j])  # a token that first appears at position j
    g._stop = g._stop + [ids[j]]
    assert g.generate(conv, Sampling(max_new_tokens=12)) == [[g.tokenizer().decode(ids[:j], skip_special_tokens=True)]]
    assert seen[-1] == ids[: j + 1]


class Boom(Generator):
    def generate(self, *a, **kw):
        raise AssertionError("nothing should be generated")


@pytest.mark.slow
def test_generate_resumable(spiky, tmp_path):
    items = [{"id": f"q{i}", "messages": m} for i, m in enumerate(convs(5))]
    out = tmp_path / "stage.jsonl"
    s = Sampling(temperature=0.8, max_new_tokens=8, n=2)
    g = Generator(spiky, backend="hf", batch_size=4)
    first = generate_resumable(g, items, s, out, chunk_size=2)
    assert list(first) == [it["id"] for it in items] and all(len(v) == 2 for v in first.values())
    partial = cache_path(out).with_name(cache_path(out).name + ".partial")
    rows = [json.loads(line) for line in partial.read_text().splitlines()]
    assert len(rows) == 10 and {(r["id"], r["k"]) for r in rows} == {(f"q{i}", k) for i in range(5) for k in range(2)}

    # all done: nothing is generated, the model is never loaded
    lazy = Boom(spiky, backend="hf")
    assert generate_resumable(lazy, items, s, out) == first and not lazy.loaded

    # a killed run: the last 3 rows lost, the one before half written -> only the missing ones are made
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:6]) + "\n" + lines[6][:15])
    calls = []

    class Counting(Generator):
        def generate(self, conversations, sampling, desc="generating"):
            calls.append(len(conversations))
            return super().generate(conversations, sampling, desc)

    again = generate_resumable(Counting(spiky, backend="hf"), items, s, out, chunk_size=64)
    assert calls == [2]  # q3 and q4
    assert {k: v for k, v in again.items() if k in ("q0", "q1", "q2")} == {k: first[k] for k in ("q0", "q1", "q2")}
    keys = []
    for line in partial.read_text().splitlines():
        try:
            keys.append((json.loads(line)["id"], json.loads(line)["k"]))
        except json.JSONDecodeError:
            assert line == lines[6][:15]  # the half line of the killed run, skipped
    assert len(keys) == len(set(keys)) == 10  # nothing duplicated

    # other sampling settings are generated anew, not read from the checkpoint
    calls.clear()
    generate_resumable(Counting(spiky, backend="hf"), items[:2], Sampling(max_new_tokens=8), out)
    assert calls == [2]

    # a model retrained at the same path (other weights in its file) makes the checkpoint's texts stale; the same
    # weights touched (or copied) do not: the checkpoint is keyed by their content
    import os
    import shutil
    import time

    from safetensors.torch import load_file, save_file

    m = tmp_path / "model"
    shutil.copytree(spiky, m)
    generate_resumable(Counting(m, backend="hf"), items, s, out)
    weights = next(m.glob("*.safetensors"))
    t = time.time() + 5
    os.utime(weights, (t, t))
    calls.clear()
    generate_resumable(Counting(m, backend="hf"), items, s, out)
    assert calls == []
    save_file({k: v * 1.01 for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    generate_resumable(Counting(m, backend="hf"), items, s, out)
    assert calls == [5]
    clear_resumable(out)
    assert not partial.exists()


def _record_generate_calls(g):
    """Load ``g`` and record the (batch, padded prompt length) of every hf ``generate`` call."""
    g._load()
    calls, orig = [], g._engine.generate

    def recording(*a, **kw):
        calls.append(tuple(kw["input_ids"].shape))
        return orig(*a, **kw)

    g._engine.generate = recording
    return calls


@pytest.mark.slow
def test_padded_batches_honour_batch_size_sorted_by_length(spiky):
    """Padded batching: generate() calls of exactly --batch-size sequences (n samples count), longest prompts first;
    results in input order whatever the batch size."""
    g = Generator(spiky, backend="hf", batch_size=4, hf_batching="padded")
    calls = _record_generate_calls(g)
    s = Sampling(max_new_tokens=6)
    out = g.generate(convs(6), s)
    assert [b for b, _ in calls] == [4, 2]
    assert [length for _, length in calls] == sorted((length for _, length in calls), reverse=True)
    calls.clear()
    g.generate(convs(3), Sampling(temperature=1.0, max_new_tokens=4, n=3))
    assert [b for b, _ in calls] == [4, 4, 1]
    one = Generator(spiky, backend="hf", batch_size=1, hf_batching="padded")
    assert [one.generate([c], s)[0] for c in convs(6)] == out  # batched greedy == unbatched greedy, in input order


@pytest.mark.slow
def test_continuous_batching_greedy_and_n_samples(spiky):
    """transformers' continuous batching: greedy equals padded batches, n seeded samples per prompt in input order."""
    cb = Generator(spiky, backend="hf", hf_batching="continuous", batch_size=3)
    padded = Generator(spiky, backend="hf", hf_batching="padded", batch_size=4)
    s = Sampling(max_new_tokens=12)
    a = cb.generate(convs(6), s)
    assert cb.hf_batching == "continuous"  # no fallback happened
    assert a == padded.generate(convs(6), s)
    assert len({x[0] for x in a}) > 1
    assert cb._cb_config([[1, 2]], s).max_requests_per_batch == 3  # --batch-size caps requests per step

    smp = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=10, n=3, seed=1)
    x = cb.generate(convs(3), smp)
    assert [len(v) for v in x] == [3, 3, 3] and len(set(x[0])) > 1
    assert cb.generate(convs(3), smp) == x  # seeded
    assert cb.generate(convs(3), Sampling(temperature=1.0, top_p=0.95, max_new_tokens=10, n=3, seed=2)) != x
    assert cb.generate(convs(3)[::-1], s) == a[:3][::-1]  # input order
    assert cb.hf_batching == "continuous"


def test_continuous_batching_falls_back_to_padded(spiky, capsys):
    g = Generator(spiky, backend="hf", hf_batching="continuous", batch_size=4)
    g._load()

    def broken(*a, **kw):
        raise RuntimeError("no paged attention here")

    g._engine.generate_batch = broken
    s = Sampling(max_new_tokens=8)
    out = g.generate(convs(4), s)
    assert g.hf_batching == "padded" and "falling back to padded" in capsys.readouterr().out
    assert out == Generator(spiky, backend="hf", hf_batching="padded", batch_size=2).generate(convs(4), s)


def test_hf_batching_defaults(spiky, monkeypatch):
    g = Generator(spiky, backend="hf", batch_size=100)
    assert g.hf_batching == "auto"
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: True)
    assert g.default_chunk_size == generation.CB_CHUNK  # continuous batching on a GPU: many requests in flight
    monkeypatch.setattr(generation.common, "_cuda_available", lambda: False)
    assert g.default_chunk_size == 100  # padded on a CPU: at least one whole --batch-size batch
    g._load()
    assert g.hf_batching == "padded"  # CPU: padded batches by default
    with pytest.raises(generation.GenerationError, match="hf batching"):
        Generator(spiky, backend="hf", hf_batching="paged")
    with pytest.raises(generation.GenerationError, match="--batch-size"):
        Generator(spiky, backend="hf", batch_size=0)


def test_static_cache_option(spiky):
    """--hf-static-cache: a static KV cache (compiled decode) with prompts padded to a multiple of 64; same greedy text."""
    g = Generator(spiky, backend="hf", hf_batching="padded", batch_size=4, static_cache=True)
    calls = _record_generate_calls(g)
    assert g._engine.generation_config.cache_implementation == "static"
    s = Sampling(max_new_tokens=6)
    out = g.generate(convs(2), s)
    assert all(length % 64 == 0 for _, length in calls)
    assert out == Generator(spiky, backend="hf", hf_batching="padded", batch_size=4).generate(convs(2), s)

@pytest.mark.slow
def test_engine_pool_reuses_one_engine_per_model(spiky, tiny_models, tmp_path, capsys):
    import shutil

    s = Sampling(max_new_tokens=10)
    alone = Generator(spiky, backend="hf").generate(convs(3), s)
    with generation.engine_pool():
        with Generator(spiky, backend="hf") as g1:
            first = g1.generate(convs(3), s)
            engine = g1._engine
        assert not g1.loaded and generation.pooled_keys() == [g1.pool_key()]  # kept, not freed
        with Generator(spiky, backend="hf") as g2:
            assert g2.generate(convs(3), s) == first == alone  # same engine, same greedy text
            assert g2._engine is engine and g2.batch_size == g1.batch_size
        # another engine setting is another key: it loads its own engine (and frees the pooled one first)
        with Generator(spiky, backend="hf", dtype="bfloat16") as g3:
            g3.generate(convs(1), s)
            assert g3._engine is not engine and generation.pooled_keys() == []
        # a folder trained again at the same path (new weight files) is loaded anew, never served stale
        folder = tmp_path / "m"
        shutil.copytree(tiny_models["qwen_small"], folder)
        with Generator(str(folder), backend="hf") as g4:
            g4.generate(convs(1), s)
            old = g4._engine
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(spiky).save_pretrained(str(folder))
        with Generator(str(folder), backend="hf") as g5:
            assert g5.generate(convs(3), s) == alone  # the new weights (spiky's), not the old engine's
            assert g5._engine is not old
        assert len(generation.pooled_keys()) == 1
        assert generation.free_pooled() == 1 and generation.pooled_keys() == []
    out = capsys.readouterr().out
    assert out.count("reusing the loaded engine") == 1
    # outside a pool, close() frees the engine and nothing is kept
    with Generator(spiky, backend="hf") as g:
        g.generate(convs(1), s)
    assert generation.pool._POOL is None and not g.loaded


def test_engine_pool_frees_everything_on_exit_even_after_an_error(spiky):
    with pytest.raises(RuntimeError):
        with generation.engine_pool(size=2):
            with Generator(spiky, backend="hf") as g:
                g.generate(convs(1), Sampling(max_new_tokens=4))
            with generation.engine_pool():  # nested: joins the outer pool
                assert generation.pooled_keys() == [g.pool_key()]
            assert generation.pooled_keys() == [g.pool_key()]
            raise RuntimeError("a step failed")
    assert generation.pool._POOL is None and generation.pooled_keys() == []
