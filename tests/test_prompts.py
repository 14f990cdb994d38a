from alice import prompts


def test_cot_prompts():
    qa = prompts.cot_messages("hotpotqa", "  Who won?  ")
    assert qa == [{"role": "user", "content": "Who won?\nKeep your answer in 1-3 sentences. Please provide your step-by-step thinking process: "}]
    arc = prompts.cot_messages("arc_challenge", "Q\nA. x\nB. y")[0]["content"]
    assert "My choice is A." in arc and arc.endswith("Here is the question:Q\nA. x\nB. y")


def test_uncertainty_prompt_lists_cluster_representatives():
    msg = prompts.uncertainty_messages("hotpotqa", "Who?", ["Alice", "Bob"])[0]["content"]
    assert msg.rstrip().endswith("Question: Who?\n\nResponses: \n1. Alice\n2. Bob")
    assert "Sky High" in msg and "first-person" in msg
    gsm = prompts.uncertainty_messages("gsm8k", "Cost?", ["#### 3", "#### 4"])[0]["content"]
    assert "pen and pencil" in gsm and "Sky High" not in gsm
    # no stray indentation from the seed's triple-quoted strings
    assert "\n    " not in msg and "\n    " not in gsm


def test_student_final_prompts_per_dataset():
    args = ("Q?", "mine", "theirs", "I am unsure.")
    qa = prompts.student_final_messages("triviaqa", *args)[0]["content"]
    gsm = prompts.student_final_messages("gsm8k", *args)[0]["content"]
    arc = prompts.student_final_messages("arc_challenge", *args)[0]["content"]
    for text in (qa, gsm, arc):
        assert "Here is the question: Q?\nHere is your original answer: mine\nHere is another model's answer: theirs\n" in text
        assert "uncertainty statement: I am unsure." in text
    assert "'#### <answer>'" in gsm and "My choice is" in arc and "I don't know" in qa
    assert len({qa, gsm, arc}) == 3
