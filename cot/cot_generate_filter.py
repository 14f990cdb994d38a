"""Step 1: the teacher writes chain-of-thought for the teacher half; keep the answers graded correct.

    python cot/cot_generate_filter.py --model llama3 --data triviaqa --teacher 1B

For hotpotqa, triviaqa and arc_challenge (gsm8k ships its own worked solutions). Writes
data/CoT/<model>_<teacher>_<data>_cot.jsonl (every row: id, question, answer = the teacher's response,
ground_truth_response, correct) and ..._cot_correct.jsonl (the rows graded correct), the input of
``training/SFT.py --method ours-wts-stage1`` (and --method original-wts-stage1 --original-wts-type qa).
Every flag parses into ``alice.stages.cot.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.cot import Config, build_parser, cot_rows, main, parse, run  # noqa: F401  (the stage: alice/stages/cot.py)

if __name__ == "__main__":
    main()
