from pathlib import Path

from alice.paths import Layout, eval_run_name

L = Layout(Path("R"))


def test_paper_file_names():
    assert L.cot("llama3", "1B", "triviaqa") == Path("R/data/CoT/llama3_1B_triviaqa_cot.jsonl")
    assert L.cot_correct("qwen2.5", "1.5B", "arc_challenge") == Path("R/data/CoT/qwen2.5_1.5B_arc_challenge_cot_correct.jsonl")
    assert L.original_labels("llama3", "1B", "arc_challenge", "cot") == Path("R/data/original/llama3_1B_arc_challenge_cotteacher.jsonl")
    assert L.original_cascade_labels("qwen2.5", "3B", "gsm8k") == Path("R/data/original_cascade/gsm8k/qwen2.5_3B_gsm8k.jsonl")
    assert L.sampled_clustered("qwen2.5", "3B", "hotpotqa") == Path("R/data/ours/hotpotqa/qwen2.5_3B_hotpotqa_sampled_clustered.jsonl")
    assert L.uncertainty("qwen2.5", "3B", "hotpotqa", cascade=True) == Path(
        "R/data/ours_cascade_halfhalf/hotpotqa/qwen2.5_3B_hotpotqa_uncertainty.jsonl"
    )
    assert L.alice_train("qwen2.5", "3B", "7B", "hotpotqa") == Path("R/data/ours/hotpotqa/qwen2.5_3B_to_7B_hotpotqa.jsonl")
    assert L.zeroshot("qwen2.5", "1.5B", "7B", "gsm8k").name == "qwen2.5_1.5B_to_7B_gsm8k_zeroshot.jsonl"


def test_model_dirs():
    assert L.base_model("qwen2.5", "1.5B", "gsm8k") == Path("R/model_outputs/base/qwen2.5_1.5B_gsm8k")
    assert L.teacher_model("llama3", "1B", "gsm8k", "qa") == Path("R/model_outputs/original/llama3_1B_gsm8k")
    assert L.teacher_model("llama3", "1B", "gsm8k", "cot") == Path("R/model_outputs/ours/llama3_1B_gsm8k")
    assert L.original_student_model("llama3", "1B", "3B", "gsm8k", "qa") == Path(
        "R/model_outputs/original/llama3_1B_to_3B_gsm8k_qateacher"
    )
    assert L.original_student_model("llama3", "1B", "3B", "gsm8k", "cascade") == Path(
        "R/model_outputs/original_cascade/llama3_1B_to_3B_gsm8k"
    )
    assert L.ours_student_model("qwen2.5", "3B", "7B", "hotpotqa") == Path("R/model_outputs/ours/qwen2.5_3B_to_7B_hotpotqa")
    assert L.ours_student_model("qwen2.5", "1.5B", "3B", "hotpotqa", "cascade1") == Path(
        "R/model_outputs/ours_cascade_halfhalf/qwen2.5_1.5B_to_3B_hotpotqa"
    )


def test_custom_ids_get_safe_names_and_runs_are_distinct():
    assert L.base_model("custom", "Org/Tiny-Model", "gsm8k").name == "custom_Org--Tiny-Model_gsm8k"
    names = {
        eval_run_name("qwen2.5", "7B", "naive"),
        eval_run_name("qwen2.5", "7B", "base"),
        eval_run_name("qwen2.5", "7B", "original-wts", "3B", original_wts_type="qa"),
        eval_run_name("qwen2.5", "7B", "original-wts", "3B", original_wts_type="cot"),
        eval_run_name("qwen2.5", "7B", "ours-wts", "3B", ours_wts_type="singleturn"),
        eval_run_name("qwen2.5", "7B", "ours-wts", "3B", ours_wts_type="cascade"),
    }
    assert len(names) == 6
