"""Evaluate a model on the test split: greedy answers, graded, written with a summary (accuracy, 95% CI).

    python evaluation.py --data gsm8k --model qwen2.5 --student 7B --method naive
    python evaluation.py --data gsm8k --model qwen2.5 --student 7B --method base
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 1.5B --student 7B --method original-wts --original-wts-type qa
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 1.5B --student 7B --method ours-wts --ours-wts-type singleturn
    python evaluation.py --data gsm8k --model qwen2.5 --teacher 3B --student 7B --method ours-wts --ours-wts-type cascade

For the cascade types pass the mid-level model as --teacher (the teacher of the last hop), as the seed does.
Writes model_outputs/eval/<data>/<run>.jsonl (one row per question) and <run>_summary.json; a rerun with
the same settings prints the stored result, a killed run continues where it stopped.
Every flag parses into ``alice.stages.evaluate.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.evaluate import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/evaluate.py)

if __name__ == "__main__":
    main()
