import ast
import hashlib
from pathlib import Path

import pytest

from alice import prompts

# The seed's prompt-defining lines, copied byte for byte from github.com/ShujinWu-0814/Alice (each file's header
# names its path and commit), so that the templates are compared with the seed's source in every run.
SEED = Path(__file__).parent / "fixtures" / "seed_prompts"
# sha256 (first 16 hex digits) of the seed's template strings: W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py
# (template_to_generate_uncertainty, ...2), new_weak_to_strong_final.py (prompt_to_student, ..._gsm8k, ..._arc),
# cot/cot_generate_filter.py (the QA suffix after '{question}', the ARC prefix before it)
SEED_SHA256 = {
    "UNCERTAINTY_QA": "b9251c3d8ab323db",
    "UNCERTAINTY_GSM8K": "2215c1ee532271cd",
    "STUDENT_FINAL_QA": "953a59976f0239c5",
    "STUDENT_FINAL_GSM8K": "e1e95ff4c57d1e0b",
    "STUDENT_FINAL_ARC": "4649e87c2dd08ce6",
    "COT_QA": "62fc2ce0f492c117",
    "COT_ARC": "cc6dcd6b40a7c974",
}
SEED_NAMES = {
    "UNCERTAINTY_QA": ("new_weak_to_strong_uncertainty.py.txt", "template_to_generate_uncertainty"),
    "UNCERTAINTY_GSM8K": ("new_weak_to_strong_uncertainty.py.txt", "template_to_generate_uncertainty2"),
    "STUDENT_FINAL_QA": ("new_weak_to_strong_final.py.txt", "prompt_to_student"),
    "STUDENT_FINAL_GSM8K": ("new_weak_to_strong_final.py.txt", "prompt_to_student_gsm8k"),
    "STUDENT_FINAL_ARC": ("new_weak_to_strong_final.py.txt", "prompt_to_student_arc"),
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(SEED_SHA256))
def test_templates_are_the_seeds_byte_for_byte(name):
    assert _sha(getattr(prompts, name)) == SEED_SHA256[name]


@pytest.mark.parametrize("name", list(SEED_NAMES))
def test_templates_equal_the_seed_source(name):
    path, var = SEED_NAMES[name]
    tree = ast.parse((SEED / path).read_text())
    found = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             and any(isinstance(t, ast.Name) and t.id == var for t in n.targets)]
    assert found == [getattr(prompts, name)]


def test_cot_templates_equal_the_seed_source():
    # the seed builds the CoT prompts as  <ARC prefix> + question.strip()  and  question.strip() + <QA suffix>
    tree = ast.parse((SEED / "cot_generate_filter.py.txt").read_text())
    joins = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)]
    prefixes = [n.left.value for n in joins if isinstance(n.left, ast.Constant)]
    suffixes = [n.right.value for n in joins if isinstance(n.right, ast.Constant)]
    assert prompts.COT_ARC.endswith("{question}") and prompts.COT_QA.startswith("{question}")
    assert prefixes == [prompts.COT_ARC.removesuffix("{question}")]
    assert suffixes == [prompts.COT_QA.removeprefix("{question}")]


def test_cot_prompts():
    qa = prompts.cot_messages("hotpotqa", "  Who won?  ")
    assert qa == [{"role": "user", "content": "Who won?\nKeep your answer in 1-3 sentences. Please provide your step-by-step thinking process: "}]
    arc = prompts.cot_messages("arc_challenge", "Q\nA. x\nB. y")[0]["content"]
    assert "My choice is A." in arc and arc.endswith("Here is the question:Q\nA. x\nB. y")


def test_uncertainty_prompt_lists_cluster_representatives():
    msg = prompts.uncertainty_messages("hotpotqa", "Who?", ["Alice", "Bob"])[0]["content"]
    # as the seed: the numbered representatives, then the template's own newline and 4 spaces
    assert msg.endswith("    Question: Who?\n\n    Responses: \n    1. Alice\n2. Bob\n\n    ")
    assert "Sky High" in msg and "first-person" in msg and "\n    Please note that:" in msg
    gsm = prompts.uncertainty_messages("gsm8k", "Cost?", ["#### 3", "#### 4"])[0]["content"]
    assert "pen and pencil" in gsm and "Sky High" not in gsm
    assert "\n    3. \n    \n    The output can be" in gsm  # the seed's empty third example response


def test_student_final_prompts_per_dataset():
    args = ("Q?", "mine", "theirs", "I am unsure.")
    qa = prompts.student_final_messages("triviaqa", *args)[0]["content"]
    gsm = prompts.student_final_messages("gsm8k", *args)[0]["content"]
    arc = prompts.student_final_messages("arc_challenge", *args)[0]["content"]
    for text in (qa, gsm, arc):
        assert text.startswith("\n    You will be provided with a question,  a response from yourself")
        assert ("    Here is the question: Q?\n    Here is your original answer: mine\n"
                "    Here is another model's answer: theirs\n") in text
        assert "uncertainty statement: I am unsure." in text
    assert "'#### <answer>'" in gsm and "My choice is" in arc and "I don't know" in qa
    assert len({qa, gsm, arc}) == 3
    # a question with braces is inserted as text, never parsed as a format field
    assert "x = {y}" in prompts.student_final_messages("gsm8k", "x = {y}", "a", "b", "c")[0]["content"]
