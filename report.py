"""Collect the evaluation summaries of one setting into a table with PGR (and 95% CIs) and a bar chart.

    python report.py --model qwen2.5 --data gsm8k --teacher 1.5B --student 7B [--midlevel 3B] [--data-dir D]

Reads model_outputs/eval/<data>/*_summary.json (written by evaluation.py); a summary not there yet is shown
as missing. Adds the paired difference Alice - original W2S (cot) on the test questions, and diagnostics of the
mechanism on the W2S part from the Alice stage files under data/, graded against the train split's ground truth
(loaded from --data-dir, else the Hub). Writes model_outputs/report/<model>_<teacher>_to_<student>_<data>.{json,md,png}.
"""

from __future__ import annotations

from alice import cli
from alice import report
from alice.paths import Layout


@cli.main_guard
def main(argv=None) -> dict:
    p = cli.parser("Report a setting's evaluations: accuracy, PGR, 95% CIs, paired differences, diagnostics, a bar chart.")
    args = p.parse_args(argv)
    cli.resolve(p, args, "teacher")
    cli.resolve(p, args, "student")
    if args.midlevel:
        cli.resolve(p, args, "midlevel")
    layout = Layout.default(args.root)
    rep = report.build(layout, args.model, args.teacher, args.student, args.data, args.midlevel, args.data_dir)
    print(report.title(rep))
    print("\n".join(report.lines(rep)))
    paths = report.write(layout, rep)
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return rep


if __name__ == "__main__":
    main()
