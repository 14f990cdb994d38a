"""Chat messages for every prompt of the paper, by dataset name.

The templates are the paper's released scripts' strings, verbatim (typos such as "consier", the indentation the
seed's triple-quoted strings carried and its list lines included, since the paper's models saw exactly these). Each
lives with its dataset (``alice.datasets.<name>``; the QA ones, shared by several datasets, in
``alice.datasets.shared``) and is named once, in that dataset's ``DatasetSpec``; they are re-exported here under their
names. Each ``*_messages`` function returns chat messages; chat templates come from each model's tokenizer.
"""

from __future__ import annotations

from .datasets import spec as _spec
from .datasets.arc_challenge import COT_ARC, FINAL_EXAMPLE_ARC, STUDENT_FINAL_ARC  # noqa: F401
from .datasets.gsm8k import FINAL_EXAMPLE_GSM8K, STUDENT_FINAL_GSM8K, UNCERTAINTY_GSM8K  # noqa: F401
from .datasets.shared import COT_QA, STUDENT_FINAL_QA, UNCERTAINTY_INSTRUCTIONS, UNCERTAINTY_QA  # noqa: F401

Messages = list[dict[str, str]]


def user(content: str) -> Messages:
    return [{"role": "user", "content": content}]


# Step 1: the teacher writes chain-of-thought for the teacher half (the datasets that do not ship it)
def cot_messages(data: str, question: str) -> Messages:
    template = _spec(data).cot_template
    if template is None:
        raise ValueError(f"{data} ships its own chain-of-thought: no CoT prompt")
    return user(template.format(question=question.strip()))


# ----------------------------------------------------------------------------------------------------
# Plain question prompts: the trained teacher's samples, original W2S labels, the student's zero-shot
# answer and evaluation all ask the bare question (the paper's scripts do; trained models learned the format)
# ----------------------------------------------------------------------------------------------------

def question_messages(question: str) -> Messages:
    return user(question)


def eval_messages(data: str, question: str) -> Messages:
    """Evaluation prompt on the test split (the paper asks the bare question for every dataset)."""
    return question_messages(question)


# Step 4b: the summarizer LLM turns the clusters' disagreement into a first-person uncertainty statement
def uncertainty_messages(data: str, question: str, cluster_responses: list[str]) -> Messages:
    """Ask the summarizer for the teacher's uncertainty, given one representative response per cluster
    (numbered as the seed's ``wrap_template``)."""
    responses = "".join(f"{i + 1}. {r}\n" for i, r in enumerate(cluster_responses))
    return user(_spec(data).uncertainty_template.format(question, responses))


# Step 4d: the student writes its final answer from its own answer, the teacher's and the uncertainty
def student_final_messages(
    data: str, question: str, student_answer: str, teacher_answer: str, uncertainty: str
) -> Messages:
    return user(_spec(data).final_template.format(question, student_answer, teacher_answer, uncertainty))


# ----------------------------------------------------------------------------------------------------
# Embedding instruction for clustering QA answers (the paper used hkunlp/instructor-large with it)
# ----------------------------------------------------------------------------------------------------
EMBEDDING_INSTRUCTION = 'Represent the paragraph for the question "{question}":'
