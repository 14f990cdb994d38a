"""--jobs on a shared card (alice.schedule): steps hold their share of the GPU's memory, a training step is told its
share, and a step that ran out of GPU memory beside another runs once more alone (never a lone one again)."""

from __future__ import annotations

import pytest

from alice import pipeline, plan, schedule
from alice.hardware import BUDGET_ENV, Hardware


def _fake(tmp_path):
    """A stand-in interpreter: its last three arguments are the step, seconds and exit status. It logs start/end
    times and the memory environment it got; a step named oom* fails like a CUDA OOM on its first attempt."""
    fake = tmp_path / "fake_python"
    times, env = tmp_path / "times.txt", tmp_path / "env.txt"
    fake.write_text(f"""#!/bin/sh
while [ $# -gt 3 ]; do shift; done
echo "start $1 $(date +%s.%N)" >> {times}
echo "$1 ${{{BUDGET_ENV}:-none}} ${{PYTORCH_CUDA_ALLOC_CONF:-none}}" >> {env}
sleep $2
echo "end $1 $(date +%s.%N)" >> {times}
case "$1" in oom*) if [ ! -f {tmp_path}/$1.tried ] || [ "$1" = oom_always ]; then touch {tmp_path}/$1.tried
  echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 560.00 MiB."; exit 1; fi;; esac
exit $3
""")
    fake.chmod(0o755)

    def step(name, secs, gib=None, trains=False, rc=0, after=(), model="a-model"):
        script = pipeline.SFT if trains else "evaluation.py"
        return pipeline.Step(name, [str(fake), script, name, str(secs), str(rc)], [], tuple(after), gpu_gib=gib,
                             model=model)

    def spans():
        out: dict = {}
        for line in times.read_text().splitlines():
            what, name, t = line.split()
            out.setdefault(name, []).append(float(t)) if what == "start" else out[name].append(float(t))
        return {n: [(v[k], v[k + 1]) for k in range(0, len(v), 2)] for n, v in out.items()}

    return step, spans, env


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_steps_hold_their_share_of_the_card(tmp_path):
    """Two steps whose shares do not fit the card together never run at once; ones that fit do; a step of unknown
    share (None) holds the whole card. Without a card (None) only --jobs counts."""
    step, spans, _ = _fake(tmp_path)
    steps = [step("big1", 0.6, gib=6), step("big2", 0.6, gib=6), step("small", 0.6, gib=3), step("whole", 0.3),
             step("nomodel", 1.5, model=None)]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=3, card_gib=10) == 0
    s = spans()
    assert not _overlap(s["big1"][0], s["big2"][0])  # 6 + 6 > 10
    assert _overlap(s["big1"][0], s["small"][0]) or _overlap(s["big2"][0], s["small"][0])  # 6 + 3 <= 10
    assert not any(_overlap(s["whole"][0], s[n][0]) for n in ("big1", "big2", "small"))  # a model, no share: the card
    assert any(_overlap(s["nomodel"][0], s[n][0]) for n in ("big1", "big2", "small", "whole"))  # no model: holds none

    (tmp_path / "times.txt").unlink()
    steps = [step("big1", 0.6, gib=6), step("big2", 0.6, gib=6)]
    assert schedule.execute_parallel(steps, tmp_path / "logs2", jobs=2, card_gib=None) == 0
    assert _overlap(spans()["big1"][0], spans()["big2"][0])  # not counted: both at once


def test_a_training_step_is_told_its_share_of_a_shared_card(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    step, _, env = _fake(tmp_path)
    steps = [step("train", 0.1, gib=54.1, trains=True), step("gen", 0.1, gib=18.3)]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=2, card_gib=73.6) == 0
    got = dict((ln.split()[0], ln.split()[1:]) for ln in env.read_text().splitlines())
    assert got["train"] == ["54.1", "expandable_segments:True"]
    assert got["gen"] == ["none", "none"]  # an engine keeps vLLM's own memory settings
    gen = step("gen", 0.1, gib=18.3, model=None)
    assert schedule.step_env(gen, 73.6) == {}  # no model: not a generating step
    gen.model = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert schedule.step_env(gen, 73.6) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # one engine, in the step's process
    assert schedule.step_env(gen, None) == {}  # no shared card (a CPU): as vLLM does by itself
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert schedule.step_env(gen, 73.6) == {}  # the user's setting stays
    (tmp_path / "env.txt").unlink()
    assert schedule.execute_parallel([step("train2", 0.1, gib=54.1, trains=True)], tmp_path / "l2", jobs=2,
                                     card_gib=None) == 0
    assert env.read_text().split() == ["train2", "none", "none"]  # no shared card: no budget


def test_a_gpu_oom_beside_another_step_is_retried_alone_and_a_lone_one_is_not(tmp_path, capsys):
    step, spans, _ = _fake(tmp_path)
    steps = [step("slow", 1.0, gib=2), step("oom_once", 0.2, gib=2), step("later", 0.2, gib=2, after=("oom_once",))]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=2, card_gib=10) == 0
    err = capsys.readouterr().err
    assert "oom_once: ran out of GPU memory beside other steps" in err and "runs again alone" in err
    s = spans()
    first, second = s["oom_once"]
    assert _overlap(first, s["slow"][0])  # the failure: beside 'slow'
    assert second[0] >= s["slow"][0][1]  # the retry: alone, after 'slow' ended
    assert s["later"][0][0] >= second[1]

    # alone from the start, the same failure is final (an identical rerun fails the same way)
    (tmp_path / "times.txt").unlink()
    assert schedule.execute_parallel([step("oom_always", 0.1, gib=2)], tmp_path / "logs2", jobs=2, card_gib=10) == 1
    assert len(spans()["oom_always"]) == 1
    # beside another step, it gets one retry alone, and then fails
    (tmp_path / "times.txt").unlink()
    steps = [step("slow", 0.6, gib=2), step("oom_always", 0.1, gib=2)]
    assert schedule.execute_parallel(steps, tmp_path / "logs3", jobs=2, card_gib=10) == 1
    assert len(spans()["oom_always"]) == 2
    assert "FAILED (exit 1)" in capsys.readouterr().err


def test_the_plan_fits_a_training_step_into_its_share_and_engines_hold_weights_kv_and_overhead(monkeypatch):
    card = Hardware(1, 80.0, 64.0, name="H100")
    whole = plan.plan_training("Qwen/Qwen2.5-Coder-1.5B-Instruct", lora=False, effective_batch=16, tokens=2048, hw=card)
    shared = plan.plan_training("Qwen/Qwen2.5-Coder-1.5B-Instruct", lora=False, effective_batch=16, tokens=2048,
                                hw=Hardware(1, 80.0, 64.0, name="H100", budget_gib=30.0))
    assert shared.estimate_gib <= 30 < whole.estimate_gib and shared.capacity_gib == 30.0
    assert shared.effective_batch == whole.effective_batch == 16
    assert (shared.per_device, shared.gradient_checkpointing) < (whole.per_device, True)

    gp = plan.plan_generation("Qwen/Qwen2.5-Coder-1.5B-Instruct", card, max_tokens=2048)
    assert plan.engine_share_gib(gp, ["--kv-cache-gib", "12"], card) == round(gp.weights_gib + 12 + plan.GEN_OVERHEAD_GIB, 1)
    assert plan.engine_share_gib(gp, ["--gpu-memory-utilization", "0.5"], card) == 40.0
    assert plan.engine_share_gib(gp, [], card) == 72.0  # vLLM's default 0.9 of the card

    monkeypatch.setenv(BUDGET_ENV, "54.1")
    assert plan.budget_gib() == 54.1
    for bad in ("", "x", "-3"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        assert plan.budget_gib() is None


@pytest.mark.parametrize("jobs", [1, 3])
def test_the_dry_run_shows_each_steps_share_only_with_jobs(jobs, capsys, monkeypatch):
    monkeypatch.setenv("ALICE_PLAN_HARDWARE", "1x80")
    rc = pipeline.main(["--model", "qwen2.5-coder", "--data", "gsm8k", "--teacher", "0.5B", "--student", "1.5B",
                        "--paper", "--jobs", str(jobs), "--dry-run", "--extra-gen-args", "--kv-cache-gib 12"])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("it holds 18.3 GiB of the card" in out) == (jobs > 1)


def test_a_step_waiting_for_room_keeps_it_from_lower_priority_steps_that_would_take_it(tmp_path):
    """'big' (a longer chain after it) waits for room beside 'first'. A lower step starts beside 'first' only if it
    leaves room for 'big' once 'first' ends: 'fine' (2 + 8 <= 10) does, 'greedy' (3 + 8 > 10) waits until 'big' is
    on the card and then for room beside it: small steps cannot keep a large one off the card."""
    step, spans, _ = _fake(tmp_path)
    chain = [step("after_first1", 0.1, model=None, after=("first",)),
             step("after_first2", 0.1, model=None, after=("after_first1",)),
             step("after_big", 0.1, model=None, after=("big",))]
    steps = [step("first", 0.8, gib=6), step("big", 0.6, gib=8), step("fine", 0.3, gib=2), *chain]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=3, card_gib=10) == 0
    s = spans()
    assert s["big"][0][0] >= s["first"][0][1]  # 6 + 8 > 10
    assert _overlap(s["fine"][0], s["first"][0])  # beside 'first' at once: it leaves 'big' its room

    (tmp_path / "times.txt").unlink()
    steps = [step("first", 0.8, gib=6), step("big", 0.6, gib=8), step("greedy", 0.3, gib=3), *chain]
    assert schedule.execute_parallel(steps, tmp_path / "logs2", jobs=3, card_gib=10) == 0
    s = spans()
    assert s["greedy"][0][0] >= s["big"][0][1]  # it fitted beside 'first' (6 + 3), and would have kept 'big' waiting

    # the H100 case: an evaluation beside a training step while another training step waits; a second one waits
    assert schedule.fits(18.3, [54.1], 54.1, 73.3)
    assert not schedule.fits(18.3, [54.1, 18.3], 54.1, 73.3)
    # three engines on the card and a training step waiting: no fourth engine
    assert not schedule.fits(18.3, [18.3, 18.3], 54.1, 73.3)
    assert schedule.fits(18.3, [18.3, 18.3], None, 73.3)


def test_a_training_steps_share_is_read_from_its_rows_once_they_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    step, spans, env = _fake(tmp_path)
    train = step("train", 0.4, gib=70.0, trains=True)
    train.refine = lambda: 40.04  # the plan from its rows
    steps = [train, step("gen", 0.4, gib=18.3)]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=2, card_gib=73.6) == 0
    assert _overlap(spans()["train"][0], spans()["gen"][0])  # 40.1 + 18.3 fit; 70 + 18.3 would not
    assert "holds 40.1 GiB of the card (its plan from its rows; 70.0 for rows of max length)" in capsys.readouterr().out
    assert env.read_text().split()[:3] == ["train", "40.1", "expandable_segments:True"]

    # more than the worst case too: rows of max length plan a smaller micro-batch than short rows (measured on an
    # H100: 43.6 GiB at 4 x 4 against 45.2 at 16 x 1); held to the worst case, the step trained at another micro-batch
    up = step("up", 0.1, gib=43.6, trains=True)
    up.refine = lambda: 45.2
    assert schedule.execute_parallel([up], tmp_path / "l3", jobs=2, card_gib=73.6) == 0
    assert up.gpu_gib == 45.3

    def broken():
        raise FileNotFoundError("no rows")

    train2 = step("train2", 0.1, gib=70.0, trains=True)
    train2.refine = broken
    assert schedule.execute_parallel([train2], tmp_path / "l2", jobs=2, card_gib=73.6) == 0
    assert train2.gpu_gib == 70.0 and "stays 70.0 GiB (reading its rows: no rows)" in capsys.readouterr().err


def test_the_step_given_its_rows_share_as_budget_makes_the_same_plan(tiny_models, tmp_path, monkeypatch):
    """alice.stages.train.planned_gib is what the scheduler gives a training step; the step's own plan under that
    budget (whatever its neighbours use: free memory is not read then) picks the same micro-batch; a smaller
    budget picks a smaller one."""
    from alice.jsonl import write_jsonl
    from alice.sft_memory import plan_run
    from alice.stages import train

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    data = tmp_path / "data"
    write_jsonl(data / "gsm8k" / "train.jsonl", [
        {"question": f"Tom has {i} apples and buys {i + 1} more. How many apples? " * (1 + i % 5),
         "answer": f"He has {i}+{i + 1} = {2 * i + 1} apples.\n#### {2 * i + 1}"} for i in range(40)])
    flags = ["--model", "custom", "--data", "gsm8k", "--root", str(tmp_path), "--data-dir", str(data), "--method",
             "base", "--student", str(tiny_models["qwen_small"]), "--per-device-batch-size", "16",
             "--gradient-accumulation-steps", "1"]
    card = Hardware(1, 80.0, 64.0, name="H100")
    gib = train.planned_gib(flags, card)
    cfg = train.parse(flags)
    j = train.job(cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(j.model_id)
    batch = __import__("alice.sft", fromlist=["x"]).batch_settings(None, 16, 1)

    def plan_with(budget, free=None):
        return plan_run(j.model_id, tok, j.rows, batch, cfg.options, log=lambda *a: None,
                        hw=Hardware(1, 80.0, 64.0, name="H100", budget_gib=budget, free_gib=free))[2]

    whole = plan_run(j.model_id, tok, j.rows, batch, cfg.options, log=lambda *a: None, hw=card)[2]
    assert gib == whole.estimate_gib and whole.per_device == 16
    shared = plan_with(round(gib + 0.1, 1), free=0.01)  # a neighbour's engine left almost nothing free: not read
    assert (shared.per_device, shared.grad_accum, shared.estimate_gib) == (16, 1, gib)
    tokens = whole.tokens

    def need(b):
        return plan.gpu_bytes(plan.training_memory(plan.shape(j.model_id), strategy="single", gpus=1, micro_batch=b,
                                                   tokens=tokens, checkpointing=False, lora=False)) / plan.GIB

    tight = plan_with((need(16) + need(8)) / 2)  # room for 8 rows a micro-batch, not 16
    assert (tight.per_device, tight.grad_accum) == (8, 2)


def test_training_steps_share_the_card_when_their_plans_fit(tmp_path):
    """With the card's memory counted, two training steps run at once when their shares fit beside each other (two
    0.5B students), and not when they do not (two 1.5B ones); without a counted card, one training at a time
    (tests/test_pipeline.py)."""
    step, spans, _ = _fake(tmp_path)
    steps = [step("small1", 0.5, gib=20, trains=True), step("small2", 0.5, gib=20, trains=True)]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=2, card_gib=73.6) == 0
    assert _overlap(spans()["small1"][0], spans()["small2"][0])
    (tmp_path / "times.txt").unlink()
    steps = [step("big1", 0.3, gib=55.2, trains=True), step("big2", 0.3, gib=55.2, trains=True)]
    assert schedule.execute_parallel(steps, tmp_path / "logs2", jobs=2, card_gib=73.6) == 0
    assert not _overlap(spans()["big1"][0], spans()["big2"][0])
