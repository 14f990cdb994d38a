"""An ablation of Alice's proactive step: its training file, made from single-turn Alice's stage files
-> data/ours/<data>/ablations/<model>_<teacher>_to_<student>_<data>_<ablation>.jsonl (docs/ablations.md)

    python W2SG_pipeline/ours/new_weak_to_strong_ablation.py --data gsm8k --model qwen2.5 --teacher 0.5B --student 1.5B --ablation majority_vote

Then train and evaluate it as a method variant: training/SFT.py --method ours-wts-stage2 --ours-wts-type <ablation>;
evaluation.py --method ours-wts --ours-wts-type <ablation>. ``python -m alice.pipeline --ablations all`` runs all.
Every flag parses into ``alice.stages.ablation.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.ablation import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/ablation.py)

if __name__ == "__main__":
    main()
