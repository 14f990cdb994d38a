import pytest

from alice import grading, prompts
from alice.grading import grade


@pytest.mark.parametrize(
    "response,gold,correct",
    [
        ("She sold 48 + 24 = 72 clips.\n#### 72", "72", True),
        ("Total: $1,234.\n#### $1,234", "1234", True),
        ("#### 72.", "72", True),
        ("#### 72.0", "72", True),
        ("#### 72.50", "72.5", True),
        ("The answer is \\boxed{72}.", "72", True),
        ("So the total is \\boxed{\\$1{,}080}", "1080", True),
        ("#### -3", "-3", True),
        ("#### 18 dollars", "18", True),
        ("#### 72\n\nQuestion: next one. #### 5", "72", True),  # the FIRST #### is the answer
        ("#### 72\n\nQuestion: next one. #### 5", "5", False),  # what follows it is never graded
        ("#### 72 \\boxed{5}", "5", False),
        ("#### 71", "72", False),
        ("#### 720", "72", False),
        ("The answer is 72", "72", False),  # no #### and no box: unparsed
    ],
)
def test_gsm8k(response, gold, correct):
    assert grade("gsm8k", response, gold).correct is correct


def test_gsm8k_parsed_flag_and_gold():
    assert grade("gsm8k", "I think it's 72", "72").parsed is False
    assert grade("gsm8k", "#### 7", "72").parsed is True
    assert grading.gsm8k_gold("48/2 = <<48/2=24>>24\n#### 1,000") == "1000"
    assert grading.normalize_number("-$3.") == "-3"
    # more digits than decimal's 28 of precision (a sampled answer on the H200 crashed the grader with InvalidOperation)
    big = "1" * 40
    assert grading.normalize_number(big + ".0") == big and grading.normalize_number("100.00") == "100"
    assert grade("gsm8k", f"\\boxed{{{big}}}", "72").correct is False and grade("gsm8k", f"#### {big}", big).correct
    assert grading.extract_boxed("\\boxed{\\frac{1}{2}} and \\boxed{5}") == "5"


ARC_Q = "Which is a mammal?\nA. shark\nB. whale\nC. trout\nD. eel"


@pytest.mark.parametrize(
    "response,correct,extracted",
    [
        ("Whales breathe air and nurse their young. My choice is B.", True, "B"),
        ("My choice is [B].", True, "B"),
        ("my choice is (b)", True, "B"),
        ("My choice is B. whale", True, "B"),
        ("My choice is A. Wait, no. My choice is B.", True, "B"),
        ("B. whale", True, "B"),
        ("B", True, "B"),
        ("The answer is B.", True, "B"),
        ("So the correct answer is \\(\\boxed{B}\\).", True, "B"),  # how untrained instruct models end
        ("Hence \\boxed{\\text{B. whale}}", True, "B"),
        ("\\boxed{(C)} is wrong; the answer is B.", False, "C"),  # the boxed answer is the answer
        ("The speed is \\boxed{Ahead}.", False, None),  # a word starting with a label is not a label
        ("A whale is a mammal.", True, "B"),  # option text quoted, no letter
        ("My choice is C.", False, "C"),
        ("A. shark", False, "A"),
        ("I cannot decide.", False, None),
    ],
)
def test_arc(response, correct, extracted):
    g = grade("arc_challenge", response, "B. whale", ARC_Q)
    assert (g.correct, g.extracted) == (correct, extracted)
    assert g.parsed is (extracted is not None)


def test_arc_does_not_read_article_a_as_choice():
    # "A" as an article at the start is not "option A" unless followed by a delimiter
    assert grading.extract_arc("A shark is a fish; whales are mammals, so B.") != "A"


@pytest.mark.parametrize(
    "response,gold,correct",
    [
        ("The Bolsheviks won; the war ended in October 1922.", "October 1922", True),
        ("It ended in october, 1922!", "October 1922", True),
        ("The answer is The Beatles.", "Beatles", True),
        ("It ended in 1923.", "October 1922", False),
        ("Mercury", "Mercury", True),
        ("Mercurys", "Mercury", False),  # whole words only
        ("", "Mercury", False),
    ],
)
def test_hotpotqa(response, gold, correct):
    assert grade("hotpotqa", response, gold).correct is correct


def test_triviaqa_any_alias():
    aliases = ["Sol 3a", "Moon", "Luna (natural satellite)"]
    assert grade("triviaqa", "It is the Moon that passes between them.", aliases).correct
    assert grade("triviaqa", "luna natural satellite", aliases).correct
    assert not grade("triviaqa", "The sun itself.", aliases).correct
    assert grade("triviaqa", "", aliases).parsed is False


def test_extract_final_answer_for_clustering():
    assert grading.extract_final_answer("gsm8k", "x\n#### 1,000") == "1000"
    assert grading.extract_final_answer("arc_challenge", "so My choice is d.", ARC_Q) == "D"
    assert grading.extract_final_answer("gsm8k", "no number here") is None
    with pytest.raises(ValueError):
        grading.extract_final_answer("hotpotqa", "x")


def test_gsm8k_first_marker_without_number_is_unparsed():
    # the first #### holds no number: the answer is unreadable, not taken from a later ####
    assert grading.extract_gsm8k("#### (see below)\n#### 7") is None
    assert grading.extract_final_answer("gsm8k", "#### 3\nNext: #### 4") == "3"  # clustering reads it the same way


ARC_NUM_Q = ("A chemical property of a mineral is evident if the mineral\n1. breaks easily when struck with a hammer\n"
             "2. bubbles when acid is placed on it\n3. is easily scratched by a fingernail\n4. reflects light from its surface")
ARC_NUM_GOLD = "2. bubbles when acid is placed on it"


@pytest.mark.parametrize(
    "response,correct,extracted",
    [
        ("Acid reacts with carbonates. My choice is 2.", True, "2"),
        ("My choice is [2].", True, "2"),
        ("2. bubbles when acid is placed on it", True, "2"),
        ("The answer is 2.", True, "2"),
        ("It bubbles when acid is placed on it.", True, "2"),  # option text quoted
        ("My choice is 3.", False, "3"),
        ("1. First, think about what a chemical property is.", False, "1"),
        ("I cannot decide.", False, None),
    ],
)
def test_arc_numeric_labels(response, correct, extracted):
    """The seed's processed ARC keeps the 1-4 labels of a few questions (22 of 1,172 test questions)."""
    g = grade("arc_challenge", response, ARC_NUM_GOLD, ARC_NUM_Q)
    assert (g.correct, g.extracted) == (correct, extracted)
    assert grading.arc_options(ARC_NUM_Q)["4"] == "reflects light from its surface"
    # without the question, the gold's own label decides the label kind
    assert grade("arc_challenge", "My choice is 2.", ARC_NUM_GOLD).correct
    # a lettered question never reads a digit as a choice
    assert grade("arc_challenge", "My choice is 2.", "B. whale", ARC_Q).parsed is False


def test_arc_numeric_labels_in_offline_copy(offline_data):
    from alice import data

    rows = [r for r in data.load_test("arc_challenge", offline_data) if r["gold"][0].isdigit()]
    if not rows:
        pytest.skip("this ARC copy has no numerically labelled questions")
    for r in rows:
        label = grading.arc_gold_label(r["gold"])
        assert label in grading.arc_options(r["question"])
        assert grade("arc_challenge", f"Reasoning. My choice is {label}.", r["gold"], r["question"]).correct
        assert grading.extract_final_answer("arc_challenge", f"My choice is {label}.", r["question"]) == label


# The seed's metric (evaluation/evaluate.py), case by case
def _seed(data, response, row, **kw):
    return grading.seed_grade(data, response, grading.seed_gold(data, row), **kw)


def test_seed_gsm8k_exact_string_after_first_marker():
    row = {"answer": "48/2 = 24\n#### 72", "gold": "72"}
    assert _seed("gsm8k", "so\n#### 72", row) == grading.Grade(True, True, "72")
    assert _seed("gsm8k", "#### 72 #### 9", row).correct  # between the first and second ####
    assert not _seed("gsm8k", "#### 72\nQ: more", row).correct  # the seed read everything after it, stripped
    # the seed compared strings: these are right answers it graded wrong (the project grades them right)
    for r in ("#### 72.", "#### $72", "#### 72.0"):
        assert not _seed("gsm8k", r, row).correct and _seed("gsm8k", r, row).parsed
        assert grade("gsm8k", r, "72").correct
    # no ####: left out of the seed's denominator
    assert _seed("gsm8k", "\\boxed{72}", row).parsed is False


def test_seed_qa_substring_matches():
    # substring, not whole words: the seed counted 'Mercurys' for 'Mercury' (the project does not)
    assert _seed("hotpotqa", "Mercurys", {"gold": "Mercury"}).correct
    assert not grade("hotpotqa", "Mercurys", "Mercury").correct
    assert _seed("hotpotqa", "", {"gold": "Mercury"}) == grading.Grade(False, True, None)  # counted in n
    row = {"gold": ["Men's room", "mens room"], "gold_seed": ["mens room"]}
    # the seed compared the normalised aliases only
    assert not _seed("triviaqa", "The men's room.", row).correct
    assert _seed("triviaqa", "Mens room", row).correct


def test_seed_arc_split_matching():
    row = {"answer": "B. whale", "gold": "B. whale"}
    ours = dict(method="ours-wts")
    assert _seed("arc_challenge", "Whales nurse. My choice is B.", row, **ours) == grading.Grade(True, True, "B")
    assert _seed("arc_challenge", "Whales nurse. My choice is whale", row, **ours).correct is False
    assert _seed("arc_challenge", "My choice is A. whale", row, **ours).correct  # 2nd part matched the option text
    assert _seed("arc_challenge", "B. whale", row, **ours).parsed is False  # no 'My choice is': not counted
    assert _seed("arc_challenge", "My choice is B.", row, method="original-wts", original_wts_type="cot").correct
    # other runs: the whole response split on '.', gold letter a substring of the first sentence (lenient)
    base = dict(method="base")
    assert _seed("arc_challenge", "B. whale", row, **base).correct
    assert _seed("arc_challenge", "Because whales breathe air. So A.", row, **base).correct  # 'b' in 'because'
    assert _seed("arc_challenge", "Sharks. whale", row, **base).correct  # option text in the 2nd sentence
    assert _seed("arc_challenge", "Sharks are fish", row, **base) == grading.Grade(False, True, "Sharks are fish")


# ----------------------------------------------------------------------------------------------------
# well_formed: the final-answer format the final prompt requires, with reasoning before it
# ----------------------------------------------------------------------------------------------------
SANDWICH = "Each of the 5 boxes holds 3 pens, so there are 3*5=<<3*5=15>>15 pens in all"  # a worked solution
EXAMPLE = "Each sandwich needs 3 slices of bread for a total of 3*5=<<3*5=15>>15 slices of bread"  # the prompt's example
WF_ARC_Q = "Which body orbits the Earth?\nA. the Moon\nB. the Sun\nC. Mars\nD. Venus"
ARC_WHY = "The Moon's constant rotation completes in the same amount of time it takes to orbit the Earth."


@pytest.mark.parametrize(
    "data,response,question,ok",
    [
        ("gsm8k", f"{SANDWICH}\n#### 15", None, True),
        ("gsm8k", f"{EXAMPLE}\n#### 15", None, False),  # the prompt's own example, copied (113 of 746 'new' rows)
        ("gsm8k", f"Let us see.\n{EXAMPLE.upper()}  \n#### 15", None, False),  # a copy inside other text
        ("gsm8k", f"{EXAMPLE.replace('<<3*5=15>>', '')}\n#### 15", None, False),  # a copy without the annotation
        ("gsm8k", f"{SANDWICH.replace('<<3*5=15>>', '')}\n#### 15", None, True),  # a solution without one
        ("gsm8k", "#### 15", None, False),  # bare answer: what the 1.5B student wrote 221 times of 746
        ("gsm8k", "\n\n#### 15\n", None, False),
        ("gsm8k", "\\boxed{8}", None, False),  # boxed, no '####'
        ("gsm8k", f"{SANDWICH}, so the answer is \\boxed{{15}}", None, False),  # reasoning, but not the format asked
        ("gsm8k", "\\boxed{15}\n#### 15", None, False),  # the box is no reasoning
        ("gsm8k", "The answer is 15.\n#### 15", None, False),  # under 40 non-space characters
        ("gsm8k", f"{SANDWICH}\n#### $1,080.50", None, True),
        ("gsm8k", f"{SANDWICH}\n#### -3", None, True),
        ("gsm8k", f"{SANDWICH}\n#### the answer is 15", None, False),  # '#### <answer>' in number only
        ("gsm8k", f"{SANDWICH}\n#### 15\nQuestion: next. #### 5", None, False),  # not the last answer marker
        ("gsm8k", f"{SANDWICH}\n#### 15 \\boxed{{5}}", None, False),
        ("gsm8k", f"#### 15\n{SANDWICH}", None, False),  # reasoning after the answer, not before
        ("arc_challenge", "My choice is B.", WF_ARC_Q, False),
        ("arc_challenge", f"{ARC_WHY}\nMy choice is A.", WF_ARC_Q, True),
        ("arc_challenge", f"{ARC_WHY}\nMy choice is A.", None, True),
        ("arc_challenge", prompts.FINAL_EXAMPLE_ARC, WF_ARC_Q, False),  # the prompt's own example, copied
        ("arc_challenge", f"{ARC_WHY}\nThe answer is A.", WF_ARC_Q, False),  # not the format asked
        ("arc_challenge", f"A. the Moon. {ARC_WHY}", WF_ARC_Q, False),
        ("arc_challenge", f"{ARC_WHY}\nMy choice is E.", WF_ARC_Q, False),  # not an option label
        ("arc_challenge", f"{ARC_WHY}\nMy choice is 2.", "Q?\n1. one\n2. two\n3. three", True),
        ("hotpotqa", "Paris", None, False),  # the QA prompt asks for a step-by-step solution: no format, only reasoning
        ("hotpotqa", "The Eiffel Tower stands in the capital of France, which is Paris.", None, True),
        ("triviaqa", "John Travolta.", None, False),
        ("triviaqa", "Kelly Preston starred in Sky High and was married to John Travolta.", None, True),
    ],
)
def test_well_formed(data, response, question, ok):
    assert grading.well_formed(data, response, question) is ok


def test_final_examples_are_the_ones_the_prompts_show():
    """The example responses well_formed rejects are verbatim in the final prompts (which stay the seed's)."""
    assert prompts.FINAL_EXAMPLE_GSM8K in prompts.STUDENT_FINAL_GSM8K and EXAMPLE in prompts.FINAL_EXAMPLE_GSM8K
    assert prompts.FINAL_EXAMPLE_ARC in prompts.STUDENT_FINAL_ARC


def test_well_formed_reasoning_threshold_is_the_shortest_gsm8k_solution():
    assert grading.MIN_REASONING_CHARS == 40
    assert grading.well_formed("gsm8k", "x" * 40 + "\n#### 1") and not grading.well_formed("gsm8k", "x" * 39 + "\n#### 1")
    assert grading.well_formed("gsm8k", " ".join("x" * 40) + "\n#### 1")  # spaces do not count, characters do


def test_strict_extractors_read_only_the_required_format():
    assert grading.extract_gsm8k(f"{SANDWICH}\n#### 15", strict=True) == "15"
    assert grading.extract_gsm8k("so \\boxed{8}", strict=True) is None and grading.extract_gsm8k("so \\boxed{8}") == "8"
    assert grading.extract_arc("B. the Sun", strict=True) is None and grading.extract_arc("B. the Sun") == "B"
    assert grading.extract_arc("so... My choice is [C].", strict=True) == "C"
