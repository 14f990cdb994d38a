"""The ablations of Alice's proactive step (issue 30, docs/ablations.md): each makes the rows its definition says from
single-turn Alice's stage files (scripted generators, as tests/test_alice_stages.py), is planned by the pipeline's
``--ablations``, and is reported with its paired difference to Alice once evaluated."""

import sys

import pytest

from alice import ablations, artifacts, datasets, fresh, methods, pipeline, report
from alice import alice_stages as st
from alice.fresh import read_meta
from alice.jsonl import read_jsonl
from alice.registry import RegistryError
from alice.testing import load_script
from test_alice_stages import ARGS, WHY, ScriptedGenerator, gsm8k_reply, gsm8k_setting, qnum

EVEN, ODD = (10, 12, 14, 16, 18), (11, 13, 15, 17, 19)  # the W2S part's several-cluster / one-cluster questions


def reply_e(model, text, k):
    """Every final answer well-formed on its first sample: q12's agrees with the student's zero-shot answer (13),
    q16's with the teacher's largest cluster (0), the others' (5) with neither."""
    i = qnum(text)
    if "Here is your original answer" in text:
        return f"{WHY} for q{i}\n#### " + {12: "13", 16: "0"}.get(i, "5")
    if model.endswith("student"):
        return "zs\n#### 13" if i == 12 else f"zs q{i}"
    return gsm8k_reply(model, text, k)


class Recording:
    """A generator factory that records every (model, prompt, sampling)."""

    def __init__(self, reply):
        self.reply, self.log, self.samplings = reply, [], []

    def __call__(self, model):
        g = ScriptedGenerator(model, self.reply, self.log)
        inner = g.generate
        g.generate = lambda convs, sampling, desc="": (self.samplings.append(sampling), inner(convs, sampling, desc))[1]
        return g


def alice_run(tmp_path, reply=reply_e, **kw):
    s = gsm8k_setting(tmp_path, **kw)
    make = lambda m: ScriptedGenerator(m, reply, [])  # noqa: E731
    st.run_cluster(s, ARGS, num_samples=4, make_generator=make)
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=make)
    st.run_final(s, ARGS, final_tries=1 if s.seed_exact else st.FINAL_TRIES, make_generator=make)
    return s


def rows_of(s, name):
    return [(int(r["id"][-2:]), r["label"], r["answer"]) for r in read_jsonl(ablations.path(s, name))]


def test_the_registry_and_the_stages_name_the_same_ablations():
    assert set(ablations.GENERATES) == set(methods.ABLATIONS) == set(ablations.NAMES)
    assert ablations.parse("all") == ablations.NAMES
    assert ablations.parse("c, a,majority_vote") == ("no_uncertainty", "majority_vote")
    with pytest.raises(ablations.AblationError, match="unknown ablation 'z'"):
        ablations.parse("a,z")
    for name in ablations.NAMES:
        m = methods.get(f"ablation_{name}")
        assert (m.sft, m.eval, m.versus, m.paper) == (("ours-wts-stage2", name), ("ours-wts", name), "alice", False)


def test_majority_vote_labels_every_question_with_the_largest_cluster(tmp_path):
    s = alice_run(tmp_path)
    counts = ablations.run_ablation(s, "majority_vote", ARGS, make_generator=lambda m: pytest.fail("no generation"))
    assert rows_of(s, "majority_vote") == [(i, "original" if i % 2 else "majority", f"so\n#### {i + 1}" if i % 2
                                           else "so\n#### 0") for i in range(10, 20)]
    assert (counts["original"], counts["majority"]) == (5, 5)
    assert ablations.run_ablation(s, "majority_vote", ARGS) is None  # up to date: nothing redone


def test_self_training_labels_every_question_with_the_students_zero_shot_answer(tmp_path):
    s = alice_run(tmp_path)
    gen = Recording(reply_e)
    counts = ablations.run_ablation(s, "self_training", ARGS, make_generator=gen)
    assert rows_of(s, "self_training") == [(i, "zeroshot", "zs\n#### 13" if i == 12 else f"zs q{i}")
                                           for i in range(10, 20)]
    # only the one-cluster questions were asked (the zero-shot stage answered the others), bare, at Alice's sampling
    assert sorted(qnum(t) for _, t in gen.log) == list(ODD) and all(t.startswith("q") for _, t in gen.log)
    assert {(x.n, x.temperature) for x in gen.samplings} == {(1, 0.9)}
    assert (counts["generated"], counts["reused"]) == (5, 5)


def test_no_uncertainty_asks_the_final_question_without_the_statement(tmp_path):
    s = alice_run(tmp_path)
    gen = Recording(reply_e)
    counts = ablations.run_ablation(s, "no_uncertainty", ARGS, make_generator=gen)
    prompts_ = [t for _, t in gen.log]
    assert sorted(qnum(t) for t in prompts_) == list(EVEN)
    assert all("uncertainty" not in t and "unsure about" not in t and "Here is another model's answer: so\n#### 0" in t
               for t in prompts_)
    assert {x.n for x in gen.samplings} == {st.FINAL_TRIES}
    assert [r for r in rows_of(s, "no_uncertainty") if r[1] == "new"] == [
        (i, "new", f"{WHY} for q{i}\n#### " + {12: "13", 16: "0"}.get(i, "5")) for i in EVEN]
    assert (counts["new"], counts["dropped"]) == (5, 0)
    for name in datasets.DATASETS:  # every dataset's template loses every mention, keeps its three fields
        t = ablations.no_uncertainty_template(name)
        assert "uncertainty" not in t and t.count("{}") == 3 and "Here is another model's answer: {}" in t


def test_greedy_final_samples_once_at_temperature_zero_with_alices_keep_rule(tmp_path):
    s = alice_run(tmp_path / "a", reply=gsm8k_reply)
    gen = Recording(gsm8k_reply)
    counts = ablations.run_ablation(s, "greedy_final", ARGS, make_generator=gen)
    assert {(x.n, x.temperature) for x in gen.samplings} == {(1, 0.0)}
    # gsm8k_reply's first sample is never well-formed: every 'new' question is dropped, as Alice's rule says
    assert [r[1] for r in rows_of(s, "greedy_final")] == ["original"] * 5 and counts["dropped"] == 5
    assert read_meta(ablations.path(s, "greedy_final"))["settings"]["temperature"] == 0.0
    # --seed-exact: the one greedy sample is kept whatever its form
    e = alice_run(tmp_path / "b", reply=gsm8k_reply, seed_exact=True)
    ablations.run_ablation(e, "greedy_final", ARGS, make_generator=Recording(gsm8k_reply))
    assert [r[2] for r in rows_of(e, "greedy_final") if r[1] == "new"] == [f"#### {i + 1}" for i in EVEN]


def test_agreeing_final_keeps_new_rows_that_agree_with_the_teacher_or_the_zero_shot_answer(tmp_path):
    s = alice_run(tmp_path)
    alice = read_jsonl(s.train)
    assert [int(r["id"][-2:]) for r in alice if r["label"] == "new"] == list(EVEN)
    counts = ablations.run_ablation(s, "agreeing_final", ARGS, make_generator=lambda m: pytest.fail("no generation"))
    # q12 agrees with its own zero-shot answer (13), q16 with the teacher's largest cluster (0); 10, 14, 18 with neither
    assert [(i, lab) for i, lab, _ in rows_of(s, "agreeing_final")] == [
        (i, "original") if i % 2 else (i, "new") for i in range(10, 20) if i % 2 or i in (12, 16)]
    assert {r[2] for r in rows_of(s, "agreeing_final") if r[1] == "new"} == {
        f"{WHY} for q12\n#### 13", f"{WHY} for q16\n#### 0"}
    assert (counts["new"], counts["disagreeing"]) == (2, 3)


def test_an_ablation_needs_alices_files_and_single_turn(tmp_path, capsys):
    s = gsm8k_setting(tmp_path)
    script = load_script("W2SG_pipeline/ours/new_weak_to_strong_ablation.py")
    with pytest.raises(SystemExit) as e:
        script.main(["--data", "gsm8k", "--model", "custom", "--teacher", "x/t", "--student", "x/s", "--root",
                     str(s.layout.root), "--data-dir", s.data_dir, "--ablation", "majority_vote"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "new_weak_to_strong_cluster.py" in err and "Traceback" not in err
    with pytest.raises(ablations.AblationError, match="single-turn"):
        ablations.run_ablation(st.Setting(**{**s.__dict__, "method": "cascade", "midlevel": "x/m"}), "majority_vote", ARGS)



def test_an_ablation_holds_its_lock_and_checks_its_student_before_sampling(tmp_path, monkeypatch):
    """As the stages (issue 27): a second run of one ablation stops in one line; an unloadable student is found before
    anything is sampled or written."""
    s = alice_run(tmp_path)
    with fresh.lock(ablations.path(s, "no_uncertainty")):  # another run is making it
        with pytest.raises(fresh.BusyOutputError, match="another run is making .*no_uncertainty.jsonl right now"):
            ablations.run_ablation(s, "no_uncertainty", ARGS, make_generator=lambda m: pytest.fail("no generation"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RegistryError, match="--student x/student is not in the local Hugging Face cache"):
        ablations.run_ablation(s, "self_training", ARGS)  # the real generator factory: the student is checked first
    assert not ablations.path(s, "self_training").exists()
    assert ablations.run_ablation(s, "majority_vote", ARGS) is not None  # no student needed: no check

def test_the_pipeline_plans_the_named_ablations():
    steps = pipeline.plan(pipeline.options_from_argv(["--dry-run", "--ablations", "c,e"]))
    names = [x.name for x in steps]
    plain = [x.name for x in pipeline.plan(pipeline.options_from_argv(["--dry-run"]))]
    assert not any("ablation" in n for n in plain)
    by = {x.name: x for x in steps}
    for name in ("majority_vote", "agreeing_final"):
        made, trained, ev = (by[f"ablation {name} 0.5B->1.5B"], by[f"ablation_{name} 0.5B->1.5B"],
                             by[f"eval ablation_{name}"])
        assert made.after == ("alice 0.5B->1.5B final",) and trained.after == (made.name,) and ev.after == (trained.name,)
        assert made.argv[-4:] != [] and f"--ablation {name}" in " ".join(made.argv)
        assert f"--ours-wts-type {name}" in " ".join(trained.argv) and f"--ours-wts-type {name}" in " ".join(ev.argv)
        assert trained.outputs[0].name == f"qwen2.5-coder_0.5B_to_1.5B_gsm8k_{name}"
    assert not any("no_uncertainty" in n for n in names) and names[-1] == "report"
    with pytest.raises(SystemExit):
        pipeline.options_from_argv(["--ablations", "x"])


def test_an_ablation_step_runs_as_a_stage_in_process_and_as_a_subprocess(tmp_path):
    """The ablation is a stage (alice.stages.ablation): the pipeline runs its step as run(parse(flags)) in its own
    process, or as ``python -m alice.stages.ablation <flags>``; both make the same training file, recorded with the
    step's command (so the step is then done)."""
    s = alice_run(tmp_path, teacher="x/teacher")  # hub ids: each command's models resolve (none is loaded)
    art = artifacts.alice_ablation(s.layout, "majority_vote", s.model, s.data, s.teacher, s.student)
    step = pipeline.Step("ablation c", art.argv(sys.executable, ["--data-dir", s.data_dir, "--root", str(s.layout.root)]),
                         [art.path])
    assert step.stage == "ablation" and not step.done()
    assert pipeline.execute([step], tmp_path / "logs") == 0 and step.done()
    made_here = read_jsonl(art.path)
    assert [r["label"] for r in made_here] == ["majority" if i in EVEN else "original" for i in range(10, 20)]
    fresh.forget(art.path)
    art.path.unlink()
    assert not step.done()
    assert pipeline.execute([step], tmp_path / "logs2", in_process=False) == 0 and step.done()
    assert read_jsonl(art.path) == made_here
    log = next((tmp_path / "logs2").glob("*.log")).read_text()
    assert log.startswith(f"$ {sys.executable} -m alice.stages.ablation --model custom --data gsm8k"), log[:300]


def test_the_report_shows_an_evaluated_ablation_with_its_paired_difference_to_alice(tmp_path):
    rows = [{"key": k, "label": k, "missing": True} for k in ("original_cot", "alice_cascade", "original_cascade")]
    rows += [{"key": "alice", "label": "Alice", "missing": False},
             {"key": "ablation_majority_vote", "label": "ablation (c)", "missing": False}]
    correct = {"alice": {"q1": True, "q2": True, "q3": False, "q4": True},
               "ablation_majority_vote": {"q1": True, "q2": False, "q3": False, "q4": False}}
    c = [x for x in report.comparisons(rows, correct) if x["a"] == "ablation_majority_vote"]
    assert len(c) == 1 and c[0]["b"] == "alice" and c[0]["diff"] == -0.5 and c[0]["n"] == 4 and c[0]["ci95"]
    # not evaluated: no row and no comparison (the paper's rows stay, missing)
    rep = report.build(st.Layout(tmp_path), "qwen2.5", "0.5B", "1.5B", "gsm8k")
    assert not any(r["key"].startswith("ablation_") for r in rep["rows"])
    assert any(r["key"] == "alice" and r["missing"] for r in rep["rows"])
    assert not any(x["a"].startswith("ablation_") for x in rep["comparisons"])
