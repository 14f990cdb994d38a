import json

import pytest

from alice import data
from alice.datasets import arc_challenge

# Row counts of shared/offline/data (its README)
OFFLINE_COUNTS = {
    "gsm8k": (7473, 1319),
    "arc_challenge": (1119, 1172),
    "hotpotqa": (5405, 2000),
    "triviaqa": (600, 400),
}


@pytest.mark.parametrize("name", list(OFFLINE_COUNTS))
def test_offline_row_counts_and_fields(offline_data, name):
    train, test = data.load_train(name, offline_data), data.load_test(name, offline_data)
    assert (len(train), len(test)) == OFFLINE_COUNTS[name]
    for row in train[:50] + test[:50]:
        assert set(row) == {"id", "question", "answer", "gold"} | ({"gold_seed"} if name == "triviaqa" else set())
        assert row["question"] and row["answer"]
    assert len({r["id"] for r in train}) == len(train)


def test_offline_gold_formats(offline_data):
    g = data.load_train("gsm8k", offline_data)[0]
    assert g["id"] == "gsm8k-train-00000" and g["gold"] == "72" and g["answer"].endswith("#### 72")
    a = data.load_test("arc_challenge", offline_data)[0]
    assert a["gold"] == "C. Planetary days will become shorter." and "\nA. " in a["question"]
    h = data.load_train("hotpotqa", offline_data)[0]
    assert h["id"] == "hotpot_dev_35" and h["gold"] == "October 1922"
    t = data.load_train("triviaqa", offline_data)[0]
    assert t["id"] == "test_1870" and "roberta phyllis peter" in t["gold"] and t["answer"] == "Roberta, Phyllis & Peter"
    assert "roberta phyllis peter" in t["gold_seed"] and "Roberta, Phyllis & Peter" not in t["gold_seed"]


def test_parent_of_data_folder_is_accepted(offline_data):
    import os

    assert len(data.load_test("triviaqa", os.path.dirname(offline_data))) == 400


def test_env_variable_selects_local_folder(offline_data, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, offline_data)
    assert len(data.load_train("triviaqa")) == 600


@pytest.mark.parametrize(
    "name,n,teacher,w2s,part,c1,c2",
    [
        # gsm8k: 7473 train rows -> 3736 teacher, 3737 W2S; cascade halves 1868 / 1869
        ("gsm8k", 7473, 3736, 3737, 3737, 1868, 1869),
        ("arc_challenge", 1119, 559, 560, 560, 280, 280),
        # hotpotqa/triviaqa use the first 20% of the W2S half
        ("hotpotqa", 5405, 2702, 2703, 540, 270, 270),
        ("triviaqa", 600, 300, 300, 60, 30, 30),
        # the Hub's full sizes (HotpotQA fullwiki train 90,447; TriviaQA rc train 138,384)
        ("hotpotqa", 90447, 45223, 45224, 9044, 4522, 4522),
        ("triviaqa", 138384, 69192, 69192, 13838, 6919, 6919),
    ],
)
def test_split_sizes(name, n, teacher, w2s, part, c1, c2):
    rows = list(range(n))
    assert len(data.teacher_half(rows)) == teacher
    assert len(data.w2s_half(rows)) == w2s
    assert len(data.w2s_part(name, rows)) == part
    first, second = data.cascade_first(name, rows), data.cascade_second(name, rows)
    assert (len(first), len(second)) == (c1, c2)
    # the halves partition the part, in order, and never touch the teacher half
    assert first + second == data.w2s_part(name, rows)
    assert not set(data.teacher_half(rows)) & set(data.w2s_half(rows))
    assert data.teacher_half(rows) + data.w2s_half(rows) == rows


def test_load_subset(offline_data):
    part = data.load_subset("triviaqa", "w2s_part", offline_data)
    train = data.load_train("triviaqa", offline_data)
    assert [r["id"] for r in part] == [r["id"] for r in train[300:360]]
    with pytest.raises(data.DataError, match="choose from"):
        data.load_subset("triviaqa", "everything", offline_data)


def test_local_jsonl_layout_and_errors(tmp_path):
    (tmp_path / "hotpotqa").mkdir()
    rows = [{"id": f"q{i}", "question": f" Q{i}? ", "answer": f"A{i}", "type": "bridge"} for i in range(4)]
    (tmp_path / "hotpotqa" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = data.load_train("hotpotqa", str(tmp_path))
    assert [r["id"] for r in got] == ["q0", "q1", "q2", "q3"] and got[0]["question"] == "Q0?"
    with pytest.raises(data.DataError, match="layout of shared/offline/data"):
        data.load_test("hotpotqa", str(tmp_path))
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_train("hotpotqa", str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="unknown dataset 'mmlu'"):
        data.load_train("mmlu", str(tmp_path))


def test_duplicate_native_ids_fall_back_to_index_ids(tmp_path):
    (tmp_path / "hotpotqa").mkdir()
    rows = [{"id": "same", "question": "Q?", "answer": "A"}] * 3
    (tmp_path / "hotpotqa" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [r["id"] for r in data.load_train("hotpotqa", str(tmp_path))]
    assert ids == ["hotpotqa-train-00000", "hotpotqa-train-00001", "hotpotqa-train-00002"]


def test_process_arc_row_matches_processed_format():
    row = {
        "question": "Which is a mammal?",
        "choices": {"label": ["1", "2", "3", "4"], "text": ["shark", "whale", "trout", "eel"]},
        "answerKey": "2",
    }
    out = arc_challenge.process_arc_row(row)
    assert out == {"question": "Which is a mammal?\nA. shark\nB. whale\nC. trout\nD. eel", "answer": "B. whale"}


def test_hub_failure_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(data.DataError, match="--data-dir"):
        data.load_train("triviaqa")


def test_garbage_line_and_wrong_fields_are_one_line_errors(tmp_path):
    (tmp_path / "hotpotqa").mkdir()
    f = tmp_path / "hotpotqa" / "train.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "Q?", "answer": "A"}) + "\nthis is not json\n")
    with pytest.raises(data.DataError, match=r"train.jsonl, line 2: not valid JSON .*fix the data file"):
        data.load_train("hotpotqa", str(tmp_path))
    f.write_text(json.dumps({"id": "a", "query": "Q?", "label": "A"}) + "\n")
    with pytest.raises(data.DataError, match=r"row 1: expected the fields question, answer \(got id, query, label\)"):
        data.load_train("hotpotqa", str(tmp_path))
    (tmp_path / "triviaqa").mkdir()
    (tmp_path / "triviaqa" / "train.jsonl").write_text(json.dumps({"question": "Q?", "answer": "just text"}) + "\n")
    with pytest.raises(data.DataError, match=r"answer: \{value, aliases\}"):
        data.load_train("triviaqa", str(tmp_path))


def test_arc_from_the_hub_writes_nothing_into_the_repository(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(arc_challenge, "ARC_PROCESSED_DIR", tmp_path / "arc_challenge_processed")
    raw = [{"question": f"Q{i}?", "choices": {"label": ["A", "B"], "text": ["x", f"y{i}"]}, "answerKey": "B"} for i in range(3)]
    seen = []

    def fake_load(path, config, split=None, **kw):
        seen.append((path, config, split))
        return datasets.Dataset.from_list(raw)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    rows = data.load_split("arc_challenge", "test")
    assert seen == [("allenai/ai2_arc", "ARC-Challenge", "test")]
    assert [r["gold"] for r in rows] == ["B. y0", "B. y1", "B. y2"] and rows[0]["question"] == "Q0?\nA. x\nB. y0"
    assert not (tmp_path / "arc_challenge_processed").exists()
