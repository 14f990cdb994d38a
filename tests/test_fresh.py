"""alice.fresh: outputs record their settings and input fingerprints; reruns compare against them."""

import os

import pytest

from alice import fresh


def _bump(p):
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_check_fresh_absent_same_other_and_overwrite(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"id": 1}\n')
    assert fresh.check_fresh(out, {"n": 4}, [inp]) is False  # absent: do the work
    out.write_text("rows\n")
    with pytest.raises(fresh.StaleOutputError, match="no record of the settings"):
        fresh.check_fresh(out, {"n": 4}, [inp])  # made by hand / an older version
    fresh.record(out, {"n": 4, "model": "org/m"}, [inp, "org/m"], argv=["--n", "4"])
    assert fresh.check_fresh(out, {"n": 4, "model": "org/m"}, [inp, "org/m"]) is True
    with pytest.raises(fresh.StaleOutputError) as e:
        fresh.check_fresh(out, {"n": 100, "model": "org/m"}, [inp, "org/m"])
    assert "\n" not in str(e.value) and "n 4 -> 100" in str(e.value) and "--overwrite" in str(e.value)
    assert fresh.check_fresh(out, {"n": 100, "model": "org/m"}, [inp, "org/m"], overwrite=True) is False
    # same settings with --overwrite: kept
    assert fresh.check_fresh(out, {"n": 4, "model": "org/m"}, [inp, "org/m"], overwrite=True) is True
    # another hub model as input: made otherwise
    with pytest.raises(fresh.StaleOutputError, match="other inputs|another revision"):
        fresh.check_fresh(out, {"n": 4, "model": "org/m"}, [inp])


def test_a_changed_input_makes_the_output_stale(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("a\n")
    out.write_text("b\n")
    fresh.record(out, {}, [inp])
    inp.write_text("c\n")
    _bump(inp)
    with pytest.raises(fresh.StaleOutputError, match=r"in.jsonl changed since"):
        fresh.check_fresh(out, {}, [inp])
    inp.unlink()
    with pytest.raises(fresh.StaleOutputError, match=r"in.jsonl is gone"):
        fresh.check_fresh(out, {}, [inp])


def test_model_folder_fingerprint_ignores_records(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"w" * 10)
    fp = fresh.fingerprint(m)
    (m / "train_config.json").write_text("{}")
    (m / "checkpoints.meta.json").write_text("{}")
    assert fresh.fingerprint(m) == fp
    (m / "model.safetensors").write_bytes(b"v" * 11)  # retrained
    assert fresh.fingerprint(m) != fp
    assert fresh.output_exists(m) and fresh.fingerprint(tmp_path / "nope") is None


def test_commands_that_make_an_output_are_remembered(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("x\n")
    fresh.record(out, {"k": 1}, [], argv=["--student", "A"])
    assert fresh.check_fresh(out, {"k": 1}, [], argv=["--student", "B"])  # another command, same content
    assert fresh.read_meta(out)["argvs"] == [["--student", "A"], ["--student", "B"]]
    assert fresh.command_line(["--a", "1", "--overwrite"]) == ["--a", "1"]


def test_git_commit_names_the_code_of_a_results_file(tmp_path, monkeypatch):
    """$ALICE_COMMIT first (a copy of the checkout without .git), else git's HEAD of the folder, else None."""
    monkeypatch.delenv("ALICE_COMMIT", raising=False)
    head = fresh.git_commit()
    assert head is None or (len(head) == 40 and all(c in "0123456789abcdef" for c in head))
    assert fresh.git_commit(tmp_path) is None  # not a git checkout
    monkeypatch.setenv("ALICE_COMMIT", "abc123")
    assert fresh.git_commit(tmp_path) == "abc123"
