"""Which rows a training run uses: ``--method`` (+ its type) -> the model trained, its rows, its output folder.

- ``resolve_job``: the ``Job`` (model, rows, folder); missing inputs name the command that makes them.
  Every training row is ``{id, question, answer}``; ``answer`` is the target.
- ``to_examples``: rows -> TRL's conversational prompt-completion examples. TRL renders them with the trained model's
  own chat template and, for this format, puts the loss on the completion tokens only (prompt and padding are -100).

Training itself is ``alice.sft`` (which re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import data as data_mod
from . import artifacts, prompts, registry
from .jsonl import JsonlError, read_jsonl
from .paths import Layout
from .sft_config import SFTError

METHODS = ("base", "ours-wts-stage1", "original-wts-stage1", "original-wts-stage2", "ours-wts-stage2")
OURS_TYPES = {"ours-wts-stage1": ("singleturn",), "ours-wts-stage2": ("singleturn", "cascade1", "cascade2")}
ORIGINAL_TYPES = {"original-wts-stage1": ("qa",), "original-wts-stage2": ("qa", "cot", "cascade")}


# ----------------------------------------------------------------------------------------------------
# Method -> model, rows, output folder
# ----------------------------------------------------------------------------------------------------
@dataclass
class Job:
    method: str
    type_: str | None
    role: str  # 'teacher' or 'student': which model is trained
    size: str  # the size (or id/folder) given for that role
    model_id: str  # hub id or folder loaded with from_pretrained
    out_dir: Path
    source: str  # where the rows come from (a file, or a split of a dataset)
    rows: list[dict] = field(default_factory=list)
    input_file: Path | None = None  # the stage file the rows come from (None: a dataset split)


def method_type(method: str, ours_type: str | None, original_type: str | None) -> str | None:
    """The type flag that applies to ``method`` (checked), or None for ``base``."""
    if method == "base":
        return None
    table, flag, given = (
        (OURS_TYPES, "--ours-wts-type", ours_type) if method.startswith("ours") else (ORIGINAL_TYPES, "--original-wts-type", original_type)
    )
    choices = table[method]
    if given is None:
        if len(choices) == 1:
            return choices[0]
        raise SFTError(f"--method {method} needs {flag} (one of {', '.join(choices)})")
    if given not in choices:
        raise SFTError(f"--method {method} takes {flag} {' or '.join(choices)}, not {given!r}")
    return given


def _file_rows(path: Path, made_by: str) -> list[dict]:
    """``{id, question, answer}`` rows of a stage's file (``answer`` is the training target)."""
    rows = read_jsonl(path, made_by=made_by)
    out = []
    for n, r in enumerate(rows, 1):
        missing = [k for k in ("question", "answer") if not isinstance(r.get(k), str)]
        if missing:
            raise JsonlError(f"{path}, row {n}: no {' / '.join(missing)} text (training reads 'question' and 'answer'); rerun `{made_by}`")
        out.append({"id": r.get("id"), "question": r["question"], "answer": r["answer"]})
    return out


def qa_target(data: str, row: dict) -> str:
    """The short answer a 'qa' teacher is trained on (the dataset's ``qa_target``: gsm8k ``#### N``)."""
    return data_mod.spec(data).qa_target(row)


def qa_rows_from_cot(path: Path, made_by: str) -> list[dict]:
    """The 'qa' teacher's rows outside gsm8k: the questions of ``*_cot_correct.jsonl`` (those the teacher answered
    correctly with CoT), each with its ground-truth short answer (``ground_truth_response``), as the seed's SFT.py
    did for hotpotqa/triviaqa/arc_challenge."""
    rows = read_jsonl(path, made_by=made_by)
    out = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r.get("question"), str) or not isinstance(r.get("ground_truth_response"), str):
            raise JsonlError(f"{path}, row {n}: no 'question' / 'ground_truth_response' text; rerun `{made_by}`")
        out.append({"id": r.get("id"), "question": r["question"], "answer": r["ground_truth_response"]})
    return out


def resolve_job(
    *,
    model: str,
    data: str,
    method: str,
    teacher: str | None,
    student: str | None,
    ours_type: str | None = None,
    original_type: str | None = None,
    layout: Layout,
    data_dir: str | None = None,
    output_dir: str | None = None,
    load_rows: bool = True,
) -> Job:
    """Which model ``method`` trains, on which rows, into which folder. Missing inputs name the command that makes them."""
    if method not in METHODS:
        raise SFTError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}")
    type_ = method_type(method, ours_type, original_type)
    role = "teacher" if method.endswith("stage1") else "student"
    needed = ("student",) if method == "base" else (("teacher",) if role == "teacher" else ("teacher", "student"))
    for r in needed:
        if {"teacher": teacher, "student": student}[r] is None:
            hint = " (the trained model; the weak baseline is --student <teacher size>)" if method == "base" else ""
            raise SFTError(f"--method {method} needs --{r}{hint}")
    size = teacher if role == "teacher" else student
    model_id = registry.resolve_model(model, size)
    M, D, T, S, L = model, data, teacher, student, layout
    where = dict(root=L.root, data_dir=data_dir)  # --data-dir / --root of the hinted commands
    path = None

    if method == "base":
        out, source = artifacts.base_model(L, M, D, S).path, f"{D} train split: W2S part (ground truth)"
        load = lambda: data_mod.load_subset(D, "w2s_part", data_dir)  # noqa: E731
    elif method == "ours-wts-stage1":
        out = artifacts.teacher_model(L, M, D, T, "cot").path
        if not data_mod.spec(D).ships_cot:
            cot = artifacts.cot(L, M, D, T)
            path, made_by, source = cot.path, cot.command(**where), str(cot.path)
            load = lambda: _file_rows(path, made_by)  # noqa: E731
        else:  # gsm8k ships its own worked solutions
            source = f"{D} train split: teacher half (ground-truth worked solutions)"
            load = lambda: data_mod.load_subset(D, "teacher_half", data_dir)  # noqa: E731
    elif method == "original-wts-stage1":
        out = artifacts.teacher_model(L, M, D, T, "qa").path
        if not data_mod.spec(D).ships_cot:  # as the seed: the questions whose CoT was correct, with their short answer
            cot = artifacts.cot(L, M, D, T)
            path, made_by = cot.path, cot.command(**where)
            source = f"{path} (questions with a correct CoT; target: the ground-truth short answer)"
            load = lambda: qa_rows_from_cot(path, made_by)  # noqa: E731
        else:  # gsm8k: the whole teacher half, target '#### N'
            source = f"{D} train split: teacher half (short answers)"
            load = lambda: [dict(r, answer=qa_target(D, r)) for r in data_mod.load_subset(D, "teacher_half", data_dir)]  # noqa: E731
    elif method == "original-wts-stage2":
        out = artifacts.original_student(L, M, D, T, S, type_).path
        if type_ == "cascade":
            # hop 1 (teacher -> mid): labels by the teacher; hop 2 (mid -> student): labels by the mid-level model
            hop1, hop2 = (artifacts.original_labels(L, M, D, T, "cascade1"),
                          artifacts.original_labels(L, M, D, "<teacher>", "cascade2", midlevel=T))
            path, made_by = hop1.path, f"{hop1.command(**where)}` (hop 1), or `{hop2.command(**where)}"
        else:
            labels = artifacts.original_labels(L, M, D, T, type_)
            path, made_by = labels.path, labels.command(**where)
        source = str(path)
        load = lambda: _file_rows(path, made_by)  # noqa: E731
    else:  # ours-wts-stage2
        out = artifacts.alice_student(L, M, D, T, S, type_).path
        # the Alice final stage of this very setting (it names its own missing inputs in turn)
        final = (artifacts.alice_stage(L, "final", M, D, "<teacher>", S, midlevel=T) if type_ == "cascade2"
                 else artifacts.alice_stage(L, "final", M, D, T, S))
        path, made_by, source = final.path, final.command(**where), str(final.path)
        if type_ == "cascade1":
            source += f" (rows whose id is in the cascade's first half of the {D} W2S part)"
            load = lambda: cascade_first_rows(_file_rows(path, made_by), path, D, data_dir, made_by)  # noqa: E731
        else:
            load = lambda: _file_rows(path, made_by)  # noqa: E731

    job = Job(method, type_, role, size, model_id, Path(output_dir) if output_dir else out, source,
              input_file=Path(path) if path is not None else None)
    if load_rows:
        job.rows = load()
        if not job.rows:
            raise SFTError(f"no training rows in {source}")
    return job


def cascade_first_rows(rows: list[dict], path: Path, data: str, data_dir: str | None,
                       made_by: str = "python W2SG_pipeline/ours/new_weak_to_strong_final.py ... --overwrite") -> list[dict]:
    """Cascade hop 1 trains the mid-level model on the single-turn Alice rows of the W2S part's first half, by id.

    (The file lists 'original' rows before 'new' ones, so taking its first half of lines would pick the wrong rows.)
    """
    if any(r["id"] is None for r in rows):
        raise JsonlError(f"{path} has rows without an 'id': rerun `{made_by} --overwrite`")
    first = {r["id"] for r in data_mod.load_subset(data, "cascade_first", data_dir)}
    keep = [r for r in rows if r["id"] in first]
    if not keep:
        raise SFTError(f"none of the {len(rows)} ids in {path} is in the cascade's first half of the {data} W2S part: "
                       "was it made from the same data (--data-dir)?")
    return keep


def to_examples(rows: list[dict]) -> list[dict]:
    """Rows -> TRL conversational prompt-completion examples (loss on the completion only)."""
    return [
        {"prompt": prompts.question_messages(r["question"]), "completion": [{"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ]
