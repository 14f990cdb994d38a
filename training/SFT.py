"""Fine-tune one model for one stage of the paper (TRL SFTTrainer; runs plainly or under ``accelerate launch``).

    python training/SFT.py --model qwen2.5 --data gsm8k --student 7B --method base
    accelerate launch --config_file accelerate_config.yaml training/SFT.py --model qwen2.5 --data gsm8k \\
        --teacher 1.5B --student 7B --method ours-wts-stage2 --ours-wts-type singleturn

Methods (which model, which rows, which folder): see ``alice/sft_data.py`` and README.md ("Training"). Per-device batch size
and gradient accumulation come from the accelerate config file (``# sft.<key>: <value>`` lines), overridable by flags.
Every flag parses into ``alice.stages.train.Config`` (``--config FILE`` sets them from a file); ``run`` does the work.
"""

from alice.stages.train import Config, build_parser, main, parse, run  # noqa: F401  (the stage: alice/stages/train.py)

if __name__ == "__main__":
    main()
