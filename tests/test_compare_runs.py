"""bench/oneoff/compare_runs.py: two runs of one command compared output by output (plans, weights, stage rows)."""

import json
import subprocess
import sys
from pathlib import Path

from alice.jsonl import write_jsonl

REPO = Path(__file__).resolve().parent.parent


def _run(root: Path, fingerprint: str, micro: int, labels: list[str], log: str) -> None:
    folder = root / "model_outputs" / "original" / "m_gsm8k"
    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({
        "per_device_train_batch_size": micro, "gradient_accumulation_steps": 16 // micro,
        "memory_plan": {"estimate_gib": 24.9}, "peak_gpu_memory_gib": 13.6, "skipped_nonfinite_steps": []}))
    (folder.parent / "m_gsm8k.meta.json").write_text(json.dumps({"output": {"fingerprint": fingerprint}}))
    write_jsonl(root / "data" / "original" / "labels.jsonl", [{"id": i, "answer": a} for i, a in enumerate(labels)])
    (root / "pipeline.log").write_text(log)
    (root / "command.txt").write_text("python -m alice.pipeline ...")


def test_two_runs_are_compared_by_plan_weights_and_rows(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, "0ce9", 16, ["1", "2", "3"], "[ 6/36] teacher stage1 qa: ok in 59s\n")
    _run(b, "0ce9", 16, ["1", "2", "4"], "[ 6/36] teacher stage1 qa: ok in 61s\n[ 7/36] x: ok in 3s\n")
    out = tmp_path / "c.json"
    p = subprocess.run([sys.executable, str(REPO / "bench/oneoff/compare_runs.py"), str(a), str(b), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    (m,) = d["trained"]
    assert m["same_plan"] and m["identical_weights"] and m["a"]["estimate_gib"] == 24.9
    (f,) = d["stage_files"]
    assert (f["rows_a"], f["rows_b"], f["identical_rows"]) == (3, 3, 2)
    assert d["b"]["step_wall_s"] == {"teacher stage1 qa": 61, "x": 3} and d["a"]["steps_ok"] == 1
    assert "1 of 1 models trained in both have identical weights" in p.stdout

    # another plan, other weights; a folder that is not a run gets one line
    (b / "model_outputs/original/m_gsm8k.meta.json").write_text(json.dumps({"output": {"fingerprint": "8e57"}}))
    cfg = b / "model_outputs/original/m_gsm8k/train_config.json"
    cfg.write_text(cfg.read_text().replace('"per_device_train_batch_size": 16', '"per_device_train_batch_size": 8'))
    subprocess.run([sys.executable, str(REPO / "bench/oneoff/compare_runs.py"), str(a), str(b), "--out", str(out)],
                   check=True, capture_output=True)
    (m,) = json.loads(out.read_text())["trained"]
    assert not m["same_plan"] and not m["identical_weights"]
    p = subprocess.run([sys.executable, str(REPO / "bench/oneoff/compare_runs.py"), str(a), str(tmp_path), "--out",
                        str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not an extracted run" in p.stderr
