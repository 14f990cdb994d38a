"""bench/setting.py (issue 31): a whole setting run through the one command and timed, each step's wall split into
the work (generation, the training loop) and the start-up around it, read from the step logs the run really wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alice.jsonl import write_jsonl
from alice.testing import build_answer_model

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_setting_is_timed_step_by_step_from_its_own_logs(tiny_models, tmp_path):
    data = tmp_path / "data"
    rows = [{"question": f"Natalia sold {i} clips. How many?", "answer": f"{i} clips. #### {i}"} for i in range(24)]
    write_jsonl(data / "gsm8k" / "train.jsonl", rows)
    write_jsonl(data / "gsm8k" / "test.jsonl", rows[:3])
    # a teacher whose samples partly agree, so that Alice's several-cluster steps generate
    teacher = build_answer_model(tiny_models["llama"], tmp_path / "teacher", {" 72": 0.5, " 3": 0.5})
    cfg = tmp_path / "setting.yaml"
    cfg.write_text(f"model: custom\ndata: gsm8k\nteacher: {teacher}\nstudent: {tiny_models['qwen_large']}\n"
                   "backend: hf\ntrain_limit: 4\neval_limit: 3\nnum_samples: 4\nmax_new_tokens: 8\n"
                   "summarizer_model: " + str(tiny_models["qwen_large"]) + "\n")
    out, root = tmp_path / "setting.json", tmp_path / "run"
    argv = [sys.executable, "bench/setting.py", "--pipeline-config", str(cfg), "--root", str(root),
            "--data-dir", str(data), "--out", str(out), "--pipeline-args", "--extra-sft-args", "--max-steps 1"]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1200,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:] + (root / "pipeline.log").read_text()[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    steps = run["steps"]
    assert run["failed_steps"] == [] and run["data"] == "gsm8k" and run["train_limit"] == 4
    assert "--config " + str(cfg) in run["command"] and run["commit"]
    # every step of the plan, each timed by the pipeline; one after the other, they fit in the run's wall
    assert {"eval alice", "alice student", "report"} <= {n.split(" /")[0] for n in steps}
    assert sum(s["wall_s"] for s in steps.values()) <= run["wall_s"] + len(steps)
    for name, s in steps.items():
        assert s["work_s"] + s["startup_s"] >= s["wall_s"] - 0.5, name
        if name.startswith("eval "):  # a generating step: an engine made or taken over, then the generation
            assert s["generate_calls"] >= 1 and s["train_loops"] == 0 and sum(s["engines"].values()) >= 1, (name, s)
        if name.startswith(("base ", "alice student", "teacher stage1")):  # the training loop, timed by the trainer
            assert s["train_loops"] == 1 and s["generate_calls"] == 0 and s["engine_load_s"] == 0, (name, s)
    loads = sum(s["engines"]["loaded"] for s in steps.values())
    assert loads >= 3  # the engines made (tiny fixture models load in well under a second: their seconds round to 0)
    for k in ("wall_s", "work_s", "startup_s", "engine_load_s"):
        assert run["step_seconds"][k] == pytest.approx(sum(s[k] for s in steps.values()), abs=0.05)
    assert run["card"] is None  # no GPU here: no card to sample
    for key in ("weak", "strong", "alice"):
        assert run["accuracy"][key]["n"] == 3

    # the same run read back from its logs, compared with its own report: every accuracy inside that CI
    report = next((root / "model_outputs" / "report").glob("*.json"))
    r2 = subprocess.run([sys.executable, "bench/setting.py", "--from-root", str(root), "--compare", str(report),
                         "--out", str(tmp_path / "again.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    again = json.loads((tmp_path / "again.json").read_text())["runs"][0]
    assert again["steps"] == steps
    assert all(a["inside_committed_ci"] for a in again["accuracy"].values())


def test_the_critical_path_follows_the_plans_prerequisites_by_work_seconds():
    """The floor of any schedule without start-up: the chain of prerequisites (the plan rebuilt from the recorded
    command) with the most work, each step counted once, in plan order; a step not run makes it a lower bound."""
    sys.path.insert(0, str(REPO / "bench"))
    import setting

    from alice import pipeline

    command = "python -m alice.pipeline --data gsm8k --teacher 0.5B --student 1.5B --jobs 2"
    planned = pipeline.plan(pipeline.options_from_argv(command.split()[3:]))
    steps = {st.name: {"status": "ok", "work_s": 1.0, "wall_s": 3} for st in planned}
    alice_chain = [st.name for st in planned if st.name.startswith(("teacher stage1 cot", "alice", "eval alice"))]
    steps["alice student 0.5B->1.5B"]["work_s"] = 50.0  # the Alice student's training: the longest chain goes through it
    cp = setting.critical_path(command, steps)
    assert cp["steps"][:-1] == [n for n in alice_chain if n in cp["steps"]] and "alice student 0.5B->1.5B" in cp["steps"]
    assert cp["steps"][0] == "teacher stage1 cot" and cp["steps"][-2:] == ["eval alice", "report"]  # report: after all
    assert cp["work_s"] == 50.0 + len(cp["steps"]) - 1 and cp["wall_s"] == 3 * len(cp["steps"]) and cp["complete"]
    for i, name in enumerate(cp["steps"][1:]):  # each step waits for the one before it
        assert cp["steps"][i] in next(st for st in planned if st.name == name).after

    steps["base 1.5B"]["work_s"] = 500.0  # now a baseline's chain is the longest
    assert setting.critical_path(command, steps)["steps"] == ["base 1.5B", "eval strong 1.5B", "report"]
    del steps["eval strong 1.5B"]
    assert setting.critical_path(command, steps)["complete"] is False
    assert setting.critical_path(None, steps) is None
    assert setting.critical_path("python -m alice.pipeline --no-such-flag", steps) is None
