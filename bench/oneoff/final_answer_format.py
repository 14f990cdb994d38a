"""Issue 14's diagnosis of a gsm8k run: how Alice's training answers and each model's test answers are written.

    python bench/oneoff/final_answer_format.py real_gsm8k.tar.gz [--out results/gsm8k_final_answer_format.json]

The tarball is what ``bench/oneoff/gpu_real_results.sh pack`` brings back (a --root without weights). For the student's
proactive answers (the 'new' rows of Alice's training file) and for every evaluated model's test answers it counts:

- ``bare``: nothing but the final line: fewer than ``grading.MIN_REASONING_CHARS`` non-space characters before the
  last '####';
- ``boxed_without_marker``: a \\boxed{...} answer and no '####' line (the format the prompts do not ask for);
- ``copies_example``: a copy of the final prompt's example response (``alice.prompts.FINAL_EXAMPLE_GSM8K``);
- for test answers, the accuracy of the bare and of the other answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

from alice import grading, prompts

def bare(text: str) -> bool:
    """No worked solution: fewer non-space characters before the last '####' (or in all of it) than the final stage's
    well-formedness rule asks for (``grading.MIN_REASONING_CHARS``)."""
    head = text.rsplit("####", 1)[0] if "####" in text else text
    return grading.reasoning_chars(head) < grading.MIN_REASONING_CHARS


def boxed_without_marker(text: str) -> bool:
    return "\\boxed" in text and "####" not in text


def copies_example(text: str) -> bool:
    return grading.copies_example(text, prompts.FINAL_EXAMPLE_GSM8K)


def _share(rows: list[dict], key) -> dict:
    hits = [r for r in rows if key(r)]
    return {"n": len(hits), "of": len(rows), "share": round(len(hits) / len(rows), 4) if rows else None}


def analyse(root: Path) -> dict:
    out = {"min_reasoning_chars": grading.MIN_REASONING_CHARS, "training_new_rows": {}, "test_answers": {}}
    for f in sorted((root / "data" / "ours").glob("*/*.jsonl")):
        if f.name.endswith((".original.jsonl", "_zeroshot.jsonl", "_uncertainty.jsonl", "_sampled_clustered.jsonl")):
            continue
        rows = [json.loads(line) for line in f.open() if line.strip()]
        new = [r for r in rows if r.get("label") == "new"]
        out["training_new_rows"][f.name] = {"bare": _share(new, lambda r: bare(r["answer"])),
                                            "boxed_without_marker": _share(new, lambda r: boxed_without_marker(r["answer"])),
                                            "copies_example": _share(new, lambda r: copies_example(r["answer"]))}
    for f in sorted((root / "model_outputs" / "eval").glob("*/*.jsonl")):
        rows = [json.loads(line) for line in f.open() if line.strip()]
        if not rows or "response" not in rows[0]:
            continue
        b = [r for r in rows if bare(r["response"])]
        rest = [r for r in rows if not bare(r["response"])]
        acc = lambda rs: round(sum(bool(r["correct"]) for r in rs) / len(rs), 4) if rs else None  # noqa: E731
        out["test_answers"][f.stem] = {"n": len(rows), "accuracy": acc(rows), "bare": len(b), "accuracy_bare": acc(b),
                                       "accuracy_not_bare": acc(rest),
                                       "boxed_without_marker": sum(boxed_without_marker(r["response"]) for r in rows),
                                       "copies_example": sum(copies_example(r["response"]) for r in rows)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tarball", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(a.tarball) as tf:
            tf.extractall(tmp, filter="data")
        res = analyse(Path(tmp))
        res["source"] = a.tarball.name
        res["command"] = "python bench/oneoff/final_answer_format.py " + " ".join(argv if argv is not None else sys.argv[1:])
        for name in ("commit.txt", "device.txt", "command.txt"):
            p = Path(tmp) / name
            if p.exists():
                res[name.split(".")[0] if name != "command.txt" else "run_command"] = p.read_text().strip()
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return res


if __name__ == "__main__":
    main()
