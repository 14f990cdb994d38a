"""The four Alice stages: in-process with scripted generators (exact rows), and both shell scripts end to end on
tiny fixture models (every file's rows, labels and ids; a rerun adds nothing)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alice import alice_stages as st
from alice import fresh
from alice.jsonl import JsonlError, MissingInputError, read_jsonl, write_jsonl
from alice.options import GenerationOptions
from alice.paths import Layout
from alice.testing import build_controlled_model

REPO = Path(__file__).resolve().parent.parent
OURS = REPO / "W2SG_pipeline" / "ours"
ARGS = GenerationOptions(max_new_tokens=8, seed=0)


def write_data(folder: Path, name="hotpotqa", n=100) -> Path:
    """A local data folder: n train questions (w2s part: rows 50-59; cascade second half: rows 55-59)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    with open(folder / name / "train.jsonl", "w") as f:
        for i in range(n):
            if name == "gsm8k":
                row = {"question": f"q{i}: what is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            else:
                row = {"id": f"h{i:03d}", "question": f"q{i}: who?", "answer": f"a{i}", "type": "bridge"}
            f.write(json.dumps(row) + "\n")
    return folder


def fake_model(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


class ScriptedGenerator:
    """Stands in for ``generation.Generator``: ``reply(model, prompt_text, k)`` makes each text; records prompts."""

    default_chunk_size = 2

    def __init__(self, model, reply, log, fail_after=None):
        self.model, self.reply, self.log, self.fail_after = model, reply, log, fail_after
        self.calls = 0

    def generate(self, conversations, sampling, desc=""):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            self.log.append((self.model, text))
            out.append([self.reply(self.model, text, k) for k in range(sampling.n)])
        return out

    def close(self):
        pass


def qnum(text):
    """The question number i of 'q{i}: who?' in a prompt."""
    return int(re.search(r"\bq(\d+): ", text).group(1))


def final(i):
    """The scripted student's final answer to question i: well-formed for hotpotqa (>= 40 non-space characters)."""
    return f"final q{i}: the question names one person, so step by step the answer is Paris"


def reply(model, text, k):
    if "Your task is to analyze" in text:  # the summarizer
        return f"unsure about q{qnum(text)}"
    if "Here is your original answer" in text:  # the student's final answer
        return final(qnum(text))
    if model.endswith("student"):  # zero-shot
        return f"zs q{qnum(text)}"
    i = qnum(text)  # the teacher: by question number
    if i % 3 == 0:
        return "Paris"  # one cluster -> 'original'
    if i % 3 == 1:
        return ["Paris", "Rome"][k % 2]  # two clusters -> 'new'
    return f"guess {k}"  # all different -> N/A


def identity_encode(question, responses):
    """Embeddings equal exactly for equal texts: clusters = groups of identical responses."""
    vocab = {r: i for i, r in enumerate(dict.fromkeys(responses))}
    e = np.zeros((len(responses), len(vocab)))
    e[np.arange(len(responses)), [vocab[r] for r in responses]] = 1
    return e


@pytest.fixture
def setting(tmp_path):
    data = write_data(tmp_path / "data_in")
    s = st.Setting(data="hotpotqa", model="custom", teacher="teach", student="x/student", layout=Layout(tmp_path / "root"),
                   data_dir=str(data))
    return s


def run_all(s, log, gens=None):
    def make(model):
        g = ScriptedGenerator(model, reply, log)
        if gens is not None:
            gens.append(g)
        return g

    counts = [
        st.run_cluster(s, ARGS, num_samples=4, make_generator=make, encode=identity_encode),
        st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make),
        st.run_zeroshot(s, ARGS, make_generator=make),
        st.run_final(s, ARGS, make_generator=make),
    ]
    return counts


def test_stages_rows_labels_and_ids(setting):
    s = setting
    fake_model(s.sampler_model)
    log = []
    c_cluster, c_unc, c_zs, c_final = run_all(s, log)
    # w2s part = questions 50..59: i%3==0 -> one cluster (51, 54, 57), i%3==1 -> two (52, 55, 58), else N/A
    assert c_cluster["questions"] == 10 and c_cluster["na"] == 4
    assert (c_cluster["one_cluster"], c_cluster["several_clusters"]) == (3, 3)
    clustered = read_jsonl(s.clustered)
    assert [r["id"] for r in clustered] == ["h051", "h052", "h054", "h055", "h057", "h058"]
    r52 = clustered[1]
    assert r52["sampled_responses"] == ["Paris", "Rome", "Paris", "Rome"]
    assert r52["clusters"] == [{"response": "Paris", "size": 2, "members": [0, 2]},
                               {"response": "Rome", "size": 2, "members": [1, 3]}]
    assert r52["final_response"] == "Paris"
    # the teacher was asked the bare question, 4 samples each, at the paper's temperature
    assert sum(1 for m, _ in log if m == str(s.sampler_model)) == 10

    originals = read_jsonl(s.originals)
    assert originals == [{"id": f"h{i:03d}", "question": f"q{i}: who?", "answer": "Paris", "label": "original"}
                         for i in (51, 54, 57)]
    unc = read_jsonl(s.uncertainty)
    assert [(r["id"], r["uncertainty"]) for r in unc] == [(f"h{i:03d}", f"unsure about q{i}") for i in (52, 55, 58)]
    assert (c_unc["original"], c_unc["uncertain"]) == (3, 3)
    summ_prompts = [t for m, t in log if m == "summ"]
    assert "1. Paris\n2. Rome\n" in summ_prompts[0]  # one representative per cluster

    zs = read_jsonl(s.zeroshot)
    assert [(r["id"], r["zero_shot_student_response"]) for r in zs] == [(f"h{i:03d}", f"zs q{i}") for i in (52, 55, 58)]
    train = read_jsonl(s.train)
    assert [(r["id"], r["label"], r["answer"]) for r in train] == [
        ("h051", "original", "Paris"), ("h052", "new", final(52)), ("h054", "original", "Paris"),
        ("h055", "new", final(55)), ("h057", "original", "Paris"), ("h058", "new", final(58))]
    assert all(set(r) == {"id", "question", "answer", "label"} for r in train)
    assert (c_final["original"], c_final["new"]) == (3, 3)
    # no generation checkpoints left behind
    assert not list(s.train.parent.glob("*.gen*"))

    # a rerun of every stage does nothing and changes no file
    before = {p: p.read_bytes() for p in s.train.parent.iterdir()}
    log.clear()
    assert run_all(s, log) == [None, None, None, None]
    assert log == [] and {p: p.read_bytes() for p in s.train.parent.iterdir()} == before


def test_final_joins_by_id_not_line_position(setting):
    s = setting
    fake_model(s.sampler_model)
    log = []

    def make(model):
        return ScriptedGenerator(model, reply, log)

    st.run_cluster(s, ARGS, num_samples=4, make_generator=make, encode=identity_encode)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=make)
    zs = read_jsonl(s.zeroshot)
    s.zeroshot.write_text("".join(json.dumps(r) + "\n" for r in reversed(zs)))  # another order
    fresh.rerecord(s.zeroshot)  # as if the stage had written that order (an edit by hand is refused)
    log.clear()
    st.run_final(s, ARGS, make_generator=make)
    finals = [t for _, t in log]
    assert len(finals) == 3
    for t in finals:
        i = qnum(t)
        assert f"Here is your original answer: zs q{i}\n" in t
        assert f"Here is another model's uncertainty statement: unsure about q{i}\n" in t


def test_generation_resumes_after_a_kill(setting):
    s = setting
    fake_model(s.sampler_model)
    log, made = [], []

    def dying(model):
        g = ScriptedGenerator(model, reply, log, fail_after=2)  # dies after 2 chunks of 2 questions
        made.append(g)
        return g

    with pytest.raises(KeyboardInterrupt):
        st.run_cluster(s, ARGS, num_samples=4, make_generator=dying, encode=identity_encode)
    assert not s.clustered.exists() and len(log) == 4
    log.clear()
    st.run_cluster(s, ARGS, num_samples=4, make_generator=lambda m: ScriptedGenerator(m, reply, log),
                   encode=identity_encode)
    assert len(log) == 6  # only the 6 questions left
    assert len(read_jsonl(s.clustered)) == 6


def test_missing_inputs_name_the_command(setting, tmp_path):
    s = setting
    with pytest.raises(MissingInputError, match=r"training/SFT.py --model custom --data hotpotqa --teacher teach "
                                                r"--method ours-wts-stage1 --ours-wts-type singleturn --data-dir \S+data_in --root \S+root`"):
        st.run_cluster(s, ARGS)
    c = st.Setting(**{**s.__dict__, "method": "cascade", "midlevel": "mid"})
    with pytest.raises(MissingInputError, match=r"--teacher teach --student mid --method ours-wts-stage2 "
                                                r"--ours-wts-type cascade1"):
        st.run_cluster(c, ARGS)
    with pytest.raises(MissingInputError, match=r"new_weak_to_strong_cluster.py --model custom --data hotpotqa .*--method cascade --midlevel mid"):
        st.run_uncertainty(c, ARGS)
    with pytest.raises(MissingInputError, match=r"new_weak_to_strong_uncertainty.py"):
        st.run_zeroshot(s, ARGS)


def test_cascade_paths_and_questions(setting):
    c = st.Setting(**{**setting.__dict__, "method": "cascade", "midlevel": "mid", "student": "big"})
    assert c.sampler == "mid"
    assert c.sampler_model == c.layout.ours_student_model("custom", "teach", "mid", "hotpotqa", "cascade1")
    assert c.clustered == c.layout.sampled_clustered("custom", "mid", "hotpotqa", cascade=True)
    assert c.train == c.layout.alice_train("custom", "mid", "big", "hotpotqa", cascade=True)
    assert "ours_cascade_halfhalf" in str(c.train)
    assert [q["id"] for q in c.questions()] == [f"h{i:03d}" for i in range(55, 60)]
    assert [q["id"] for q in setting.questions()] == [f"h{i:03d}" for i in range(50, 60)]


def test_stale_uncertainty_is_caught(setting):
    s = setting
    fake_model(s.sampler_model)
    log = []
    make = lambda m: ScriptedGenerator(m, reply, log)  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make, encode=identity_encode)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=make)
    s.originals.write_text("")
    fresh.rerecord(s.originals)  # as if the stage wrote it so (an edit by hand is refused earlier)
    with pytest.raises(JsonlError, match="do not match"):
        st.run_final(s, ARGS, make_generator=make)


def test_gsm8k_clusters_by_answer(tmp_path):
    data = write_data(tmp_path / "d", "gsm8k", n=20)  # w2s part: questions 10..19
    s = st.Setting(data="gsm8k", model="custom", teacher="t", student="s", layout=Layout(tmp_path / "r"), data_dir=str(data))
    fake_model(s.sampler_model)

    def teacher(model, text, k):
        i = qnum(text)
        return [f"so\n#### {i + 1}", "hmm", f"#### {i + 1}.0", "#### 0"][k]  # 2 agree, 1 unreadable, 1 other

    counts = st.run_cluster(s, ARGS, num_samples=4, make_generator=lambda m: ScriptedGenerator(m, teacher, []))
    assert (counts["written"], counts["one_cluster"], counts["singletons"], counts["unreadable"]) == (10, 10, 10, 10)
    assert read_jsonl(s.clustered)[0]["final_response"] == "so\n#### 11"


# ----------------------------------------------------------------------------------------------------
# The shell scripts, end to end on tiny models
# ----------------------------------------------------------------------------------------------------
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_cached() -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(MINILM, "config.json"), str)


@pytest.fixture(scope="module")
def script_runs(tiny_models, tmp_path_factory):
    """Both shell scripts, run at once (each stage is a process that mostly imports torch)."""
    if not _minilm_cached():
        pytest.skip(f"{MINILM} is not in the Hugging Face cache")
    base = tmp_path_factory.mktemp("alice_scripts")
    data = write_data(base / "data_in")
    controlled = build_controlled_model(tiny_models["llama"], base / "controlled")
    small, large, llama = (str(tiny_models[k]) for k in ("qwen_small", "qwen_large", "llama"))
    runs = {
        "single": dict(script="ours-wts-single.sh", teacher=small, midlevel=None, student=large),
        "cascade": dict(script="ours-wts-cascade.sh", teacher=small, midlevel=llama, student=large),
    }
    env = dict(os.environ, PYTHON=sys.executable, MODEL="custom", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    procs = {}
    for name, r in runs.items():
        root = base / name
        s = st.Setting(data="hotpotqa", model="custom", teacher=r["teacher"], student=r["student"],
                       method="cascade" if r["midlevel"] else "singleturn", midlevel=r["midlevel"],
                       layout=Layout(root), data_dir=str(data), limit=5)
        # the "trained" sampler: the controlled model at the path training/SFT.py would write
        s.sampler_model.parent.mkdir(parents=True, exist_ok=True)
        s.sampler_model.symlink_to(controlled)
        argv = ["bash", str(OURS / r["script"]), "--teacher", r["teacher"], "--student", r["student"],
                "--summarizer", llama, "--num-samples", "6", "--backend", "hf",
                "--root", str(root), "--data-dir", str(data), "--limit", "5", "--max-new-tokens", "8"]
        if r["midlevel"]:
            argv += ["--midlevel", r["midlevel"]]
        r.update(setting=s, argv=argv)
        procs[name] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, p in procs.items():
        out, _ = p.communicate(timeout=600)
        runs[name].update(rc=p.returncode, out=out)
    runs["env"] = env
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["single", "cascade"])
def test_shell_script_end_to_end(script_runs, name):
    r = script_runs[name]
    assert r["rc"] == 0, r["out"][-3000:]
    s = r["setting"]
    questions = [q["id"] for q in s.questions()]
    assert len(questions) == 5

    clustered = read_jsonl(s.clustered)
    ids = [x["id"] for x in clustered]
    assert ids == [i for i in questions if i in ids]  # question order, no duplicates
    for x in clustered:
        assert len(x["sampled_responses"]) == 6 and x["clusters"]
        assert x["final_response"] == max(x["clusters"], key=lambda c: c["size"])["response"]
        assert all(c["size"] == len(c["members"]) >= 2 for c in x["clusters"])
    several = [x["id"] for x in clustered if len(x["clusters"]) > 1]
    single = [x["id"] for x in clustered if len(x["clusters"]) == 1]
    assert several and single, "the controlled teacher should give both kinds of questions"

    unc = read_jsonl(s.uncertainty)
    assert [x["id"] for x in unc] == several
    assert all(isinstance(x["uncertainty"], str) for x in unc)
    zs = read_jsonl(s.zeroshot)
    assert [x["id"] for x in zs] == several
    train = read_jsonl(s.train)
    labels = {x["id"]: x["label"] for x in train}
    assert {i for i, lab in labels.items() if lab == "original"} == set(single)
    # 'new': the questions with several clusters whose student answer was well-formed (the random fixture student
    # rarely writes 40 characters in 8 tokens); the others are dropped and counted
    new = {i for i, lab in labels.items() if lab == "new"}
    assert new <= set(several)
    assert [x["id"] for x in train] == [i for i in ids if i in single or i in new]  # question order
    assert f"dropped: {len(several) - len(new)} questions with no well-formed final answer of 4" in r["out"]
    from alice import grading
    assert all(grading.well_formed(s.data, x["answer"]) for x in train if x["label"] == "new")
    by_id = {x["id"]: x for x in clustered}
    for x in train:
        assert set(x) == {"id", "question", "answer", "label"}
        assert x["question"] == by_id[x["id"]]["question"]
        if x["label"] == "original":
            assert x["answer"] == by_id[x["id"]]["final_response"]
    assert "[final] questions: " in r["out"]


@pytest.mark.slow
def test_shell_script_rerun_adds_nothing(script_runs):
    r = script_runs["single"]
    assert r["rc"] == 0, r["out"][-3000:]
    folder = r["setting"].train.parent
    before = {p: p.read_bytes() for p in folder.iterdir()}
    p = subprocess.run(r["argv"], env=script_runs["env"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("nothing to do") == 4
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


def test_script_missing_teacher_is_one_line_error(tmp_path):
    data = write_data(tmp_path / "d")
    p = subprocess.run(
        [sys.executable, str(OURS / "new_weak_to_strong_cluster.py"), "--data", "hotpotqa", "--model", "qwen2.5",
         "--teacher", "0.5B", "--student", "1.5B", "--root", str(tmp_path), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "run `python training/SFT.py --model qwen2.5 --data hotpotqa --teacher 0.5B --method ours-wts-stage1" in p.stderr


def test_rerun_with_other_settings_stops_or_redoes(setting):
    from alice.fresh import StaleOutputError, read_meta

    s = setting
    fake_model(s.sampler_model)
    log = []
    make = lambda m: ScriptedGenerator(m, reply, log)  # noqa: E731
    run_all(s, log)
    assert read_meta(s.clustered)["settings"]["num_samples"] == 4
    # another --num-samples: one line naming what differs and --overwrite; the file is kept
    before = s.clustered.read_bytes()
    with pytest.raises(StaleOutputError, match=r"num_samples 4 -> 6.*pass --overwrite"):
        st.run_cluster(s, ARGS, num_samples=6, make_generator=make, encode=identity_encode)
    assert s.clustered.read_bytes() == before
    # --overwrite redoes it with 6 samples
    o = st.Setting(**{**s.__dict__, "overwrite": True})
    log.clear()
    st.run_cluster(o, ARGS, num_samples=6, make_generator=make, encode=identity_encode)
    assert all(len(r["sampled_responses"]) == 6 for r in read_jsonl(s.clustered)) and log
    # the clustered file changed: the later stages' outputs are stale (their input changed since)
    with pytest.raises(StaleOutputError, match=r"sampled_clustered.jsonl changed since"):
        st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    # another --max-new-tokens or --limit for the student stage is caught too
    with pytest.raises(StaleOutputError, match=r"max_new_tokens 8 -> 16"):
        st.run_zeroshot(s, GenerationOptions(max_new_tokens=16, seed=0), make_generator=make)
    with pytest.raises(StaleOutputError, match=r"limit None -> 3"):
        st.run_final(st.Setting(**{**s.__dict__, "limit": 3}), ARGS, make_generator=make)


def test_a_second_student_under_the_same_teacher_gets_its_original_rows(setting):
    """The cascade's teacher -> mid-level run after teacher -> student: the shared uncertainty file is reused
    (no summarizer call), this student's 'original' rows are written, and its final stage finishes."""
    s = setting
    fake_model(s.sampler_model)
    log = []
    make = lambda m: ScriptedGenerator(m, reply, log)  # noqa: E731
    run_all(s, log)
    mid = st.Setting(**{**s.__dict__, "student": "x/mid-student"})
    assert mid.uncertainty == s.uncertainty and mid.originals != s.originals
    log.clear()
    counts = [st.run_cluster(mid, ARGS, num_samples=4, make_generator=make, encode=identity_encode),
              st.run_uncertainty(mid, ARGS, summarizer="summ", make_generator=make),
              st.run_zeroshot(mid, ARGS, make_generator=make),
              st.run_final(mid, ARGS, make_generator=make)]
    assert counts[0] is None and counts[1]["original"] == 3 and counts[3]["new"] == 3
    assert not [m for m, _ in log if m in ("summ", str(s.sampler_model))]  # nothing resampled or re-summarized
    assert read_jsonl(mid.originals) == read_jsonl(s.originals)
    assert [r["label"] for r in read_jsonl(mid.train)] == ["original", "new"] * 3
    # and the first student's files are still up to date
    assert run_all(s, []) == [None, None, None, None]


def test_a_stage_row_without_its_fields_is_one_line(setting):
    s = setting
    fake_model(s.sampler_model)
    log = []
    make = lambda m: ScriptedGenerator(m, reply, log)  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make, encode=identity_encode)
    s.clustered.write_text(json.dumps({"id": "h051", "question": "q"}) + "\n")
    fresh.rerecord(s.clustered)  # a file its stage wrote so (an edit by hand is refused before it is read)
    with pytest.raises(JsonlError, match=r"row 1: no 'clusters', 'final_response'.*--overwrite"):
        st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)


@pytest.mark.parametrize("script", ["W2SG_pipeline/ours/new_weak_to_strong_zeroshot.py", "evaluation.py",
                                    "cot/cot_generate_filter.py", "W2SG_pipeline/original/original_weak_to_strong.py"])
@pytest.mark.parametrize("flag,value", [("--limit", "0"), ("--limit", "-1"), ("--max-new-tokens", "0"),
                                        ("--max-new-tokens", "-5"), ("--batch-size", "0")])
def test_bad_generation_numbers_are_usage_errors(script, flag, value, tmp_path, capsys):
    from alice.testing import load_script

    mod = load_script(script)
    argv = ["--data", "hotpotqa", "--model", "qwen2.5", "--teacher", "0.5B", "--student", "1.5B", "--root", str(tmp_path),
            flag, value]
    argv += {"evaluation.py": ["--method", "naive"], "cot/cot_generate_filter.py": []}.get(script, ["--type", "qa"] if "original" in script else [])
    if "cot" in script or "original" in script:
        argv = [a for a in argv if a not in ("--student", "1.5B")]
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: must be at least 1" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------
# The final stage keeps only well-formed answers (grading.well_formed): up to K samples, the first well-formed kept
# ----------------------------------------------------------------------------------------------------
WHY = "Each of the 5 boxes holds 3 pens, so there are 3*5=<<3*5=15>>15 pens in all"


def gsm8k_reply(model, text, k):
    """gsm8k, w2s part q10..q19. Teacher: odd i one cluster, even i two. Student's final answers: i % 4 == 0 well-formed
    from the third sample on (a bare '#### N' and a boxed answer first); i % 4 == 2 never well-formed."""
    i = qnum(text)
    if "Your task is to analyze" in text:
        return f"unsure about q{i}"
    if "Here is your original answer" in text:
        malformed = [f"#### {i + 1}", f"{WHY}, so \\boxed{{{i + 1}}}", f"\n#### {i + 1}\n", f"The answer is {i}.\n#### {i}"]
        if i % 4 == 2:
            return malformed[k % 4]
        return (malformed[:2] + [f"{WHY} for q{i}\n#### {i + 1}", f"{WHY} for q{i}\n#### 99"])[k % 4]
    if model.endswith("student"):
        return f"zs q{i}"
    return f"so\n#### {i + 1}" if i % 2 or k % 2 else "so\n#### 0"


def gsm8k_setting(tmp_path, **kw):
    data = write_data(tmp_path / "d", "gsm8k", n=20)
    s = st.Setting(data="gsm8k", model="custom", teacher=kw.pop("teacher", "t"), student=kw.pop("student", "x/student"),
                   layout=Layout(tmp_path / "r"), data_dir=str(data), **kw)
    fake_model(s.sampler_model)
    return s


def gsm8k_before_final(s, log):
    make = lambda m: ScriptedGenerator(m, gsm8k_reply, log)  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=make)
    return make


def test_final_keeps_the_first_well_formed_answer_and_drops_questions_without_one(tmp_path, capsys):
    from alice.fresh import StaleOutputError, read_meta

    s = gsm8k_setting(tmp_path)
    log, ns = [], []
    make = gsm8k_before_final(s, log)

    def counting(model):
        g = make(model)
        inner = g.generate
        g.generate = lambda convs, sampling, desc="": (ns.append(sampling.n), inner(convs, sampling, desc))[1]
        return g

    log.clear()
    counts = st.run_final(s, ARGS, make_generator=counting)
    assert set(ns) == {st.FINAL_TRIES} == {4}  # K samples per question, one generation path
    train = read_jsonl(s.train)
    # odd questions: one cluster ('original'); 12, 16: the third sample is the first well-formed; 10, 14, 18: dropped
    assert [(r["id"][-2:], r["label"]) for r in train] == [
        ("11", "original"), ("12", "new"), ("13", "original"), ("15", "original"), ("16", "new"), ("17", "original"),
        ("19", "original")]
    assert [r["answer"] for r in train if r["label"] == "new"] == [f"{WHY} for q12\n#### 13", f"{WHY} for q16\n#### 17"]
    assert (counts["new"], counts["dropped"], counts["final_tries"], counts["well_formed_after_first_sample"]) == (2, 3, 4, 2)
    assert "dropped: 3 questions with no well-formed final answer of 4" in capsys.readouterr().out
    assert read_meta(s.train)["settings"]["final_tries"] == 4
    # every final sample is kept for inspection, with the index of the kept one (None: the question was dropped)
    tried = read_jsonl(s.final_samples)
    assert [(r["id"][-2:], r["kept"]) for r in tried] == [("10", None), ("12", 2), ("14", None), ("16", 2), ("18", None)]
    assert all(len(r["samples"]) == 4 for r in tried) and tried[1]["samples"][2] == f"{WHY} for q12\n#### 13"
    assert read_meta(s.final_samples)["settings"] == read_meta(s.train)["settings"]

    # the worked example prefers a question whose final answer became a 'new' row ...
    from alice.worked_example import worked_example

    text = worked_example(s)
    assert "q12" in text.split("\n")[3] and "a 'new' training row" in text and f"{WHY} for q12" in text
    # ... and, when every final sample of every question was rejected, shows a dropped one as such
    write_jsonl(s.train, [r for r in train if r["label"] == "original"])
    text = worked_example(s)
    assert "none of its 4 samples was well-formed" in text and "dropped from the training file" in text
    assert "q10" in text.split("\n")[3] and "#### 11" in text.split("\n")[-1]
    write_jsonl(s.train, train)

    # a rerun redoes nothing; another K is not passed off as done
    before = s.train.read_bytes()
    log.clear()
    assert st.run_final(s, ARGS, make_generator=make) is None and log == []
    # ... and another command line making the same thing is remembered by both outputs (the pipeline's skip test)
    other = st.Setting(**{**s.__dict__, "argv": ["--another", "command"]})
    assert st.run_final(other, ARGS, make_generator=make) is None and log == []
    assert all(["--another", "command"] in read_meta(p)["argvs"] for p in (s.train, s.final_samples))
    with pytest.raises(StaleOutputError, match=r"final_tries 4 -> 2.*--overwrite"):
        st.run_final(s, ARGS, final_tries=2, make_generator=make)
    assert s.train.read_bytes() == before
    # --overwrite with K=2: no question's first two samples are well-formed: every 'new' question is dropped
    o = st.Setting(**{**s.__dict__, "overwrite": True})
    counts = st.run_final(o, ARGS, final_tries=2, make_generator=make)
    assert (counts["new"], counts["dropped"]) == (0, 5)
    assert [r["label"] for r in read_jsonl(s.train)] == ["original"] * 5


def test_final_resumes_its_k_samples_after_a_kill(tmp_path):
    s = gsm8k_setting(tmp_path)
    log = []
    gsm8k_before_final(s, log)
    log.clear()
    with pytest.raises(KeyboardInterrupt):  # dies after one chunk of 2 questions (x 4 samples)
        st.run_final(s, ARGS, make_generator=lambda m: ScriptedGenerator(m, gsm8k_reply, log, fail_after=1))
    assert not s.train.exists() and len(log) == 2
    log.clear()
    counts = st.run_final(s, ARGS, make_generator=lambda m: ScriptedGenerator(m, gsm8k_reply, log))
    assert len(log) == 3  # only the 3 questions left
    assert (counts["new"], counts["dropped"]) == (2, 3)


def test_final_script_takes_final_tries(tmp_path, capsys, monkeypatch):
    from alice.fresh import read_meta
    from alice.testing import load_script

    s = gsm8k_setting(tmp_path, teacher="x/teacher")
    log = []
    make = gsm8k_before_final(s, log)
    from alice.stages import final as final_stage

    script = load_script("W2SG_pipeline/ours/new_weak_to_strong_final.py")  # the script is the stage's front door
    monkeypatch.setattr(final_stage, "run_final", lambda setting, gen, final_tries: st.run_final(
        setting, gen, final_tries=final_tries, make_generator=make))
    script.main(["--data", "gsm8k", "--model", "custom", "--teacher", "x/teacher", "--student", "x/student", "--root",
                 str(s.layout.root), "--data-dir", s.data_dir, "--max-new-tokens", "8", "--seed", "0",
                 "--final-tries", "3"])
    assert read_meta(s.train)["settings"]["final_tries"] == 3
    assert "dropped: 3 questions with no well-formed final answer of 3" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--data", "gsm8k", "--model", "custom", "--teacher", "x/t", "--student", "x/s", "--final-tries", "0"])


@pytest.mark.slow
def test_final_on_fixture_models_drops_bare_answers(tiny_models, tmp_path):
    """A real (tiny) student on the hf backend: one that always answers a bare ' #### 72' gets every 'new' question
    dropped; one that writes runs of words keeps only answers of >= 40 non-space characters (hotpotqa)."""
    from alice import grading
    from alice.testing import build_answer_model

    hf = GenerationOptions(backend="hf", max_new_tokens=8, seed=0)
    bare = build_answer_model(tiny_models["llama"], tmp_path / "bare_student", {" 72": 1.0})
    s = gsm8k_setting(tmp_path / "g", student=str(bare))
    gsm8k_before_final(s, [])
    counts = st.run_final(s, hf)
    assert (counts["new"], counts["dropped"]) == (0, 5)
    assert [r["label"] for r in read_jsonl(s.train)] == ["original"] * 5

    words = build_controlled_model(tiny_models["llama"], tmp_path / "words_student", words=(" Paris", " Mercury"),
                                   p_eos=0.15)
    h = st.Setting(data="hotpotqa", model="custom", teacher="teach", student=str(words),
                   layout=Layout(tmp_path / "h" / "root"), data_dir=str(write_data(tmp_path / "h" / "data")))
    fake_model(h.sampler_model)
    make = lambda m: ScriptedGenerator(m, reply, [])  # noqa: E731
    st.run_cluster(h, ARGS, num_samples=4, make_generator=make, encode=identity_encode)
    st.run_uncertainty(h, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(h, ARGS, make_generator=make)
    counts = st.run_final(h, GenerationOptions(backend="hf", max_new_tokens=12, seed=0), final_tries=2)
    new = [r for r in read_jsonl(h.train) if r["label"] == "new"]
    assert counts["new"] == len(new) and counts["new"] + counts["dropped"] == 3
    assert all(grading.reasoning_chars(r["answer"]) >= grading.MIN_REASONING_CHARS for r in new)
