import json
import os

import pytest

from alice import jsonl


def test_write_is_atomic_and_roundtrips(tmp_path):
    p = tmp_path / "sub" / "rows.jsonl"
    rows = [{"id": "a", "text": "é\nx"}, {"id": "b", "n": 2}]
    jsonl.write_jsonl(p, rows)
    assert jsonl.read_jsonl(p) == rows
    assert os.listdir(p.parent) == ["rows.jsonl"]  # no temporary file left behind


def test_failed_write_keeps_old_file(tmp_path):
    p = tmp_path / "rows.jsonl"
    jsonl.write_jsonl(p, [{"id": "old"}])

    def broken():
        yield {"id": "new"}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        jsonl.write_jsonl(p, broken())
    assert jsonl.read_jsonl(p) == [{"id": "old"}]
    assert os.listdir(tmp_path) == ["rows.jsonl"]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\n{"id": 2\n')
    with pytest.raises(jsonl.JsonlError, match=r"bad.jsonl, line 2: not valid JSON"):
        jsonl.read_jsonl(p)
    p.write_text('[1, 2]\n')
    with pytest.raises(jsonl.JsonlError, match="expected a JSON object"):
        jsonl.read_jsonl(p)


def test_missing_input_names_the_command(tmp_path):
    with pytest.raises(jsonl.MissingInputError, match=r"run `python cot/cot_generate_filter.py --data arc` first"):
        jsonl.read_jsonl(tmp_path / "none.jsonl", made_by="python cot/cot_generate_filter.py --data arc")


def test_progress_resumes_skips_and_finishes(tmp_path):
    final = tmp_path / "out.jsonl"
    pr = jsonl.Progress(final)
    pr.add([{"id": "q1", "v": 1}, {"id": "q2", "v": 2}])
    pr.add([{"id": "q1", "v": 99}])  # already done: not duplicated
    assert not pr.finished

    # a killed run: the process dies while writing a third row
    with open(pr.partial, "a") as f:
        f.write('{"id": "q3", "v"')
    pr2 = jsonl.Progress(final)
    assert pr2.done("q1") and pr2.done("q2") and not pr2.done("q3")
    pr2.add([{"id": "q3", "v": 3}])
    lines = pr2.partial.read_text().splitlines()
    assert lines[2] == '{"id": "q3", "v"' and json.loads(lines[3]) == {"id": "q3", "v": 3}  # half line isolated
    assert list(jsonl.Progress(final).rows) == ["q1", "q2", "q3"]

    rows = pr2.finish(order=["q3", "q1", "q2"])
    assert [r["v"] for r in rows] == [3, 1, 2]
    assert jsonl.read_jsonl(final) == rows
    assert not pr2.partial.exists() and jsonl.Progress(final).finished


def test_progress_custom_key(tmp_path):
    pr = jsonl.Progress(tmp_path / "g.jsonl", key=lambda r: (r["id"], r["sample"]))
    pr.add([{"id": "a", "sample": 0}, {"id": "a", "sample": 1}, {"id": "a", "sample": 0}])
    assert len(pr.rows) == 2
    assert len(jsonl.Progress(tmp_path / "g.jsonl", key=lambda r: (r["id"], r["sample"])).rows) == 2


def test_write_json(tmp_path):
    p = jsonl.write_json(tmp_path / "a" / "s.json", {"acc": 0.5})
    assert json.loads(p.read_text()) == {"acc": 0.5}
