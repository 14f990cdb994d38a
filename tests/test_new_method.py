"""Adding a method variant is one registry entry: a toy variant ("Alice, 'new' rows only": the student trained on
the proactive answers of Alice's training file, not on its one-cluster rows), declared once below (``TOY``), is
planned by the pipeline, trained by training/SFT.py, evaluated by evaluation.py and reported, run through the
pipeline's steps on fixture models with no other edit anywhere."""

import json

import pytest

from alice import methods, pipeline, sft
from alice.jsonl import read_jsonl
from alice.paths import Layout
from alice.testing import build_answer_model
from test_pipeline import DEMO_TEACHER_ANSWERS, DEMO_TEACHER_UNREADABLE, _write_gsm8k

# ---- the one entry a newcomer writes --------------------------------------------------------------------
TOY = methods.Method(
    "alice_new_only", "student", ("ours-wts-stage2", "newonly"), "alice_final", "ours_new_only",
    "{model}_{teacher}_to_{student}_{data}", eval=("ours-wts", "newonly"), pgr=True, seed_reads_choice=True,
    report=(methods.ReportRow("alice_new_only", "Alice, 'new' rows only"),), rows="label:new", paper=False,
)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))  # the registration ends with the test
    methods.register(TOY)


def test_the_toy_variant_is_planned_with_its_flags(toy):
    steps = pipeline.plan(pipeline.options_from_argv(["--dry-run"]))
    by_name = {st.name: st for st in steps}
    train, ev = by_name["alice_new_only 0.5B->1.5B"], by_name["eval alice_new_only"]
    assert train.argv[1:] == ["training/SFT.py", "--model", "qwen2.5-coder", "--data", "gsm8k", "--teacher", "0.5B",
                              "--student", "1.5B", "--method", "ours-wts-stage2", "--ours-wts-type", "newonly",
                              *train.argv[train.argv.index("newonly") + 1:]]
    assert [str(p) for p in train.outputs] == ["model_outputs/ours_new_only/qwen2.5-coder_0.5B_to_1.5B_gsm8k"]
    assert train.after == ("alice 0.5B->1.5B final",) and ev.after == (train.name,)
    assert "--method ours-wts --teacher 0.5B --ours-wts-type newonly" in " ".join(ev.argv)
    assert [str(p) for p in ev.outputs] == ["model_outputs/eval/gsm8k/qwen2.5-coder_0.5B_to_1.5B_ours-wts-newonly_summary.json"]
    assert steps[-1].name == "report" and train.name in steps[-1].after


def test_without_the_entry_nothing_changes():
    names = [st.name for st in pipeline.plan(pipeline.options_from_argv(["--dry-run"]))]
    assert not any("alice_new_only" in n for n in names)
    with pytest.raises(methods.MethodError, match="singleturn or cascade1 or cascade2 or .*, not 'newonly'"):
        methods.by_sft_flags("ours-wts-stage2", ours_type="newonly")


def test_the_toy_variant_runs_through_the_pipeline_on_fixture_models(toy, tiny_models, tmp_path, capsys, monkeypatch):
    """Alice's four stages, then the toy variant's training, evaluation and the report, as the pipeline runs them
    (in-process) on fixture models: it trains on exactly the 'new' rows, and the report has its row with a PGR slot."""
    from alice import grading

    # the random fixture student never writes '#### N' after reasoning: every final answer counts as well-formed here
    monkeypatch.setattr(grading, "well_formed", lambda data, text, question=None: True)
    data = _write_gsm8k(tmp_path / "data_in")
    teacher = build_answer_model(tiny_models["llama"], tmp_path / "teacher", DEMO_TEACHER_ANSWERS,
                                 p_unreadable=DEMO_TEACHER_UNREADABLE)
    student = str(tiny_models["qwen_large"])
    root = tmp_path / "run"
    args = pipeline.options_from_argv(["--model", "custom", "--teacher", str(teacher), "--student", student,
                                       "--backend", "hf", "--root", str(root), "--data-dir", str(data),
                                       "--max-new-tokens", "16", "--extra-sft-args", "--max-steps 2"])
    L = Layout(root)
    sampler = L.teacher_cot_model("custom", str(teacher), "gsm8k")  # where teacher stage 1 would save it
    sampler.parent.mkdir(parents=True)
    sampler.symlink_to(teacher)
    plan = pipeline.plan(args)
    steps = [st for st in plan if (st.script and "new_weak_to_strong" in st.script) or "alice_new_only" in st.name
             or st.name == "report"]
    assert [st.name.split(" ")[0] for st in steps[4:]] == ["alice_new_only", "eval", "report"]
    assert pipeline.execute(steps, tmp_path / "logs") == 0, capsys.readouterr().err

    new = [r["id"] for r in read_jsonl(steps[3].outputs[0]) if r["label"] == "new"]
    assert new, "no question had several clusters: the toy variant has nothing to train on"
    folder = L.trained(TOY, "custom", "gsm8k", str(teacher), student)
    assert steps[4].outputs == [folder] and steps[4].done()
    job = sft.resolve_job(model="custom", data="gsm8k", method="ours-wts-stage2", teacher=str(teacher),
                          student=student, ours_type="newonly", layout=L, data_dir=str(data))
    assert [r["id"] for r in job.rows] == new and job.out_dir == folder  # the 'new' rows only
    summary = json.loads(steps[5].outputs[0].read_text())
    assert summary["n"] == 4 and summary["model"] == str(folder) and summary["ours_wts_type"] == "newonly"
    report = json.loads(L.report("custom", str(teacher), student, "gsm8k", ".json").read_text())
    row = next(r for r in report["rows"] if r["key"] == "alice_new_only")
    assert row["label"] == "Alice, 'new' rows only" and not row["missing"] and row["n"] == 4 and row["w2s"]
