"""cot/cot_generate_filter.py end to end on a tiny fixture model and a tiny local data folder (hf backend)."""

import json

import pytest

from alice import data as data_mod
from alice import generation
from alice.paths import Layout
from alice.testing import load_script

cot = load_script("cot/cot_generate_filter.py")


@pytest.fixture
def data_dir(tmp_path):
    """hotpotqa (jsonl) and arc_challenge (save_to_disk) in the layout of shared/offline/data."""
    import datasets

    d = tmp_path / "data"
    (d / "hotpotqa").mkdir(parents=True)
    with open(d / "hotpotqa" / "train.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"id": f"hp{i}", "question": f"Which city is capital number {i}?", "answer": "Paris", "type": "bridge"}) + "\n")
    rows = [{"question": f"Which is closest to the sun? ({i})\nA. Mercury\nB. Mars\nC. Venus\nD. Earth", "answer": "A. Mercury"} for i in range(6)]
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s in ("train", "validation", "test")}).save_to_disk(str(d / "arc_challenge"))
    return str(d)


def argv(data, teacher, data_dir, root, *extra):
    return ["--data", data, "--model", "custom", "--teacher", teacher, "--data-dir", data_dir, "--root", str(root),
            "--backend", "hf", "--max-new-tokens", "6", *extra]


def test_cot_rows_grade_and_carry_ids():
    rows = [{"id": "a", "question": "Q1\nA. x\nB. y", "answer": "B. y", "gold": "B. y"},
            {"id": "b", "question": "Q2\nA. x\nB. y", "answer": "A. x", "gold": "A. x"}]
    out = cot.cot_rows(rows, {"a": ["Because... My choice is B."], "b": ["My choice is B."]}, "arc_challenge")
    assert [(r["id"], r["correct"], r["ground_truth_response"]) for r in out] == [("a", True, "B. y"), ("b", False, "A. x")]
    assert out[0]["answer"] == "Because... My choice is B." and out[0]["question"] == "Q1\nA. x\nB. y"


def test_cot_end_to_end(tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    teacher = str(tiny_models["qwen_small"])
    seen = []
    real = generation.Generator.generate
    monkeypatch.setattr(generation.Generator, "generate",
                        lambda self, c, s, desc="": seen.append((c, s)) or real(self, c, s, desc))
    out = cot.main(argv("hotpotqa", teacher, data_dir, tmp_path))
    L = Layout(tmp_path)
    rows = [json.loads(x) for x in open(L.cot("custom", teacher, "hotpotqa"))]
    assert [r["id"] for r in rows] == [f"hp{i}" for i in range(5)]  # the teacher half
    assert set(rows[0]) == {"id", "question", "answer", "ground_truth_response", "correct"}
    assert rows == out and all(r["ground_truth_response"] == "Paris" for r in rows)
    kept = [json.loads(x) for x in open(L.cot_correct("custom", teacher, "hotpotqa"))]
    assert kept == [r for r in rows if r["correct"]]
    assert f"kept {len(kept)}/5" in capsys.readouterr().out
    convs, sampling = seen[0]
    assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (0.7, 0.95, 6)
    assert convs[0][0]["content"].startswith("Which city is capital number 0?\nKeep your answer in 1-3 sentences.")

    # a rerun does not generate again, nor duplicate rows
    seen.clear()
    cot.main(argv("hotpotqa", teacher, data_dir, tmp_path))
    assert not seen and "already done" in capsys.readouterr().out
    assert len(open(L.cot("custom", teacher, "hotpotqa")).read().splitlines()) == 5


def test_cot_arc_prompt_and_limit(tiny_models, data_dir, tmp_path, monkeypatch):
    teacher = str(tiny_models["llama"])
    seen = []
    real = generation.Generator.generate
    monkeypatch.setattr(generation.Generator, "generate",
                        lambda self, c, s, desc="": seen.append(c) or real(self, c, s, desc))
    rows = cot.main(argv("arc_challenge", teacher, data_dir, tmp_path, "--limit", "2"))
    assert [r["id"] for r in rows] == ["arc_challenge-train-00000", "arc_challenge-train-00001"]
    assert "My choice is A." in seen[0][0][0]["content"] and rows[0]["ground_truth_response"] == "A. Mercury"


def test_gsm8k_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cot.main(["--data", "gsm8k", "--model", "qwen2.5", "--teacher", "1.5B", "--root", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "gsm8k ships its own chain-of-thought" in err and "--method ours-wts-stage1" in err
    assert set(data_mod.cot_datasets()) == {"hotpotqa", "triviaqa", "arc_challenge"}
