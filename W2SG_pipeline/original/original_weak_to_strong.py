"""Original W2S baseline, step 1: a trained teacher labels the W2S questions (the student trains on the labels).

    python W2SG_pipeline/original/original_weak_to_strong.py --model llama3 --data arc_challenge --teacher 1B --type cot

--type qa|cot     the stage-1 teacher trained on answers only (qa) or on CoT (cot) labels the W2S part
                  -> data/original/<model>_<teacher>_<data>_<type>teacher.jsonl
--type cascade_1  the cot teacher labels the first half of the W2S part (hop 1: teacher -> mid-level)
                  -> data/original_cascade/<data>/<model>_<teacher>_<data>.jsonl
--type cascade_2  the mid-level model trained on the cascade_1 labels (needs --midlevel) labels the second half
                  -> data/original_cascade/<data>/<model>_<midlevel>_<data>.jsonl
Rows: {id, question, answer}. Sampling as the seed: temperature 0.6, top_p 0.95.
Every flag parses into ``alice.stages.label.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.label import (  # noqa: F401  (the stage: alice/stages/label.py)
    SUBSETS,
    TYPES,
    Config,
    build_parser,
    main,
    parse,
    plan,
    run,
)

if __name__ == "__main__":
    main()
