"""Results you can trust when data, models or folders change (issue 27), end to end on tiny models: each stage
refuses outputs made from other data or damaged since, the report refuses an evaluation older than its model, the
pipeline believes a root however it is spelled, engines die with their parent, and a SIGTERM is never swallowed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alice import alice_stages as st
from alice import data as data_mod
from alice import fresh, generation, pipeline, report
from alice.jsonl import JsonlError, read_jsonl, write_jsonl
from alice.options import GenerationOptions
from alice.paths import Layout, eval_run_name
from alice.testing import load_script

REPO = Path(__file__).resolve().parent.parent
evaluation = load_script("evaluation.py")
SFT = load_script("training/SFT.py")


def gsm8k(folder: Path, n_test=5, offset=0, n_train=40) -> str:
    """gsm8k in the layout of shared/offline/data; ``offset`` changes every gold answer (other data)."""
    write_jsonl(folder / "gsm8k" / "train.jsonl", [
        {"question": f"Tom has {i} apples and buys {i + 1} more. How many apples?",
         "answer": f"He has {i}+{i + 1} = {2 * i + 1 + offset} apples.\n#### {2 * i + 1 + offset}"} for i in range(n_train)])
    write_jsonl(folder / "gsm8k" / "test.jsonl", [
        {"question": f"Natalia sold {i} clips and {i + 2} more. How many?",
         "answer": f"{i}+{i + 2}={2 * i + 2 + offset}\n#### {2 * i + 2 + offset}"} for i in range(n_test)])
    return str(folder)


def ev(root, data_dir, *extra):
    return ["--data", "gsm8k", "--model", "custom", "--data-dir", str(data_dir), "--root", str(root), "--backend", "hf",
            "--max-new-tokens", "4", *map(str, extra)]


def one_line_exit(capsys, fn, *a):
    """``fn(*a)`` exits with status 2 and one line on stderr; returns that line."""
    with pytest.raises(SystemExit) as e:
        fn(*a)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert err and "Traceback" not in err
    return err.splitlines()[-1]


# ---- 1: evaluation rerun on other test questions ------------------------------------------------------------------
def test_evaluation_on_other_test_questions_is_not_up_to_date(tiny_models, tmp_path, capsys):
    a, b = gsm8k(tmp_path / "a"), gsm8k(tmp_path / "b", offset=1)
    student = str(tiny_models["qwen_small"])
    flags = ["--student", student, "--method", "naive"]
    evaluation.main(ev(tmp_path / "r", a, *flags))
    line = one_line_exit(capsys, evaluation.main, ev(tmp_path / "r", b, *flags))
    assert "gsm8k test split holds other rows" in line and "--overwrite" in line
    s = evaluation.main(ev(tmp_path / "r", b, *flags, "--overwrite"))
    preds = read_jsonl(s["predictions"])
    assert [p["gold"] for p in preds] == [r["gold"] for r in data_mod.load_test("gsm8k", b)]  # B's questions, answered


# ---- 6: damaged predictions ------------------------------------------------------------------------------------
def test_predictions_missing_their_last_lines_are_not_regraded_into_a_smaller_n(tiny_models, tmp_path, capsys):
    d, student = gsm8k(tmp_path / "d", n_test=6), str(tiny_models["qwen_small"])
    flags = ["--student", student, "--method", "naive"]
    s = evaluation.main(ev(tmp_path / "r", d, *flags))
    pred = Path(s["predictions"])
    pred.write_text("".join(pred.read_text().splitlines(keepends=True)[:4]))
    line = one_line_exit(capsys, evaluation.main, ev(tmp_path / "r", d, *flags))
    assert "it has 4 rows, its record says 6" in line and "--overwrite" in line
    assert json.loads(Path(s["predictions"].replace(".jsonl", "_summary.json")).read_text())["n"] == 6
    assert evaluation.main(ev(tmp_path / "r", d, *flags, "--overwrite"))["n"] == 6


# ---- 3: data is part of every record -----------------------------------------------------------------------------
def test_pipeline_redoes_an_evaluation_made_from_other_data(tiny_models, tmp_path):
    """The pipeline's skip test (Step.done) and the stage's own check both see another --data-dir."""
    a, b = gsm8k(tmp_path / "a"), gsm8k(tmp_path / "b", offset=3)
    student, root = str(tiny_models["qwen_small"]), tmp_path / "r"

    def step(d):
        return pipeline.Step("eval", [sys.executable, "evaluation.py", *ev(root, d, "--student", student, "--method",
                                                                            "naive")],
                             [Layout(root).eval_summary("gsm8k", eval_run_name("custom", student, "naive"))])

    evaluation.main(step(a).argv[2:])
    assert step(a).done() and not step(b).done()
    s = evaluation.main(step(b).argv[2:] + ["--overwrite"])  # what the pipeline runs for a step not done
    assert [p["gold"] for p in read_jsonl(s["predictions"])] == [r["gold"] for r in data_mod.load_test("gsm8k", b)]
    assert step(b).done() and not step(a).done()


def _cfg(tmp_path) -> str:
    p = tmp_path / "acc.yaml"
    text = (REPO / "accelerate_config.yaml").read_text()
    text = text.replace("# sft.per_device_train_batch_size: 1", "# sft.per_device_train_batch_size: 2")
    p.write_text(text.replace("# sft.gradient_accumulation_steps: 16", "# sft.gradient_accumulation_steps: 1"))
    return str(p)


def sft(root, data_dir, cfg, *flags):
    return SFT.main(["--model", "custom", "--data", "gsm8k", "--root", str(root), "--data-dir", str(data_dir),
                     "--config-file", cfg, "--max-steps", "1", "--save-steps", "1000", "--limit", "4",
                     *map(str, flags)])


def test_sft_on_other_data_is_not_up_to_date_and_damaged_weights_are_not_believed(tiny_models, tmp_path, capsys):
    a, b = gsm8k(tmp_path / "a"), gsm8k(tmp_path / "b", offset=5)
    cfg, root, student = _cfg(tmp_path), tmp_path / "r", str(tiny_models["qwen_small"])
    sft(root, a, cfg, "--method", "base", "--student", student)
    assert sft(root, a, cfg, "--method", "base", "--student", student) is None  # same data: up to date
    line = one_line_exit(capsys, sft, root, b, cfg, "--method", "base", "--student", student)  # 3: other data
    assert "rows" in line and "--overwrite" in line

    # 6: a half-written model.safetensors is neither up to date nor evaluated
    out = Layout(root).base_model("custom", student, "gsm8k")
    w = out / "model.safetensors"
    size = w.stat().st_size
    w.write_bytes(w.read_bytes()[: size // 2])
    line = one_line_exit(capsys, sft, root, a, cfg, "--method", "base", "--student", student)
    assert f"model.safetensors is {size // 2:,} bytes, its record says {size:,}" in line
    line = one_line_exit(capsys, evaluation.main, ev(root, a, "--student", student, "--method", "base"))
    assert "does not match its record" in line
    assert sft(root, a, cfg, "--method", "base", "--student", student, "--overwrite")["rows"] == 4  # redone


ARGS = GenerationOptions(max_new_tokens=8, seed=0)


class Scripted:
    """A generation engine that answers from a function (``reply(model, text, k)``), as tests/test_alice_stages.py."""

    default_chunk_size = 4

    def __init__(self, model, reply):
        self.model, self.reply = model, reply

    def generate(self, conversations, sampling, desc=""):
        return [[self.reply(self.model, c[-1]["content"], k) for k in range(sampling.n)] for c in conversations]

    def close(self):
        pass


def _agree(model, text, k):  # two clusters per question: the teacher is unsure everywhere
    return ["#### 1", "#### 2"][k % 2]


def _setting(tmp_path, data_dir):
    s = st.Setting(data="gsm8k", model="custom", teacher="t", student="x/student", layout=Layout(tmp_path / "r"),
                   data_dir=str(data_dir), limit=4)
    s.sampler_model.mkdir(parents=True, exist_ok=True)
    (s.sampler_model / "config.json").write_text("{}")
    return s


def test_alice_stages_on_other_data_and_damaged_stage_files(tmp_path):
    a, b = gsm8k(tmp_path / "a"), gsm8k(tmp_path / "b", offset=7)
    s = _setting(tmp_path, a)
    make = lambda m: Scripted(m, _agree)  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    assert len(read_jsonl(s.uncertainty)) == 4
    # 3: the cluster stage on other questions is not up to date
    with pytest.raises(fresh.StaleOutputError, match="gsm8k train split holds other rows"):
        st.run_cluster(_setting(tmp_path, b), ARGS, num_samples=4, make_generator=make)
    # 6: a stage file missing its last rows is not fed downstream (nor believed by the pipeline)
    s.uncertainty.write_text("".join(s.uncertainty.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(fresh.StaleOutputError, match="does not match its record: it has 2 rows, its record says 4"):
        st.run_zeroshot(s, ARGS, make_generator=make)
    assert not fresh.believed(s.uncertainty)


def test_a_null_zero_shot_answer_is_refused(tmp_path):
    """7: the student's zero-shot answer came back null (a broken engine): the final stage stops in one line."""
    s = _setting(tmp_path, gsm8k(tmp_path / "a"))
    make = lambda m: Scripted(m, _agree)  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=lambda m: Scripted(m, lambda *a: None))
    with pytest.raises(JsonlError, match="'zero_shot_student_response' is not text"):
        st.run_final(s, ARGS, make_generator=make)
    assert not s.train.exists()


# ---- 7: bad test sets --------------------------------------------------------------------------------------------
def test_an_empty_test_set_is_a_one_line_error(tiny_models, tmp_path, capsys):
    d = gsm8k(tmp_path / "d")
    (Path(d) / "gsm8k" / "test.jsonl").write_text("")
    line = one_line_exit(capsys, evaluation.main, ev(tmp_path / "r", d, "--student", tiny_models["qwen_small"],
                                                     "--method", "naive"))
    assert "no questions" in line
    assert not list((tmp_path / "r").rglob("*_summary.json"))


def test_a_gsm8k_gold_without_its_final_line_is_refused(tmp_path):
    d = gsm8k(tmp_path / "d")
    rows = read_jsonl(Path(d) / "gsm8k" / "test.jsonl")
    rows[2]["answer"] = "the answer is 6"
    write_jsonl(Path(d) / "gsm8k" / "test.jsonl", rows)
    with pytest.raises(data_mod.DataError, match=r"row 3: its answer has no final '#### <number>' line"):
        data_mod.load_test("gsm8k", d)


# ---- 4: the report refuses an evaluation older than its model ---------------------------------------------------
def test_report_refuses_an_evaluation_older_than_its_model(tiny_models, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    d, root = gsm8k(tmp_path / "d"), tmp_path / "r"
    L = Layout(root)
    teacher, student = str(tiny_models["qwen_small"]), str(tiny_models["qwen_large"])
    for size in (teacher, student):  # trained models where SFT puts them (copies of fixtures)
        shutil.copytree(size, L.base_model("custom", size, "gsm8k"))
        evaluation.main(ev(root, d, "--student", size, "--method", "base", "--limit", 2))
    rep = report.build(L, "custom", teacher, student, "gsm8k", data_dir=d)
    assert not {r["key"]: r for r in rep["rows"]}["strong"]["missing"]
    w = L.base_model("custom", student, "gsm8k") / "model.safetensors"  # the strong model is retrained
    save_file({k: v * 1.5 for k, v in load_file(w).items()}, w, metadata={"format": "pt"})
    rep = report.build(L, "custom", teacher, student, "gsm8k", data_dir=d)
    strong = {r["key"]: r for r in rep["rows"]}["strong"]
    assert strong["missing"] and "changed after it was made" in strong["stale"] and "accuracy" not in strong
    assert any("stale" in w for w in rep["warnings"])
    assert "STALE" in "\n".join(report.table_lines(rep))


# ---- 8: one root, however it is spelled ---------------------------------------------------------------------------
def test_a_root_spelled_relative_or_absolute_or_copied_keeps_its_outputs(tiny_models, tmp_path, monkeypatch):
    d = gsm8k(tmp_path / "d")
    student = str(tiny_models["qwen_small"])
    monkeypatch.chdir(tmp_path)

    def step(root):
        return pipeline.Step("eval", [sys.executable, "evaluation.py", *ev(root, d, "--student", student, "--method",
                                                                            "naive")],
                             [Layout(Path(root)).eval_summary("gsm8k", eval_run_name("custom", student, "naive"))])

    evaluation.main(step("run").argv[2:])
    assert step("run").done() and step(str(tmp_path / "run")).done() and step("./run/").done()
    shutil.copytree(tmp_path / "run", tmp_path / "moved", copy_function=shutil.copy)
    monkeypatch.setattr(generation.Generator, "_load", lambda self: pytest.fail("the copy's evaluation was redone"))
    s = evaluation.main(step("moved").argv[2:] + ["--overwrite"])  # the pipeline's run of a step it did not skip
    assert s["n"] == 5 and step("moved").done()


# ---- 11, 12: one line, before any model loads -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["a file", "under /proc", "under a file"])
def test_bad_roots_are_one_line_errors_before_anything_runs(where, tiny_models, tmp_path, capsys, monkeypatch):
    d = gsm8k(tmp_path / "d")
    monkeypatch.setattr(generation.Generator, "_load", lambda self: pytest.fail("a model loaded"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    root = {"a file": a_file, "under /proc": "/proc/alice-root", "under a file": a_file / "sub"}[where]
    line = one_line_exit(capsys, evaluation.main, ev(root, d, "--student", tiny_models["qwen_small"],
                                                     "--method", "naive"))
    assert "--root" in line


@pytest.mark.parametrize("kind,says", [("empty", "it is empty"), ("junk", "not a readable JSON config"),
                                       ("missing hub id", "not in the local Hugging Face cache")])
def test_bad_models_are_one_line_errors(kind, says, tmp_path, capsys, monkeypatch):
    d = gsm8k(tmp_path / "d")
    model = tmp_path / "model"
    if kind != "missing hub id":
        model.mkdir()
    if kind == "junk":
        (model / "notes.txt").write_text("not a model")
        (model / "config.json").write_text("{not json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = "nobody-here/no-such-model" if kind == "missing hub id" else model
    line = one_line_exit(capsys, evaluation.main, ev(tmp_path / "r", d, "--student", model, "--method", "naive"))
    assert says in line, line


def test_a_model_folder_under_home_is_found(tiny_models, tmp_path, monkeypatch):
    d = gsm8k(tmp_path / "d")
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tiny_models["qwen_small"], tmp_path / "mine")
    assert evaluation.main(ev(tmp_path / "r", d, "--student", "~/mine", "--method", "naive", "--limit", 1))["n"] == 1


@pytest.mark.parametrize("case", ["seed", "eval type flag", "sft type flag", "threshold", "teacher larger"])
def test_bad_flag_values_are_one_line_errors(case, tiny_models, tmp_path, capsys):
    d = gsm8k(tmp_path / "d")
    small, large = str(tiny_models["qwen_small"]), str(tiny_models["qwen_large"])
    cluster = load_script("W2SG_pipeline/ours/new_weak_to_strong_cluster.py")
    stage = ["--data", "hotpotqa", "--model", "custom", "--root", str(tmp_path / "r")]
    fn, argv, says = {
        "seed": (evaluation.main, ev(tmp_path / "r", d, "--student", small, "--method", "naive", "--seed", "-1"),
                 "--seed"),
        "eval type flag": (evaluation.main, ev(tmp_path / "r", d, "--student", small, "--method", "naive",
                                               "--ours-wts-type", "cascade"),
                           "--method naive takes no --ours-wts-type"),
        "sft type flag": (SFT.main, ["--model", "custom", "--data", "gsm8k", "--student", small, "--method", "base",
                                     "--ours-wts-type", "singleturn", "--root", str(tmp_path / "r")],
                          "takes no --ours-wts-type"),
        "threshold": (cluster.main, [*stage, "--teacher", small, "--student", large, "--similarity-threshold", "2"],
                      "[-1, 1]"),
        "teacher larger": (cluster.main, [*stage, "--teacher", large, "--student", small], "larger than --student"),
    }[case]
    assert says in one_line_exit(capsys, fn, argv)


@pytest.mark.parametrize("argv,says", [
    (["--teacher", "1.5B", "--student", "1.5B"], "--teacher 1.5B is not smaller than --student 1.5B"),
    (["--teacher", "3B", "--student", "1.5B"], "is not smaller than"),
    (["--extra-gen-args", "--seed '1"], "--extra-gen-args: No closing quotation"),
    (["--extra-gen-args", "--bogus-flag 1"], "unrecognized arguments: --bogus-flag 1"),
    (["--extra-sft-args", "--lr -1"], "step 'base 0.5B' (training/SFT.py): argument --lr"),
    # the stage's own parse, not only its parser: a check it makes of its flags is found before the first step too
    (["--seed-exact", "--set", "final.final_tries=2"],
     "step 'alice 0.5B->1.5B final' (W2SG_pipeline/ours/new_weak_to_strong_final.py): --seed-exact samples one"),
])
def test_pipeline_checks_its_flags_before_its_first_step(argv, says, tmp_path, capsys):
    assert says in one_line_exit(capsys, pipeline.main, [*argv, "--root", str(tmp_path / "r"), "--dry-run"])


def test_pipeline_checks_root_and_models_before_its_first_step(tiny_models, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = one_line_exit(capsys, pipeline.main, ["--root", str(tmp_path / "file")])
    assert "--root" in line and "is a file" in line
    rc = pipeline.main(["--root", str(tmp_path / "r"), "--model", "custom", "--teacher", str(tiny_models["qwen_small"]),
                        "--student", str(tiny_models["qwen_large"]), "--data", "hotpotqa", "--embedding-model",
                        "no-such-embedder"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "--embedding-model no-such-embedder is not in the local Hugging Face cache" in err
    assert not (tmp_path / "r" / "model_outputs" / "logs").exists()


def test_an_unknown_embedding_model_is_found_before_any_sampling(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "d" / "hotpotqa"
    write_jsonl(d / "train.jsonl", [{"id": f"h{i}", "question": f"q{i}?", "answer": "a"} for i in range(20)])
    s = st.Setting(data="hotpotqa", model="custom", teacher="t", student="s", layout=Layout(tmp_path / "r"),
                   data_dir=str(tmp_path / "d"), limit=2)
    s.sampler_model.mkdir(parents=True)
    (s.sampler_model / "config.json").write_text("{}")
    calls = []
    with pytest.raises(Exception, match="--embedding-model no-such-embedder is not in the local Hugging Face cache"):
        st.run_cluster(s, ARGS, num_samples=2, embedding_model="no-such-embedder",
                       make_generator=lambda m: calls.append(m) or Scripted(m, _agree))
    assert calls == []  # nothing sampled


# ---- 5: processes die with their run -----------------------------------------------------------------------------
ENGINE_LIKE = r"""
import multiprocessing as mp, os, subprocess, sys, time
from alice import lifeline

def engine_core():  # like vLLM's EngineCore: a forked process that starts a worker of its own
    w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(os.getpid(), w.pid, flush=True)
    time.sleep(120)

if __name__ == "__main__":
    lifeline.guard()
    p = mp.get_context("fork").Process(target=engine_core)
    p.start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_takes_the_engine_processes_along(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(ENGINE_LIKE)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    time.sleep(1.5)  # the watchdog has noted them
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "engine-like processes outlived a kill -9 of their parent"


FINALIZER_STEP = """
import os, signal

class Engine:
    def __del__(self):  # a SIGTERM that lands in a finalizer: its exception is printed and swallowed there
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10 ** 6):
            pass

def parse(flags):  # a stage (alice.stages' interface): the pipeline runs run(parse(flags)) in its process
    return flags


def run(cfg):
    e = Engine()
    del e
"""


def test_a_sigterm_inside_a_finalizer_stops_the_run(tmp_path):
    (tmp_path / "first.py").write_text(FINALIZER_STEP)
    marker = tmp_path / "second_ran"
    (tmp_path / "second.py").write_text(f"def parse(flags):\n    return flags\n\n\ndef run(cfg):\n"
                                        f"    open({str(marker)!r}, 'w').close()\n")
    code = ("import sys; from pathlib import Path; from alice import pipeline\n"
            f"sys.path.insert(0, {str(tmp_path)!r}); import first, second\n"
            f"steps = [pipeline.Step('one', [sys.executable, {str(tmp_path / 'first.py')!r}], stage=first),\n"
            f"         pipeline.Step('two', [sys.executable, {str(tmp_path / 'second.py')!r}], stage=second)]\n"
            f"sys.exit(pipeline.terminable(pipeline.execute, steps, Path({str(tmp_path / 'logs')!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 128 + signal.SIGTERM, r.stdout + r.stderr
    assert not marker.exists() and "terminated (SIGTERM)" in r.stderr
