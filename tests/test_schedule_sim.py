"""bench/schedule_sim.py: the real --jobs scheduler over a setting's real plan, each step a sleep of its measured
time: prerequisites hold, one job runs the steps end to end, more jobs overlap them."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_setting_is_simulated_from_measured_step_times(tmp_path):
    command = ("python -m alice.pipeline --model qwen2.5-coder --data gsm8k --teacher 0.5B --student 1.5B --paper "
               f"--train-limit 100 --data-dir {tmp_path}/data --root {tmp_path}/root --jobs 2 "
               "--extra-gen-args '--gpu-memory-utilization 0.15 --kv-cache-gib 12 --enforce-eager'")
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"runs": [{"command": command, "steps": {
        "teacher stage1 cot": {"wall_s": 60}, "base 1.5B": {"wall_s": 100}, "eval weak 0.5B": {"wall_s": 40}}}]}))
    out = tmp_path / "sim.json"
    p = subprocess.run([sys.executable, str(REPO / "bench/schedule_sim.py"), "--times", str(times), "--card-gib", "73.3",
                        "--jobs", "1", "3", "--kv-cache-gib", "12", "4", "--speedup", "200", "--out", str(out)],
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    one, three, one4, three4 = d["runs"]
    assert (one["jobs"], one["kv_cache_gib"], three4["jobs"], three4["kv_cache_gib"]) == (1, 12.0, 3, 4.0)
    steps = one["steps"]
    assert all(len(v) == 2 for v in steps.values()) and len(steps) >= 18
    assert "base 1.5B" not in one["estimated_steps"] and "eval strong 1.5B" in one["estimated_steps"]
    work = sum(e - s for s, e in steps.values())
    assert abs(one["makespan_s"] - work) < 0.25 * work  # one job: the steps end to end
    assert three["makespan_s"] < 0.8 * one["makespan_s"]  # three: they overlap within the card
    assert three4["shares_gib"]["eval weak 0.5B"] < three["shares_gib"]["eval weak 0.5B"]  # a smaller KV cache
    for s in (one, three):  # prerequisites end before their dependants start (the scheduler polls: 0.2 s x 200)
        st = s["steps"]
        assert st["eval strong 1.5B"][0] >= st["base 1.5B"][1] - 1
        assert st["alice 0.5B->1.5B cluster"][0] >= st["teacher stage1 cot"][1] - 1
