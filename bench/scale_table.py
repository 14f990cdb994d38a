"""The GPUs each paper setting needs, from the memory plan (issue 26): for every setting of the paper, the smallest
number of 80 GB and of 141 GB GPUs on which every step of ``python -m alice.pipeline ... --paper`` fits, and the plan
of its largest training step and of the summarizer there. Estimated (no GPU needed); results/scale_gpu.json holds the
measured checks of single steps.

    python bench/scale_table.py                       # a markdown table
    python bench/scale_table.py --json results/scale_table.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import pipeline  # noqa: E402
from alice import plan as P  # noqa: E402

SETTINGS = [  # (family, teacher, mid-level, student): the paper's single-turn and cascade settings
    ("qwen2.5", "1.5B", None, "3B"), ("qwen2.5", "1.5B", None, "7B"), ("qwen2.5", "3B", None, "7B"),
    ("qwen2.5", "1.5B", "3B", "7B"),
    ("llama3", "1B", None, "3B"), ("llama3", "1B", None, "8B"), ("llama3", "3B", None, "8B"),
    ("llama3", "1B", "3B", "8B"),
]
CARDS = (80.0, 141.0)
COUNTS = (1, 2, 4, 8)


def needs(family, teacher, mid, student, gib: float, lora: bool = False, summarizer: str | None = None) -> dict:
    """The smallest GPU count (of ``COUNTS``) at which every step fits, with the biggest steps' plans there."""
    argv = ["--model", family, "--data", "gsm8k", "--teacher", teacher, "--student", student, "--paper", "--dry-run",
            *(["--midlevel", mid] if mid else []), *(["--lora"] if lora else []),
            *(["--summarizer-model", summarizer] if summarizer else [])]
    for n in COUNTS:
        args = pipeline.options_from_argv(argv + ["--gpus", str(n), "--gpu-memory-gib", str(gib)])
        steps = pipeline.plan(args)
        _, problems = pipeline.place(steps, args)
        if not problems:
            train = [s for s in steps if s.trains and s.model and pipeline.registry.resolve_model(family, student) == s.model]
            summ = [s for s in steps if s.name.endswith("uncertainty")]
            return {"gpus": n, "student_training": train[0].resources.split(" (worst case")[0] if train else None,
                    "summarizer": summ[0].resources if summ else None}
    return {"gpus": None, "why": problems[0][1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = []
    for fam, t, m, s in SETTINGS:
        row = {"setting": f"{fam} {t}{' -> ' + m if m else ''} -> {s}"}
        for gib in CARDS:
            row[f"{gib:.0f}GB"] = needs(fam, t, m, s, gib)
            row[f"{gib:.0f}GB_lora"] = needs(fam, t, m, s, gib, lora=True)
            row[f"{gib:.0f}GB_no70b"] = needs(fam, t, m, s, gib, summarizer=pipeline.registry.resolve_model(fam, s))
        rows.append(row)
    print("| setting (--paper) | 80 GB GPUs | 141 GB GPUs | 80 GB, the student as summarizer | 141 GB, the student as "
          "summarizer | 80 GB, --lora | the student's training there (80 GB) |")
    print("|---|---|---|---|---|---|---|")
    g = lambda r, k: r[k]["gpus"] or ">8"  # noqa: E731
    for r in rows:
        print(f"| {r['setting']} | {g(r, '80GB')} | {g(r, '141GB')} | {g(r, '80GB_no70b')} | {g(r, '141GB_no70b')} | "
              f"{g(r, '80GB_lora')} | {r['80GB'].get('student_training') or r['80GB'].get('why')} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": "python bench/scale_table.py", "estimated": True,
                                            "usable_share": P.USABLE, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
