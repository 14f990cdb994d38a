"""Alice step 4a: the trained teacher (cascade: the trained mid-level model) samples N answers per question of
its W2S part and they are clustered -> data/ours[_cascade_halfhalf]/<data>/*_sampled_clustered.jsonl

    python W2SG_pipeline/ours/new_weak_to_strong_cluster.py --data hotpotqa --model qwen2.5 --teacher 3B --student 7B --method singleturn

Every flag parses into ``alice.stages.cluster.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.cluster import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/cluster.py)

if __name__ == "__main__":
    main()
