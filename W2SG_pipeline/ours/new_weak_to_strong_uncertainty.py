"""Alice step 4b: questions with one cluster keep the teacher's answer ('original' rows); for the others the
summarizer LLM states the teacher's uncertainty -> *_uncertainty.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_uncertainty.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn

Every flag parses into ``alice.stages.uncertainty.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.uncertainty import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/uncertainty.py)

if __name__ == "__main__":
    main()
