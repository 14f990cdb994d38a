"""Alice step 4d: the student writes its final answer from its own answer, the teacher's and the uncertainty
('new' rows); with the 'original' rows they make the student's training file *_to_*.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_final.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn

Every flag parses into ``alice.stages.final.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.final import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/final.py)

if __name__ == "__main__":
    main()
