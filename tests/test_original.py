"""original_weak_to_strong.py end to end: qa / cot / cascade_1 / cascade_2 labels on tiny fixture models."""

import json
import shutil

import pytest

from alice import data as data_mod
from alice import generation
from alice.paths import Layout
from alice.testing import load_script

orig = load_script("W2SG_pipeline/original/original_weak_to_strong.py")


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d / "gsm8k").mkdir(parents=True)
    with open(d / "gsm8k" / "train.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"question": f"Natalia sold {i} clips. How many?", "answer": f"{i}\n#### {i}"}) + "\n")
    return str(d)


def argv(type_, teacher, data_dir, root, *extra):
    return ["--data", "gsm8k", "--model", "custom", "--teacher", teacher, "--type", type_, "--data-dir", data_dir,
            "--root", str(root), "--backend", "hf", "--max-new-tokens", "5", *extra]


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = generation.Generator.generate

    def spy(self, c, s, desc=""):
        seen.append((self.model, len(c), s))
        return real(self, c, s, desc)

    monkeypatch.setattr(generation.Generator, "generate", spy)
    return seen


def test_missing_teacher_names_the_command(tiny_models, data_dir, tmp_path, capsys):
    teacher = str(tiny_models["qwen_small"])
    for type_, method in (("qa", "--method original-wts-stage1 --original-wts-type qa"),
                          ("cot", "--method ours-wts-stage1 --ours-wts-type singleturn")):
        with pytest.raises(SystemExit) as e:
            orig.main(argv(type_, teacher, data_dir, tmp_path))
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"python training/SFT.py --model custom --data gsm8k --teacher {teacher} {method}" in err
        assert f"--data-dir {data_dir} --root {tmp_path}` first" in err


def test_qa_and_cot_labels(tiny_models, data_dir, tmp_path, calls, capsys):
    teacher = str(tiny_models["qwen_small"])
    L = Layout(tmp_path)
    shutil.copytree(teacher, L.teacher_model("custom", teacher, "gsm8k", "qa"))
    shutil.copytree(str(tiny_models["llama"]), L.teacher_model("custom", teacher, "gsm8k", "cot"))
    w2s = data_mod.w2s_part("gsm8k", data_mod.load_train("gsm8k", data_dir))
    for type_ in ("qa", "cot"):
        rows = orig.main(argv(type_, teacher, data_dir, tmp_path))
        path = L.original_labels("custom", teacher, "gsm8k", type_)
        assert [json.loads(x) for x in open(path)] == rows
        assert [r["id"] for r in rows] == [r["id"] for r in w2s] and set(rows[0]) == {"id", "question", "answer"}
        assert calls[-1][0] == str(L.teacher_model("custom", teacher, "gsm8k", type_))
    assert (calls[0][2].temperature, calls[0][2].top_p) == (0.6, 0.95)
    calls.clear()
    orig.main(argv("qa", teacher, data_dir, tmp_path))  # finished: nothing generated, nothing duplicated
    assert not calls and len(open(L.original_labels("custom", teacher, "gsm8k", "qa")).read().splitlines()) == 6
    # other settings: one line naming --overwrite, nothing generated; --overwrite relabels
    for flags, what in ((["--limit", "2"], "limit None -> 2"), (["--max-new-tokens", "7"], "max_new_tokens 5 -> 7")):
        with pytest.raises(SystemExit) as e:
            orig.main(argv("qa", teacher, data_dir, tmp_path, *flags))
        err = capsys.readouterr().err
        assert e.value.code == 2 and what in err and "--overwrite" in err and not calls
    assert len(orig.main(argv("qa", teacher, data_dir, tmp_path, "--limit", "2", "--overwrite"))) == 2 and calls


def test_cascade(tiny_models, data_dir, tmp_path, calls, capsys):
    teacher, mid = str(tiny_models["qwen_small"]), str(tiny_models["qwen_large"])
    L = Layout(tmp_path)
    train = data_mod.load_train("gsm8k", data_dir)
    shutil.copytree(teacher, L.teacher_model("custom", teacher, "gsm8k", "cot"))
    first = orig.main(argv("cascade_1", teacher, data_dir, tmp_path))
    assert [r["id"] for r in first] == [r["id"] for r in data_mod.cascade_first("gsm8k", train)]
    assert L.original_cascade_labels("custom", teacher, "gsm8k").exists()

    with pytest.raises(SystemExit):  # cascade_2 needs the mid-level model ...
        orig.main(argv("cascade_2", teacher, data_dir, tmp_path))
    assert "--midlevel" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ... trained on the cascade_1 labels
        orig.main(argv("cascade_2", teacher, data_dir, tmp_path, "--midlevel", mid))
    assert "--method original-wts-stage2 --original-wts-type cascade" in capsys.readouterr().err

    trained_mid = L.original_student_model("custom", teacher, mid, "gsm8k", "cascade")
    shutil.copytree(mid, trained_mid)
    second = orig.main(argv("cascade_2", teacher, data_dir, tmp_path, "--midlevel", mid))
    assert [r["id"] for r in second] == [r["id"] for r in data_mod.cascade_second("gsm8k", train)]
    assert calls[-1][0] == str(trained_mid)  # the mid-level labels hop 2 (the seed overwrote this branch)
    assert [json.loads(x) for x in open(L.original_cascade_labels("custom", mid, "gsm8k"))] == second
