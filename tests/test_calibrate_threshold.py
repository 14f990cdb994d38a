"""bench/calibrate_threshold.py: sampling with the cluster stage's settings, answer equivalence, scoring."""

import json

import numpy as np
import pytest

from alice import alice_stages, generation, prompts
from alice.jsonl import write_jsonl
from alice.testing import load_script

cal = load_script("bench/calibrate_threshold.py")


def test_answer_classes_follow_the_qa_grader():
    samples = ["Paris.", "It is the city of Paris!", "Lyon", "lyon", "I think it is Lyon, France", "", "Marseille"]
    c = cal.answer_classes("hotpotqa", samples, "Paris")
    assert c[0] == c[1]  # both graded correct
    assert c[2] == c[3] == c[4]  # the same wrong answer once normalised (whole-word containment)
    assert len({c[0], c[2], c[5], c[6]}) == 4  # empty text and another wrong answer are their own classes
    t = cal.answer_classes("triviaqa", ["The Moon", "luna", "the sun"], ["Moon", "Luna"])
    assert t[0] == t[1] != t[2]  # any alias counts as the gold answer


def test_adjusted_rand_and_clustering_labels():
    assert cal.adjusted_rand([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert cal.adjusted_rand([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    emb = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0]])
    # the project's greedy clustering at t: {0, 1}; 2 and 3 are singletons, each its own label
    labels = cal.clustering_labels(["a", "b", "c", "d"], emb, 0.9)
    assert labels[0] == labels[1] and len({labels[0], labels[2], labels[3]}) == 3


def test_score_pair_metrics_on_known_embeddings():
    # 4 samples: two answers; embeddings put the right pairs at cosine 1 and a wrong pair at 0.8
    q = {"samples": ["a", "a'", "b", "b'"], "classes": [0, 0, 1, 1],
         "emb": np.array([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])}
    rows = {r["threshold"]: r for r in cal.score([q], grid=[0.5, 0.7, 0.9])}
    # cosines: (0,1)=1 same, (0,2)=.8 diff, (0,3)=0 diff, (1,2)=.8 diff, (1,3)=0 diff, (2,3)=.6 same
    assert (rows[0.7]["tp"], rows[0.7]["fp"], rows[0.7]["fn"]) == (1, 2, 1)
    assert (rows[0.9]["tp"], rows[0.9]["fp"], rows[0.9]["fn"]) == (1, 0, 1)
    assert rows[0.9]["precision"] == 1.0 and rows[0.9]["recall"] == 0.5
    assert (rows[0.5]["tp"], rows[0.5]["fp"], rows[0.5]["fn"]) == (2, 2, 0)


@pytest.fixture
def tq_dir(tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "triviaqa" / "train.jsonl", [
        {"question_id": f"tq{i}", "question": f"Which planet is number {i}?",
         "answer": {"value": "Mercury", "aliases": ["Mercury"], "normalized_aliases": ["mercury"]}} for i in range(50)])
    write_jsonl(d / "hotpotqa" / "train.jsonl", [
        {"id": f"hp{i}", "question": f"Which city is number {i}?", "answer": f"City {i}"} for i in range(50)])
    return str(d)


def test_sample_uses_the_cluster_stages_prompt_and_sampling(tiny_models, tq_dir, tmp_path, monkeypatch):
    seen = []
    real = generation.Generator.generate

    def spy(self, conversations, sampling, desc="generating"):
        seen.append((conversations, sampling))
        return real(self, conversations, sampling, desc)

    monkeypatch.setattr(generation.Generator, "generate", spy)
    out = tmp_path / "s.jsonl"
    cal.main(["sample", "--model", str(tiny_models["qwen_small"]), "--data", "triviaqa", "hotpotqa", "--data-dir", tq_dir,
              "--limit", "3", "--num-samples", "2", "--max-new-tokens", "4", "--backend", "hf", "--batch-size", "4",
              "--out", str(out)])
    rows = [json.loads(x) for x in open(out)]
    # the W2S part of 50 rows: second half (25), first 20% -> 5 questions; --limit 3
    assert [(r["id"], r["data"]) for r in rows[:3]] == [("tq25", "triviaqa"), ("tq26", "triviaqa"), ("tq27", "triviaqa")]
    assert [r["id"] for r in rows[3:]] == ["hp25", "hp26", "hp27"] and rows[3]["data"] == "hotpotqa" and rows[3]["gold"] == "City 25"
    rows = rows[:3]
    assert all(len(r["samples"]) == 2 and r["gold"] == ["Mercury", "mercury"] for r in rows)
    convs, sampling = seen[0]
    assert convs[0] == prompts.question_messages("Which planet is number 25?")
    assert (sampling.temperature, sampling.top_p, sampling.n) == (alice_stages.TEMPERATURE, alice_stages.TOP_P, 2)


def test_calibrate_end_to_end_with_minilm(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache("sentence-transformers/all-MiniLM-L6-v2", "config.json"), str):
        pytest.skip("all-MiniLM-L6-v2 is not in the HF cache")
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [
        {"id": "q1", "data": "triviaqa", "question": "Which planet is closest to the sun?", "gold": ["Mercury"],
         "samples": ["Mercury.", "The planet Mercury.", "Venus", "Venus is closest.", "Mars"]},
        {"id": "q2", "data": "hotpotqa", "question": "Who wrote Hamlet?", "gold": "William Shakespeare",
         "samples": ["William Shakespeare", "It was William Shakespeare.", "Christopher Marlowe", "Marlowe"]},
    ])
    out = tmp_path / "cal.json"
    res = cal.main(["calibrate", str(path), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["best_threshold"] == res["best_threshold"] and "calibrate" in saved["command"]
    allq = saved["per_dataset"]["all"]
    assert allq["questions"] == 2 and allq["pairs"] == 10 + 6
    f1 = [r["f1"] for r in allq["table"]]
    assert max(f1) == allq["best"]["f1"] and 0 < max(f1) <= 1


def test_calibrate_without_samples_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cal.main(["calibrate", str(tmp_path / "none.jsonl")])
    assert "does not exist" in str(e.value) and "sample" in str(e.value) and "\n" not in str(e.value)


def test_sample_appends_per_chunk_and_a_rerun_continues(tiny_models, tq_dir, tmp_path, monkeypatch):
    calls = []
    real = generation.Generator.generate

    def spy(self, conversations, sampling, desc="generating"):
        calls.append([c[0]["content"] for c in conversations])
        return real(self, conversations, sampling, desc)

    monkeypatch.setattr(generation.Generator, "generate", spy)
    out = tmp_path / "s.jsonl"
    argv = ["sample", "--model", str(tiny_models["qwen_small"]), "--data", "triviaqa", "--data-dir", tq_dir,
            "--num-samples", "2", "--max-new-tokens", "3", "--backend", "hf", "--chunk", "2", "--out", str(out)]
    cal.main(argv + ["--limit", "3"])
    assert [len(c) for c in calls] == [2, 1]  # chunks of 2 questions, each appended when done
    first = [json.loads(x) for x in open(out)]
    assert [r["id"] for r in first] == ["tq25", "tq26", "tq27"]
    calls.clear()
    cal.main(argv + ["--limit", "5"])  # a rerun samples only the questions not in --out yet
    assert calls == [["Which planet is number 28?", "Which planet is number 29?"]]
    rows = [json.loads(x) for x in open(out)]
    assert [r["id"] for r in rows] == ["tq25", "tq26", "tq27", "tq28", "tq29"] and rows[:3] == first
