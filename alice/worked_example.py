"""One worked example of Alice, read from a setting's stage files: a question on which the teacher's samples
disagree (several clusters), the clusters, the summarizer's uncertainty statement, and the student's zero-shot
and final (proactive) answers. The pipeline prints it at the end of a run.

    python -m alice.worked_example --model qwen2.5-coder --data gsm8k --teacher 0.5B --student 1.5B [--root R]
"""

from __future__ import annotations

import argparse
from collections import Counter

from . import data as data_mod
from .alice_stages import Setting
from .grading import extract_final_answer
from .jsonl import read_jsonl
from .paths import Layout

WIDTH = 700  # characters shown of a long answer (its start and its end, where the final answer is)


def shorten(text: str, width: int = WIDTH) -> str:
    text = text.strip()
    if len(text) <= width:
        return text
    head, tail = width * 3 // 5, width * 2 // 5
    return f"{text[:head].rstrip()} [... {len(text) - head - tail} characters ...] {text[-tail:].lstrip()}"


def cluster_lines(data: str, row: dict) -> list[str]:
    """``answer: count`` per cluster (gsm8k/ARC: the extracted answer), then what formed no cluster."""
    samples = row.get("sampled_responses", [])
    if not data_mod.spec(data).uses_embeddings:
        keys = Counter(extract_final_answer(data, r, row["question"]) for r in samples)
        lines = [f"{extract_final_answer(data, c['response'], row['question'])}: {c['size']}" for c in row["clusters"]]
        rest = {"answers given once": sum(n for k, n in keys.items() if k is not None and n == 1),
                "no readable final answer": keys.get(None, 0)}
    else:
        lines = [f"{shorten(c['response'], 80)!r}: {c['size']}" for c in row["clusters"]]
        rest = {"in no cluster": len(samples) - sum(c["size"] for c in row["clusters"])}
    lines += [f"({k}: {n})" for k, n in rest.items() if n]
    return lines


def worked_example(s: Setting) -> str | None:
    """The text of the first question with several clusters that went through every stage, preferring one whose
    final answer became a 'new' training row; else one whose final samples were all rejected (from the final stage's
    ``final_samples`` file), shown as such. None when there is none (or the stage files are not there yet)."""
    paths = (s.clustered, s.uncertainty, s.zeroshot, s.train)
    if not all(p.exists() for p in paths):
        return None
    uncertain = {r["id"]: r for r in read_jsonl(s.uncertainty)}
    zeroshot = {r["id"]: r for r in read_jsonl(s.zeroshot)}
    final = {r["id"]: r for r in read_jsonl(s.train) if r.get("label") == "new"}
    tried = {r["id"]: r for r in read_jsonl(s.final_samples)} if s.final_samples.exists() else {}
    clustered = read_jsonl(s.clustered)
    candidates = [r for r in clustered if len(r["clusters"]) > 1 and r["id"] in uncertain and r["id"] in zeroshot]
    row = next((r for r in candidates if r["id"] in final), None) or next(
        (r for r in candidates if tried.get(r["id"], {}).get("samples")), None)
    if row is None:
        return None
    i = row["id"]
    n_several = sum(len(r["clusters"]) > 1 for r in clustered)
    if i in final:
        last = ["", "Student's final answer (a 'new' training row):", shorten(final[i]["answer"])]
    else:
        samples = tried[i]["samples"]
        last = ["", f"Student's final answers: none of its {len(samples)} samples was well-formed (the final-answer "
                    "format after some reasoning, not a copy of the prompt's example), so the question was "
                    "dropped from the training file. The first:", shorten(samples[0])]
    out = [f"Worked example: question {i} of {s.data} ({len(row.get('sampled_responses', []))} teacher samples; "
           f"{n_several} of the {len(clustered)} questions with a cluster had several)",
           "", "Question:", shorten(row["question"]),
           "", "Teacher's clusters (answer: samples):", *(f"  {line}" for line in cluster_lines(s.data, row)),
           "", "Teacher's answer (the largest cluster's):", shorten(uncertain[i]["final_response"]),
           "", "Uncertainty statement (summarizer):", shorten(uncertain[i]["uncertainty"]),
           "", "Student's zero-shot answer:", shorten(zeroshot[i]["zero_shot_student_response"]), *last]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--data", "--teacher", "--student"):
        p.add_argument(flag, required=True)
    p.add_argument("--root", default=None)
    args = p.parse_args(argv)
    s = Setting(data=args.data, model=args.model, teacher=args.teacher, student=args.student,
                layout=Layout.default(args.root))
    text = worked_example(s)
    print(text or f"no question with several clusters went through every Alice stage in {s.clustered.parent}")
    return 0 if text else 1


if __name__ == "__main__":
    raise SystemExit(main())
