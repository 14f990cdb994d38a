"""Collect the evaluation summaries of one setting into a table with PGR (and 95% CIs) and a bar chart.

    python report.py --model qwen2.5 --data gsm8k --teacher 1.5B --student 7B [--midlevel 3B] [--data-dir D]

Reads model_outputs/eval/<data>/*_summary.json (written by evaluation.py); a summary not there yet is shown
as missing. Adds the paired difference Alice - original W2S (cot) on the test questions, and diagnostics of the
mechanism on the W2S part from the Alice stage files under data/, graded against the train split's ground truth
(loaded from --data-dir, else the Hub). Writes model_outputs/report/<model>_<teacher>_to_<student>_<data>.{json,md,png}.
Every flag parses into ``alice.stages.report.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.report import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/report.py)

if __name__ == "__main__":
    main()
