"""evaluation.py end to end on tiny fixture models and a tiny local data folder (hf backend)."""

import dataclasses
import json
import shutil

import pytest

from alice import datasets, fresh, generation
from alice.datasets import gsm8k
from alice.evaluate import summarize, target, wilson
from alice.paths import Layout, eval_run_name
from alice.testing import load_script



evaluation = load_script("evaluation.py")


@pytest.fixture
def data_dir(tmp_path):
    """gsm8k and triviaqa in the layout of shared/offline/data, a few rows each."""
    d = tmp_path / "data"
    (d / "gsm8k").mkdir(parents=True)
    for split, n in (("train", 8), ("test", 5)):
        with open(d / "gsm8k" / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"question": f"Natalia sold {i} clips and {i + 2} more. How many?",
                                    "answer": f"{i}+{i + 2}={2 * i + 2}\n#### {2 * i + 2}"}) + "\n")
    (d / "triviaqa").mkdir()
    with open(d / "triviaqa" / "validation.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"question_id": f"tq{i}", "question": f"Which planet is number {i}?",
                                "answer": {"value": "Mercury", "aliases": ["Mercury"], "normalized_value": "mercury",
                                           "normalized_aliases": ["mercury"]}}) + "\n")
    return str(d)


def run(argv):
    return evaluation.main(argv)


def common(tiny, data_dir, root, *extra):
    return ["--data", "gsm8k", "--model", "custom", "--data-dir", data_dir, "--root", str(root), "--backend", "hf",
            "--max-new-tokens", "6", *extra]


def test_wilson_and_summary():
    lo, hi = wilson(12, 50)
    assert 0.14 < lo < 0.15 and 0.37 < hi < 0.38
    assert wilson(0, 0) == (0.0, 1.0)
    s = summarize([{"correct": True, "parsed": True}, {"correct": False, "parsed": False}])
    assert (s["accuracy"], s["n"], s["correct"], s["parsed"]) == (0.5, 2, 1, 1)


def test_targets_name_the_training_command(tmp_path):
    L = Layout(tmp_path)
    t = target(L, "ours-wts", "qwen2.5", "gsm8k", "7B", teacher="3B", ours_wts_type="cascade")
    assert t.model_path == str(L.ours_student_model("qwen2.5", "3B", "7B", "gsm8k", "cascade2"))
    assert "--method ours-wts-stage2 --ours-wts-type cascade2" in t.made_by and t.run.endswith("ours-wts-cascade")
    t = target(L, "original-wts", "qwen2.5", "gsm8k", "7B", teacher="1.5B", original_wts_type="qa")
    assert t.model_path == str(L.original_student_model("qwen2.5", "1.5B", "7B", "gsm8k", "qa"))
    assert target(L, "naive", "qwen2.5", "gsm8k", "7B", "Qwen/Qwen2.5-7B-Instruct").model_path == "Qwen/Qwen2.5-7B-Instruct"


def test_naive_end_to_end_and_rerun(tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    student = str(tiny_models["qwen_small"])
    s = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive"))
    L = Layout(tmp_path)
    preds = [json.loads(x) for x in open(L.eval_predictions("gsm8k", eval_run_name("custom", student, "naive")))]
    assert [p["id"] for p in preds] == [f"gsm8k-test-{i:05d}" for i in range(5)]
    assert set(preds[0]) == {"id", "question", "response", "gold", "extracted", "parsed", "correct", "seed_correct",
                             "seed_counted"}
    assert preds[2]["gold"] == "6"
    summary = json.load(open(L.eval_summary("gsm8k", eval_run_name("custom", student, "naive"))))
    assert summary["n"] == 5 and summary["model"] == student and summary["method"] == "naive"
    assert summary["settings"]["backend"] == "hf" and len(summary["ci95"]) == 2 and s["accuracy"] == summary["accuracy"]
    assert summary["dataset_version"] == gsm8k.VERSION  # what graded it
    assert "accuracy" in capsys.readouterr().out
    assert not list((tmp_path / "model_outputs" / "eval" / "gsm8k").glob("*.gen*"))  # checkpoint cleared

    # a rerun with the same settings loads nothing; other settings (--limit) are evaluated anew
    monkeypatch.setattr(generation.Generator, "_load", lambda self: pytest.fail("model loaded"))
    run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive"))
    assert "already evaluated" in capsys.readouterr().out
    monkeypatch.undo()
    # other settings (--limit): one line naming --overwrite, the summary kept; with --overwrite evaluated anew
    with pytest.raises(SystemExit) as e:
        run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive", "--limit", "2"))
    assert e.value.code == 2 and "limit None -> 2" in capsys.readouterr().err
    assert json.load(open(L.eval_summary("gsm8k", eval_run_name("custom", student, "naive"))))["n"] == 5
    s2 = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive", "--limit", "2", "--overwrite"))
    assert s2["n"] == 2 and s2["settings"]["limit"] == 2
    # --batch-invariant is recorded with the evaluation: the one made without it is not passed off as made with it
    with pytest.raises(SystemExit) as e:
        run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive", "--limit", "2",
                   "--batch-invariant"))
    assert e.value.code == 2 and "batch_invariant" in capsys.readouterr().err


def test_both_metrics_and_grading_seed(tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    """The summary holds the project's grading and the seed's metric; a rerun regrades the stored responses
    (no model) and --grading seed prints the seed's numbers with its parsed-only gsm8k denominator."""
    student = str(tiny_models["qwen_small"])
    s = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive"))
    assert s["seed"]["n"] == 5 and s["seed"]["denominator"] <= 5
    # the tiny model writes noise: put known responses in place (gold numbers are 2, 4, 6, 8, 10)
    responses = ["#### 2",  # both right
                 "#### 4.\nQuestion: next #### 9",  # project right; the seed read '4.\nQuestion: next': wrong, counted
                 "\\boxed{6}",  # project right; no ####: not in the seed's denominator
                 "#### 7",  # both wrong
                 "I do not know"]  # wrong both ways; not in the seed's denominator
    path = s["predictions"]
    preds = [json.loads(x) for x in open(path)]
    with open(path, "w") as f:
        for p, r in zip(preds, responses):
            f.write(json.dumps(dict(p, response=r)) + "\n")
    fresh.rerecord(path)  # as if the model had written them (an edit by hand is caught: tests/test_integrity.py)
    monkeypatch.setattr(generation.Generator, "_load", lambda self: pytest.fail("model loaded"))
    # a new version of the dataset's grading: the regraded summary records it
    monkeypatch.setitem(datasets.DATASETS, "gsm8k", dataclasses.replace(datasets.spec("gsm8k"), version="2"))
    capsys.readouterr()
    s = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive", "--grading", "seed"))
    assert (s["correct"], s["n"], s["accuracy"]) == (3, 5, 0.6)
    assert (s["seed"]["correct"], s["seed"]["denominator"]) == (1, 3) and s["seed"]["accuracy"] == pytest.approx(1 / 3)
    out = capsys.readouterr().out
    assert "(seed's metric): accuracy 0.333 (1/3 counted of 5" in out and "project's grading 0.600" in out
    saved = json.load(open(Layout(tmp_path).eval_summary("gsm8k", eval_run_name("custom", student, "naive"))))
    assert saved["seed"]["denominator"] == 3 and saved["correct"] == 3  # regraded summary written back
    assert saved["dataset_version"] == "2"
    assert [json.loads(x)["seed_counted"] for x in open(path)] == [True, True, False, True, False]


def test_resume_after_a_killed_run(tiny_models, data_dir, tmp_path, monkeypatch):
    student = str(tiny_models["qwen_small"])
    monkeypatch.setattr(generation.Generator, "default_chunk_size", property(lambda self: 2))
    calls = []
    real = generation.Generator.generate

    def dying(self, conversations, sampling, desc="generating"):
        calls.append(len(conversations))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second chunk
        return real(self, conversations, sampling, desc)

    monkeypatch.setattr(generation.Generator, "generate", dying)
    with pytest.raises(KeyboardInterrupt):
        run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive"))
    L = Layout(tmp_path)
    assert not L.eval_summary("gsm8k", eval_run_name("custom", student, "naive")).exists()
    calls.clear()
    monkeypatch.setattr(generation.Generator, "generate", lambda self, c, s, desc="": calls.append(len(c)) or real(self, c, s, desc))
    s = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "naive"))
    assert calls == [2, 1] and s["n"] == 5  # the first 2 questions were not asked again
    ids = [json.loads(x)["id"] for x in open(L.eval_predictions("gsm8k", eval_run_name("custom", student, "naive")))]
    assert len(ids) == len(set(ids)) == 5


def test_trained_models_missing_and_present(tiny_models, data_dir, tmp_path, capsys):
    student, teacher = str(tiny_models["qwen_large"]), str(tiny_models["qwen_small"])
    with pytest.raises(SystemExit) as e:
        run(common(tiny_models, data_dir, tmp_path, "--student", student, "--method", "base"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "python training/SFT.py --model custom --data gsm8k --student" in err and "--method base" in err

    # a trained student (here: a copy of a fixture model) where SFT puts it
    L = Layout(tmp_path)
    dest = L.ours_student_model("custom", teacher, student, "gsm8k", "singleturn")
    shutil.copytree(student, dest)
    s = run(common(tiny_models, data_dir, tmp_path, "--student", student, "--teacher", teacher, "--method", "ours-wts",
                   "--ours-wts-type", "singleturn", "--limit", "2"))
    assert s["model"] == str(dest) and s["run"] == eval_run_name("custom", student, "ours-wts", teacher, ours_wts_type="singleturn")

    # the model is retrained (other weights in its folder): the summary is stale
    flags = ["--student", student, "--teacher", teacher, "--method", "ours-wts", "--ours-wts-type", "singleturn", "--limit", "2"]
    w = dest / "model.safetensors"
    from safetensors.torch import load_file, save_file

    weights = load_file(w)
    save_file({k: v + 0.01 for k, v in weights.items()}, w, metadata={"format": "pt"})
    with pytest.raises(SystemExit) as e:
        run(common(tiny_models, data_dir, tmp_path, *flags))
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{dest.relative_to(tmp_path)} changed since" in err and "--overwrite" in err
    assert run(common(tiny_models, data_dir, tmp_path, *flags, "--overwrite"))["n"] == 2

    with pytest.raises(SystemExit):
        run(common(tiny_models, data_dir, tmp_path, "--student", student, "--teacher", teacher, "--method", "ours-wts"))
    assert "--ours-wts-type" in capsys.readouterr().err


def test_triviaqa_ids_and_aliases(tiny_models, data_dir, tmp_path):
    argv = common(tiny_models, data_dir, tmp_path, "--student", str(tiny_models["llama"]), "--method", "naive")
    argv[1] = "triviaqa"
    s = run(argv)
    preds = [json.loads(x) for x in open(s["predictions"])]
    assert [p["id"] for p in preds] == ["tq0", "tq1", "tq2"] and preds[0]["gold"] == ["Mercury", "mercury"]


def test_unavailable_backend_is_a_parser_error(tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(generation.common, "vllm_available", lambda: False)
    argv = common(tiny_models, data_dir, tmp_path, "--student", str(tiny_models["qwen_small"]), "--method", "naive")
    argv[argv.index("hf")] = "vllm"
    with pytest.raises(SystemExit) as e:
        run(argv)
    assert e.value.code == 2 and "vllm is not installed" in capsys.readouterr().err
