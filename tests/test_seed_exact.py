"""``--seed-exact`` (issue 30): the seed's choices where the project deliberately differs, on hand-made cases.

The CoT filter in both directions (rows the seed keeps and the project drops, and the reverse), the seed's raw
clustering keys and its rule for unreadable answers, the final stage's one sample kept whatever its form, the seed's
embedder refused in one line when it cannot be loaded (never replaced), the pipeline's flags and the report's tag."""

import json

import pytest

from alice import alice_stages as st
from alice import clustering, grading, pipeline, report, seed_exact
from alice.fresh import read_meta
from alice.jsonl import read_jsonl
from alice.testing import load_script
from test_alice_stages import (ARGS, ScriptedGenerator, gsm8k_before_final, gsm8k_reply, gsm8k_setting, qnum,
                               write_data, fake_model)
from alice.paths import Layout

cot = load_script("cot/cot_generate_filter.py")
ARC_Q = "Which keeps your hands warm?\nA. dry palms\nB. wet palms\nC. gloves\nD. ice"


# ---- (2) the CoT filter: both directions ---------------------------------------------------------------------
@pytest.mark.parametrize("response, gold, project, seed", [
    # no 'My choice is': the project reads the leading 'B.'; the seed's split finds nothing and drops the row
    ("B. wet palms, because water conducts heat away", "B. wet palms", True, False),
    # 'My choice is A, because': the project reads A (gold C): dropped; the seed's text up to the first '.' is
    # 'a, because ...', which holds 'c' (the gold's letter): kept
    ("Gloves trap heat. My choice is A, because dry palms stay warm.", "C. gloves", False, True),
    # both keep / both drop
    ("Gloves trap heat. My choice is C.", "C. gloves", True, True),
    ("Ice is cold. My choice is D.", "C. gloves", False, False),
    # the gold's option text anywhere before the first '.' after the phrase counts for the seed
    ("My choice is gloves (option D)", "C. gloves", False, True),
])
def test_arc_cot_filter_both_directions(response, gold, project, seed):
    assert grading.cot_keeps("arc_challenge", response, gold, gold, ARC_Q) is project
    assert grading.cot_keeps("arc_challenge", response, gold, gold, ARC_Q, seed_exact=True) is seed


@pytest.mark.parametrize("data, response, gold, project, seed", [
    ("hotpotqa", "The capital is Parisian in style", "Paris", False, True),  # substring inside a word: seed only
    ("hotpotqa", "He was Jean-Paul Sartre", "Jean Paul Sartre", True, False),  # punctuation normalised: project only
    ("hotpotqa", "so the answer is PARIS", "Paris", True, True),
    ("triviaqa", "The Beatles played it", "The Beatles", True, True),
    ("triviaqa", "Beatles played it", "The Beatles", True, False),  # the project drops articles (normalize_text)
])
def test_qa_cot_filter_both_directions(data, response, gold, project, seed):
    golds = [gold] if data == "triviaqa" else gold
    assert grading.cot_keeps(data, response, gold, golds, "q?") is project
    assert grading.cot_keeps(data, response, gold, golds, "q?", seed_exact=True) is seed


def test_cot_script_rows_follow_the_switch():
    rows = [{"id": "a", "question": ARC_Q, "answer": "B. wet palms", "gold": "B. wet palms"},
            {"id": "b", "question": ARC_Q, "answer": "C. gloves", "gold": "C. gloves"}]
    texts = {"a": ["B. wet palms, because they are wet"], "b": ["My choice is A, because dry palms."]}
    assert [r["correct"] for r in cot.cot_rows(rows, texts, "arc_challenge")] == [True, False]
    assert [r["correct"] for r in cot.cot_rows(rows, texts, "arc_challenge", seed_exact=True)] == [False, True]
    assert "--seed-exact" in cot.build_parser().format_help()


# ---- (5) the clustering keys -----------------------------------------------------------------------------------
def test_gsm8k_seed_keys_are_raw_text():
    responses = ["so\n#### 44", "#### 44.0", "so \\boxed{44}", "#### 44", "####44"]
    project = clustering.cluster_by_answer("gsm8k", "q", responses)
    assert [c["members"] for c in project.clusters] == [[0, 1, 2, 3, 4]]  # one answer, read leniently
    seed = clustering.cluster_by_answer("gsm8k", "q", responses, seed_exact=True)
    assert [c["members"] for c in seed.clusters] == [[0, 3]]  # '44.0' alone; '\\boxed{44}' and '####44' unreadable
    assert (seed.singletons, seed.unreadable) == (1, 2)
    assert [grading.extract_final_answer("gsm8k", r, seed_exact=True) for r in responses] == [
        "44", "44.0", None, "44", None]


def test_arc_seed_keys_and_the_seeds_na_rule():
    responses = ["My choice is A.", "So, my choice is A.", "My choice is A. It is dry.", "My choice is A."]
    project = clustering.cluster_by_answer("arc_challenge", ARC_Q, responses)
    assert [c["members"] for c in project.clusters] == [[0, 1, 2, 3]]
    seed = clustering.cluster_by_answer("arc_challenge", ARC_Q, responses, seed_exact=True)
    # raw text after the first 'My choice is ': 'A.' (0, 3), 'A. It is dry.' alone; 'my choice is' (lower case) has none
    assert [c["members"] for c in seed.clusters] == [[0, 3]] and (seed.singletons, seed.unreadable) == (1, 1)
    # the seed compared an unreadable answer as the text 'N/A': it joins a head whose raw key is 'N/A'
    na = clustering.cluster_by_answer("gsm8k", "q", ["#### N/A", "no number", "#### 5", "#### N/A"], seed_exact=True)
    assert [c["members"] for c in na.clusters] == [[0, 1, 3]]
    assert clustering.cluster_by_answer("gsm8k", "q", ["no number", "#### N/A"], seed_exact=True).clusters == []


def test_cluster_stage_with_seed_keys(tmp_path):
    """Teacher samples '#### N' and '#### N.0' for every question: one answer for the project (a cluster of 2), two
    for the seed (no cluster: every question is N/A and nothing is written); the record says --seed-exact."""
    def teacher(model, text, k):
        i = qnum(text)
        return [f"so\n#### {i + 1}", "hmm", f"#### {i + 1}.0", "#### 0"][k]

    for exact, written in ((False, 10), (True, 0)):
        s = gsm8k_setting(tmp_path / str(exact), seed_exact=exact)
        counts = st.run_cluster(s, ARGS, num_samples=4, make_generator=lambda m: ScriptedGenerator(m, teacher, []))
        assert counts["written"] == written
        assert read_meta(s.clustered)["settings"].get("seed_exact") is (True if exact else None)


# ---- (3) the seed's embedder: selected, and one line when it cannot be loaded ------------------------------------
def _instructor_cached() -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(clustering.SEED_EMBEDDING_MODEL, "config.json"), str)


def test_seed_exact_qa_clustering_needs_instructor_large(tmp_path, monkeypatch, capsys):
    if _instructor_cached():
        pytest.skip("instructor-large is in the cache here: it would load")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_data(tmp_path / "d")
    s = st.Setting(data="hotpotqa", model="custom", teacher="x/t", student="x/s", layout=Layout(tmp_path / "r"),
                   data_dir=str(data), seed_exact=True)
    fake_model(s.sampler_model)
    called = []
    with pytest.raises(clustering.EmbedderError, match="hkunlp/instructor-large could not be loaded.*--seed-exact"):
        st.run_cluster(s, ARGS, num_samples=2, make_generator=lambda m: called.append(m))
    assert called == [] and not s.clustered.exists()  # refused before any sampling, nothing faked
    with pytest.raises(clustering.EmbedderError, match="leave out --embedding-model"):
        st.run_cluster(s, ARGS, num_samples=2, embedding_model=clustering.DEFAULT_EMBEDDING_MODEL)
    script = load_script("W2SG_pipeline/ours/new_weak_to_strong_cluster.py")
    with pytest.raises(SystemExit) as e:
        script.main(["--data", "hotpotqa", "--model", "custom", "--teacher", "x/t", "--student", "x/s", "--root",
                     str(s.layout.root), "--data-dir", str(data), "--seed-exact", "--num-samples", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "instructor-large" in err and "Traceback" not in err


# ---- (1) the final stage: one sample, kept whatever its form -----------------------------------------------------
def test_final_keeps_the_one_sample_whatever_its_form(tmp_path, capsys):
    s = gsm8k_setting(tmp_path, seed_exact=True)
    log, ns = [], []
    gsm8k_before_final(s, log)

    def make(model):
        g = ScriptedGenerator(model, gsm8k_reply, log)
        inner = g.generate
        g.generate = lambda convs, sampling, desc="": (ns.append(sampling.n), inner(convs, sampling, desc))[1]
        return g

    counts = st.run_final(s, ARGS, final_tries=1, make_generator=make)
    assert ns == [1] * len(ns) and ns
    train = read_jsonl(s.train)
    # every several-cluster question (even i) gets a 'new' row: its first sample, a bare '#### N' (the project drops it)
    assert [(r["id"][-2:], r["label"]) for r in train] == [
        (f"{i}", "new" if i % 2 == 0 else "original") for i in range(10, 20)]
    assert [r["answer"] for r in train if r["label"] == "new"] == [f"#### {i + 1}" for i in (10, 12, 14, 16, 18)]
    assert (counts["new"], counts["dropped"]) == (5, 0)
    meta = read_meta(s.train)["settings"]
    assert meta["seed_exact"] is True and meta["final_tries"] == 1 and "well_formed_min_chars" not in meta
    with pytest.raises(ValueError, match="one final answer"):
        st.run_final(s, ARGS, final_tries=4, make_generator=make)
    # the same files without the switch: another setting, caught (not passed off as done)
    from alice.fresh import StaleOutputError

    with pytest.raises(StaleOutputError, match="seed_exact True -> None"):
        st.run_final(st.Setting(**{**s.__dict__, "seed_exact": False}), ARGS, make_generator=make)
    script = load_script("W2SG_pipeline/ours/new_weak_to_strong_final.py")
    with pytest.raises(SystemExit):
        script.main(["--data", "gsm8k", "--model", "custom", "--teacher", "t", "--student", "x/s", "--seed-exact",
                     "--final-tries", "4"])
    assert "leave out --final-tries" in capsys.readouterr().err


# ---- the pipeline and the report -------------------------------------------------------------------------------
def test_pipeline_passes_the_switch_to_the_stages_it_concerns():
    steps = pipeline.plan(pipeline.options_from_argv(["--dry-run", "--seed-exact", "--data", "hotpotqa"]))
    flagged = {st_.name for st_ in steps if "--seed-exact" in st_.argv}
    assert flagged == {"cot", *(f"alice 0.5B->1.5B {x}" for x in ("cluster", "uncertainty", "zeroshot", "final"))}
    final = next(st_ for st_ in steps if st_.name == "alice 0.5B->1.5B final")
    assert "--final-tries" not in final.argv
    plain = pipeline.plan(pipeline.options_from_argv(["--dry-run", "--data", "hotpotqa"]))
    assert not any("--seed-exact" in st_.argv for st_ in plain)
    text = pipeline.build_parser().format_help()
    assert "--seed-exact" in text and "--ablations" in text


def test_report_shows_which_outputs_were_seed_exact(tmp_path):
    s = gsm8k_setting(tmp_path, seed_exact=True)
    gsm8k_before_final(s, [])
    made = seed_exact.record(s)
    assert set(made) == {str(p) for p in (s.clustered, s.uncertainty, s.zeroshot)} and all(made.values())
    rep = report.build(s.layout, "custom", s.teacher, s.student, "gsm8k", data_dir=s.data_dir)
    assert rep["seed_exact"] == made and report.title(rep).endswith(" [--seed-exact]")
    meta = read_meta(s.zeroshot)
    meta["settings"].pop("seed_exact")
    (s.zeroshot.parent / (s.zeroshot.name + ".meta.json")).write_text(json.dumps(meta))
    rep = report.build(s.layout, "custom", s.teacher, s.student, "gsm8k", data_dir=s.data_dir)
    assert "partly --seed-exact" in report.title(rep)
