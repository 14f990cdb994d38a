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
from . import artifacts, methods, prompts, registry
from .jsonl import JsonlError, read_jsonl
from .paths import Layout
from .sft_config import SFTError

# training/SFT.py's choices, the paper's spellings of the method registry's entries (alice.methods)
METHODS = methods.sft_methods()
OURS_TYPES = {m: methods.sft_types("--ours-wts-type", m) for m in METHODS if methods.sft_types("--ours-wts-type", m)}
ORIGINAL_TYPES = {m: methods.sft_types("--original-wts-type", m) for m in METHODS
                  if methods.sft_types("--original-wts-type", m)}


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

    def training_rows(self, limit: int | None) -> list[dict]:
        """The rows a run trains on: the first ``limit`` (--limit), else all."""
        return self.rows[:limit] if limit else self.rows


def method_entry(method: str, ours_type: str | None, original_type: str | None) -> methods.Method:
    """The registry entry of ``--method`` and its type flag (checked: a wrong pair is one line naming the choices)."""
    try:
        return methods.by_sft_flags(method, ours_type, original_type)
    except methods.MethodError as e:
        raise SFTError(str(e)) from None


def method_type(method: str, ours_type: str | None, original_type: str | None) -> str | None:
    """The type flag's value that applies to ``method`` (checked), or None for ``base``."""
    return method_entry(method, ours_type, original_type).sft[1]


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
    m = method_entry(method, ours_type, original_type)
    type_, role = m.sft[1], m.trains
    needed = [r for r in ("teacher", "student") if "{" + r + "}" in m.name]  # the roles its folder is named by
    for r in needed:
        if {"teacher": teacher, "student": student}[r] is None:
            hint = " (the trained model; the weak baseline is --student <teacher size>)" if method == "base" else ""
            raise SFTError(f"--method {method} needs --{r}{hint}")
    size = teacher if role == "teacher" else student
    model_id = registry.resolve_model(model, size)
    M, D, T, S, L = model, data, teacher, student, layout
    where = dict(root=L.root, data_dir=data_dir)  # --data-dir / --root of the hinted commands
    out = artifacts.trained(L, m, M, D, T, S).path
    path, made_by, source, load = _input(m, M, D, T, S, L, data_dir, where)
    if m.rows == "cascade_first":
        source += f" (rows whose id is in the cascade's first half of the {D} W2S part)"
        read = load
        load = lambda: cascade_first_rows(read(), path, D, data_dir, made_by)  # noqa: E731
    elif m.rows and m.rows.startswith("label:"):
        label = m.rows.split(":", 1)[1]
        source += f" (its '{label}' rows)"
        load = lambda: _labelled_rows(path, made_by, label)  # noqa: E731

    job = Job(method, type_, role, size, model_id, Path(output_dir) if output_dir else out, source,
              input_file=Path(path) if path is not None else None)
    if load_rows:
        job.rows = load()
        if not job.rows:
            raise SFTError(f"no training rows in {source}")
    return job


def _input(m: methods.Method, M, D, T, S, L: Layout, data_dir, where):
    """Where the rows of ``m`` come from (its ``input``, ``methods.INPUTS``): (file or None, the command that makes it,
    a description, a loader)."""
    path = made_by = None
    if m.input == "ground_truth":
        return None, None, f"{D} train split: W2S part (ground truth)", lambda: data_mod.load_subset(D, "w2s_part", data_dir)
    if m.input in ("cot", "cot_qa") and data_mod.spec(D).ships_cot:  # gsm8k ships its own worked solutions
        if m.input == "cot":
            return (None, None, f"{D} train split: teacher half (ground-truth worked solutions)",
                    lambda: data_mod.load_subset(D, "teacher_half", data_dir))
        return (None, None, f"{D} train split: teacher half (short answers)",  # the whole teacher half, target '#### N'
                lambda: [dict(r, answer=qa_target(D, r)) for r in data_mod.load_subset(D, "teacher_half", data_dir)])
    if m.input in ("cot", "cot_qa"):
        cot = artifacts.cot(L, M, D, T)
        path, made_by = cot.path, cot.command(**where)
        if m.input == "cot":
            return path, made_by, str(path), lambda: _file_rows(path, made_by)
        # as the seed: the questions whose CoT was correct, with their short answer
        return (path, made_by, f"{path} (questions with a correct CoT; target: the ground-truth short answer)",
                lambda: qa_rows_from_cot(path, made_by))
    if m.input == "original_cascade_labels":
        # hop 1 (teacher -> mid): labels by the teacher; hop 2 (mid -> student): labels by the mid-level model
        hop1, hop2 = (artifacts.original_labels(L, M, D, T, "cascade1"),
                      artifacts.original_labels(L, M, D, "<teacher>", "cascade2", midlevel=T))
        path, made_by = hop1.path, f"{hop1.command(**where)}` (hop 1), or `{hop2.command(**where)}"
    elif m.input == "original_labels":
        labels = artifacts.original_labels(L, M, D, T, m.sft[1])
        path, made_by = labels.path, labels.command(**where)
    elif m.input == "alice_cascade_final":  # the Alice final stage of this very setting (it names its own inputs)
        final = artifacts.alice_stage(L, "final", M, D, "<teacher>", S, midlevel=T)
        path, made_by = final.path, final.command(**where)
    elif m.input == "alice_ablation":  # the ablation's own file (its type names it), made from Alice's stage files
        made = artifacts.alice_ablation(L, m.sft[1], M, D, T, S)
        path, made_by = made.path, made.command(**where)
    elif m.input == "alice_final":
        final = artifacts.alice_stage(L, "final", M, D, T, S)
        path, made_by = final.path, final.command(**where)
    else:
        raise SFTError(f"method {m.key!r}: training reads no input {m.input!r}")
    return path, made_by, str(path), lambda: _file_rows(path, made_by)


def _labelled_rows(path: Path, made_by: str, label: str) -> list[dict]:
    """The rows of an Alice training file whose 'label' is ``label`` (``original`` / ``new``)."""
    keep = {r.get("id") for r in read_jsonl(path, made_by=made_by) if r.get("label") == label}
    return [r for r in _file_rows(path, made_by) if r["id"] in keep]


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
