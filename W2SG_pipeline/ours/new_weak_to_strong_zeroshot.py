"""Alice step 4c: the untrained student answers each uncertain question zero-shot -> *_zeroshot.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_zeroshot.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn

Every flag parses into ``alice.stages.zeroshot.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.zeroshot import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/zeroshot.py)

if __name__ == "__main__":
    main()
