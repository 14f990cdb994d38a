"""Adding a dataset is one registered block: a toy fifth dataset, declared once below (``TOY``), works in the
pipeline's dry-run, the loaders and splits, the graders, the prompts, the CoT stage, the four Alice stages and
SFT's job resolution, with no other edit anywhere."""

import json
import re

import pytest

from alice import alice_stages as st
from alice import data as data_mod
from alice import datasets
from alice import grading, pipeline, prompts, sft
from alice.jsonl import read_jsonl
from alice.paths import Layout
from alice.testing import load_script
from test_alice_stages import ARGS, ScriptedGenerator, fake_model


def _toy_answer(response, question=None):
    m = re.search(r"Answer:\s*(\w+)", response)
    return m.group(1).lower() if m else None


def _toy_grade(response, gold, question=None):
    got = _toy_answer(response)
    return grading.Grade(got == gold, got is not None, got)


# ---- the one block a newcomer writes -------------------------------------------------------------------
TOY = datasets.DatasetSpec(
    name="toycapitals",
    normalize=lambda split, i, raw: {"id": f"toy-{split}-{i}", "question": raw["q"], "answer": f"Answer: {raw['a']}",
                                     "gold": raw["a"]},
    grade=_toy_grade,
    uncertainty_template=prompts.UNCERTAINTY_QA,
    final_template=prompts.STUDENT_FINAL_QA,
    test_split="dev",
    answer_key=_toy_answer,  # Alice clusters by the extracted answer (None would mean embedding clustering)
    cot_template="Think step by step, then end with 'Answer: <city>'. {question}",
    fields="q, a",
)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))  # the registration ends with the test
    datasets.register_dataset(TOY)
    folder = tmp_path / "data_in" / "toycapitals"
    folder.mkdir(parents=True)
    for split, n in (("train", 40), ("dev", 6)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"q": f"q{i}: capital of country {i}?", "a": f"city{i % 3}"}) + "\n")
    return str(tmp_path / "data_in")


def test_toy_dataset_loads_grades_and_prompts(toy):
    rows = data_mod.load_train("toycapitals", toy)
    assert len(rows) == 40 and rows[0] == {"id": "toy-train-0", "question": "q0: capital of country 0?",
                                           "answer": "Answer: city0", "gold": "city0"}
    assert len(data_mod.load_test("toycapitals", toy)) == 6
    assert len(data_mod.load_subset("toycapitals", "w2s_part", toy)) == 20  # the paper's split rules apply
    assert grading.grade("toycapitals", "so... Answer: City1", "city1").correct
    assert grading.extract_final_answer("toycapitals", "Answer: city2") == "city2"
    assert "toycapitals" in data_mod.cot_datasets()
    assert prompts.cot_messages("toycapitals", "Q?")[0]["content"].endswith("'Answer: <city>'. Q?")
    assert sft.qa_target("toycapitals", rows[0]) == "Answer: city0"


def test_pipeline_dry_run_on_the_toy_dataset(toy, tmp_path, capsys):
    assert pipeline.main(["--dry-run", "--data", "toycapitals", "--data-dir", toy, "--root", str(tmp_path / "r"),
                          "--model", "custom", "--teacher", "org/small", "--student", "org/large"]) == 0
    out = capsys.readouterr().out
    assert "python cot/cot_generate_filter.py --model custom --data toycapitals" in out  # it needs CoT
    assert "new_weak_to_strong_final.py --model custom --data toycapitals" in out and "evaluation.py" in out


def test_cot_stage_on_the_toy_dataset(toy, tmp_path, tiny_models, monkeypatch):
    from alice import generation

    monkeypatch.setattr(generation.Generator, "generate",
                        lambda self, convs, sampling, desc="": [[f"Answer: city{int(c[-1]['content'].split('q')[1].split(':')[0]) % 2}"]
                                                                 for c in convs])
    cot = load_script("cot/cot_generate_filter.py")
    rows = cot.main(["--data", "toycapitals", "--model", "custom", "--teacher", str(tiny_models["qwen_small"]),
                     "--data-dir", toy, "--root", str(tmp_path / "r"), "--limit", "6", "--backend", "hf"])
    assert [r["correct"] for r in rows] == [True, True, False, False, False, False]  # gold city{i%3}, answer city{i%2}


def test_alice_stages_on_the_toy_dataset(toy, tmp_path):
    s = st.Setting(data="toycapitals", model="custom", teacher="teach", student="x/student",
                   layout=Layout(tmp_path / "root"), data_dir=toy)
    fake_model(s.sampler_model)
    log = []

    def reply(model, text, k):
        if "Your task is to analyze" in text:
            return "unsure"
        if "Here is your original answer" in text:
            return "The capital is the largest city of the country, so: Answer: final"  # well-formed: >= 40 characters
        if model.endswith("student"):
            return "Answer: zs"
        i = int(re.search(r"\bq(\d+): ", text).group(1))
        return f"Answer: city{k % 2}" if i % 2 else "Answer: city7"  # odd: two clusters; even: one

    def make(model):
        return ScriptedGenerator(model, reply, log)

    counts = st.run_cluster(s, ARGS, num_samples=4, make_generator=make)  # no encoder: answers are keyed
    assert counts["questions"] == 20 and counts["one_cluster"] == 10 and counts["several_clusters"] == 10
    st.run_uncertainty(s, ARGS, summarizer="summ", make_generator=make)
    st.run_zeroshot(s, ARGS, make_generator=make)
    st.run_final(s, ARGS, make_generator=make)
    train = read_jsonl(s.train)
    assert len(train) == 20 and {r["label"] for r in train} == {"original", "new"}
    assert [r["answer"] for r in train[:2]] == ["Answer: city7", "The capital is the largest city of the country, so: Answer: final"]

    job = sft.resolve_job(model="custom", data="toycapitals", method="ours-wts-stage2", teacher="teach",
                          student="x/student", ours_type="singleturn", layout=s.layout, data_dir=toy)
    assert len(job.rows) == 20
