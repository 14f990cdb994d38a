"""alice.records + alice.fresh: records by content, outputs checked against them, per-output locks, unique model
tags, file modes (issue 27: items 2, 6, 8, 9, 10, 13)."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from alice import fresh, pipeline, registry
from alice.jsonl import write_json, write_jsonl
from alice.paths import Layout

REPO = Path(__file__).resolve().parent.parent


def _model(folder: Path, weights: bytes = b"w" * 64) -> Path:
    """A folder shaped like a saved model (nothing loads it here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


# ---- 13: outputs honour the umask ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        a = write_jsonl(tmp_path / "a.jsonl", [{"id": 1}])
        b = write_json(tmp_path / "b.json", {"x": 1})
        fresh.record(a, {}, [])
    finally:
        os.umask(old)
    for p in (a, b, fresh.meta_path(a)):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


# ---- 2: two model folders of one name never share outputs ---------------------------------------------------------
def test_two_folders_of_one_name_get_their_own_outputs(tmp_path):
    a, b = _model(tmp_path / "a" / "answer", b"a" * 64), _model(tmp_path / "b" / "answer", b"b" * 64)
    assert registry.model_tag(str(a)) != registry.model_tag(str(b))
    assert all(registry.model_tag(str(x)).startswith("answer-") for x in (a, b))
    # every output of a pipeline run with one teacher is distinct from every output of the other
    common = ["--model", "custom", "--student", str(_model(tmp_path / "s", b"s" * 64)), "--root", str(tmp_path / "r"),
              "--original", "--with-naive"]
    outs = [{str(o) for st in pipeline.plan(pipeline.options_from_argv(["--teacher", str(t), *common]))
             for o in st.outputs if str(t) in " ".join(st.argv)} for t in (a, b)]
    assert outs[0] and outs[1] and not outs[0] & outs[1]
    # the same model copied elsewhere keeps its name (its outputs stay its own)
    c = tmp_path / "c" / "answer"
    shutil.copytree(a, c)
    assert registry.model_tag(str(c)) == registry.model_tag(str(a))


# ---- 9: a long model path fits in every file name -------------------------------------------------------------------
def test_long_model_paths_fit_every_file_and_log_name(tmp_path):
    deep = tmp_path / ("x" * 60)
    teacher = _model(deep / ("teacher-model-with-a-very-long-name-" + "t" * 70), b"t" * 64)
    student = _model(deep / ("student-model-with-a-very-long-name-" + "s" * 70), b"s" * 64)
    assert len(str(teacher)) > 140
    args = pipeline.options_from_argv(["--model", "custom", "--teacher", str(teacher), "--student", str(student),
                                       "--midlevel", str(student), "--root", str(tmp_path / "r"), "--original"])
    steps = pipeline.plan(args)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i, st in enumerate(steps, 1):
        for o in st.outputs:
            assert len(o.name.encode()) < 200, o.name
        argv, log, f = pipeline.open_log(logs, i, st)  # the step's log is opened (no 'File name too long')
        f.close()
        assert len(log.name) < 120


# ---- 6: an output is believed only if it checks against its record --------------------------------------------------
def test_a_truncated_or_edited_jsonl_output_is_not_believed(tmp_path):
    out = tmp_path / "model_outputs" / "o.jsonl"
    write_jsonl(out, [{"id": f"q{i}", "x": i} for i in range(6)])
    fresh.record(out, {"k": 1}, [])
    assert fresh.check_fresh(out, {"k": 1}, []) and fresh.believed(out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]))  # lost its last rows
    assert not fresh.believed(out)
    with pytest.raises(fresh.StaleOutputError, match="it has 4 rows, its record says 6") as e:
        fresh.check_fresh(out, {"k": 1}, [])
    assert "\n" not in str(e.value)
    assert fresh.check_fresh(out, {"k": 1}, [], overwrite=True) is False  # the pipeline's --overwrite: redone
    out.write_text("".join(lines).replace('"x": 3', '"x": 33'))  # same rows, edited content
    with pytest.raises(fresh.StaleOutputError, match="content differs"):
        fresh.check_fresh(out, {"k": 1}, [])


def test_a_damaged_input_is_refused_before_it_is_read(tmp_path):
    inp, out = tmp_path / "data" / "in.jsonl", tmp_path / "data" / "out.jsonl"
    write_jsonl(inp, [{"id": i} for i in range(5)])
    fresh.record(inp, {}, [])
    inp.write_text("".join(inp.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(fresh.StaleOutputError, match=r"input .*in.jsonl does not match its record: it has 3 rows"):
        fresh.check_fresh(out, {}, [inp])  # even before the output exists


def test_a_half_written_model_folder_is_not_believed(tmp_path):
    m = _model(tmp_path / "model_outputs" / "base" / "m", b"w" * 1000)
    fresh.record(m, {"lr": 1}, [])
    assert fresh.check_fresh(m, {"lr": 1}, [])
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    with pytest.raises(fresh.StaleOutputError, match="model.safetensors is 500 bytes, its record says 1,000"):
        fresh.check_fresh(m, {"lr": 1}, [])
    (m / "train_config.json").write_text("{}")  # a record of the run, not the model: still the same model
    w.write_bytes(b"w" * 1000)
    assert fresh.check_fresh(m, {"lr": 1}, [])


def test_large_weight_files_are_fingerprinted_by_size_header_and_ends(tmp_path):
    from alice import records

    p = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    size = records.WHOLE_LIMIT + 3 * records.CHUNK
    with open(p, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(size)
    fp = records.fingerprint(p)
    with open(p, "r+b") as f:  # the last MiB changes (a shard rewritten)
        f.seek(size - 10)
        f.write(b"x")
    assert records.fingerprint(p) != fp


# ---- 8: a root spelled relative or absolute, or copied, keeps its records ------------------------------------------
def test_a_record_holds_for_a_root_spelled_otherwise_or_copied(tmp_path, monkeypatch):
    root = tmp_path / "run"
    L = Layout(root)
    inp = write_jsonl(L.data / "CoT" / "in.jsonl", [{"id": 1, "q": "a"}])
    model = _model(L.models / "base" / "m")
    out = write_jsonl(L.data / "ours" / "out.jsonl", [{"id": 1}])
    fresh.record(out, {"n": 1}, [inp, model, "org/hub-model"])
    monkeypatch.chdir(tmp_path)
    rel = Layout(Path("run"))
    assert fresh.check_fresh(rel.data / "ours" / "out.jsonl", {"n": 1},
                             [rel.data / "CoT" / "in.jsonl", rel.models / "base" / "m", "org/hub-model"])
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new files, new modification times
    C = Layout(copy)
    ins = [C.data / "CoT" / "in.jsonl", C.models / "base" / "m", "org/hub-model"]
    assert fresh.check_fresh(C.data / "ours" / "out.jsonl", {"n": 1}, ins)
    assert fresh.believed(C.data / "ours" / "out.jsonl")
    # the copy's input is its own: changing it (not the original's) makes the copy's output stale
    write_jsonl(C.data / "CoT" / "in.jsonl", [{"id": 1, "q": "b"}])
    with pytest.raises(fresh.StaleOutputError, match="data/CoT/in.jsonl changed since"):
        fresh.check_fresh(C.data / "ours" / "out.jsonl", {"n": 1}, ins)
    assert fresh.check_fresh(L.data / "ours" / "out.jsonl", {"n": 1}, [inp, model, "org/hub-model"])


def test_command_lines_name_paths_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    a = fresh.command_line(["--model", "custom", "--root", "run", "--data-dir", "./run", "--limit", "4"])
    b = fresh.command_line(["--model", "custom", "--root", str(tmp_path / "run"), "--data-dir", str(tmp_path / "run"),
                            "--limit", "4", "--overwrite"])
    assert a == b


# ---- 10: one run per output -----------------------------------------------------------------------------------------
def test_a_second_run_on_one_output_stops_in_one_line(tmp_path):
    out = tmp_path / "model_outputs" / "o.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from alice import fresh\n"
                               f"with fresh.lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(fresh.BusyOutputError, match="another run is making .*o.jsonl right now") as e:
            with fresh.lock(out):
                pass
        assert "\n" not in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    with fresh.lock(out):  # free again once the other run is gone (even killed)
        pass


# ---- a run packed on the GPU machine without its weights (bench/oneoff/real_results_json.py) ----------------------
def test_a_packed_run_without_weights_is_read_by_its_models_records(tmp_path):
    """The results of a GPU run come back without the trained weights; its evaluations stay believed as long as each
    model folder's other files match the model's own record, and only there (fresh.weights_packed_out)."""
    L = Layout(tmp_path / "run")
    m = _model(L.models / "base" / "m", b"w" * 1000)
    (m / "tokenizer.json").write_text("{}")
    fresh.record(m, {"lr": 1}, [])
    ev = write_jsonl(L.root / "model_outputs" / "eval" / "d" / "m.jsonl", [{"id": 1}])
    fresh.record(ev, {}, [m])
    assert fresh.stale_reason(ev) is None
    (m / "model.safetensors").unlink()  # what the pack leaves out
    assert "changed after it was made" in fresh.stale_reason(ev)
    with fresh.weights_packed_out():
        assert fresh.stale_reason(ev) is None
    assert fresh.stale_reason(ev) is not None  # only inside the context
    (m / "tokenizer.json").write_text('{"x": 1}')  # another file changed: not the recorded model
    with fresh.weights_packed_out():
        assert "changed after it was made" in fresh.stale_reason(ev)
    (m / "tokenizer.json").write_text("{}")
    (m / "config.json").unlink()  # a missing file that is not a weight file
    with fresh.weights_packed_out():
        assert fresh.stale_reason(ev) is not None
