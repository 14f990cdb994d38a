"""training/SFT.py and alice/sft.py on the tiny fixture models: every method trains a few steps, labels cover the
response only, batch settings come from the YAML, LoRA saves merged weights, reruns skip or resume."""

import json
from pathlib import Path

import pytest

from alice import data, sft
from alice.jsonl import MissingInputError, write_jsonl
from alice.paths import Layout
from alice.testing import load_script

REPO = Path(__file__).resolve().parent.parent


SCRIPT = load_script("training/SFT.py")
GSM8K_ROWS = 40  # W2S part: rows 20..39; cascade first half: 20..29


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small local data folder in the layout of shared/offline/data (gsm8k and hotpotqa)."""
    d = tmp_path_factory.mktemp("data")
    write_jsonl(d / "gsm8k" / "train.jsonl", [
        {"question": f"Tom has {i} apples and buys {i + 1} more. How many apples?",
         "answer": f"He has {i}+{i + 1} = {2 * i + 1} apples.\n#### {2 * i + 1}"} for i in range(GSM8K_ROWS)
    ])
    write_jsonl(d / "hotpotqa" / "train.jsonl", [
        {"id": f"hp{i}", "question": f"Which city is number {i}?", "answer": f"City {i}", "type": "bridge"} for i in range(50)
    ])
    return str(d)


@pytest.fixture
def cfg(tmp_path):
    """An accelerate config (one process) with the project's batch lines: 2 per device x 2 accumulation."""
    p = tmp_path / "acc.yaml"
    text = (REPO / "accelerate_config.yaml").read_text()
    text = text.replace("# sft.per_device_train_batch_size: auto", "# sft.per_device_train_batch_size: 2")
    text = text.replace("# sft.gradient_accumulation_steps: auto", "# sft.gradient_accumulation_steps: 2")
    assert "# sft.per_device_train_batch_size: 2" in text and "# sft.gradient_accumulation_steps: 2" in text
    p.write_text(text)
    return str(p)


def train(root, data_dir, cfg, *flags):
    argv = ["--model", "custom", "--data", "gsm8k", "--root", str(root), "--data-dir", data_dir, "--config-file", cfg,
            "--max-steps", "2", "--save-steps", "1000", *map(str, flags)]
    return SCRIPT.main(argv)


def _generate(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    return model


# ---------------------------------------------------------------------------------------------------- batch settings
def test_batch_settings_come_from_the_yaml_and_flags_override(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    b = sft.batch_settings(cfg)
    assert (b.per_device, b.grad_accum, b.world_size, b.effective) == (2, 2, 1, 4)
    assert "acc.yaml" in b.sources["per_device"] and "acc.yaml" in b.sources["grad_accum"]
    b = sft.batch_settings(cfg, per_device=3, grad_accum=5, world=2)
    assert (b.per_device, b.grad_accum, b.effective) == (3, 5, 30)
    # the shipped default: auto (the memory plan picks the micro-batch), the paper's effective 16
    b = sft.batch_settings(str(REPO / "accelerate_config.yaml"))
    assert b.effective == sft.PAPER.effective_batch == 16 and b.auto_per_device and b.auto_grad_accum
    # no file at all: accumulation keeps the paper's effective batch
    monkeypatch.chdir(tmp_path)
    b = sft.batch_settings(None, per_device=2, world=2)
    assert (b.grad_accum, b.effective, b.config_file) == (4, 16, None)


def test_deepspeed_accumulation_is_deepspeeds_own_key(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    ds = str(REPO / "accelerate_configs" / "deepspeed_zero2.yaml")
    b = sft.batch_settings(ds, world=4)
    assert (b.per_device, b.grad_accum, b.effective) == (4, 1, 16)
    assert b.sources["grad_accum"] == "deepspeed_config.gradient_accumulation_steps"
    with pytest.raises(sft.SFTError, match="disagrees with DeepSpeed"):
        sft.batch_settings(ds, grad_accum=8, world=4)
    assert sft.batch_settings(str(REPO / "accelerate_configs" / "fsdp.yaml"), world=4).effective == 16


def test_deepspeed_micro_batch_and_json_file_are_honoured(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    base = (REPO / "accelerate_configs" / "deepspeed_zero2.yaml").read_text().replace("# sft.per_device_train_batch_size: 4\n", "")
    inline = tmp_path / "inline.yaml"
    inline.write_text(base.replace("  gradient_accumulation_steps: 1\n",
                                   "  gradient_accumulation_steps: 2\n  train_micro_batch_size_per_gpu: 2\n"))
    b = sft.batch_settings(str(inline), world=4)
    assert (b.per_device, b.grad_accum, b.effective) == (2, 2, 16)
    assert b.sources["per_device"] == "deepspeed_config.train_micro_batch_size_per_gpu"
    with pytest.raises(sft.SFTError, match="disagrees with DeepSpeed's train_micro_batch_size_per_gpu"):
        sft.batch_settings(str(inline), per_device=8, world=4)
    (tmp_path / "ds.json").write_text('{"gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": 1}')
    viajson = tmp_path / "json.yaml"
    viajson.write_text(base.replace("  gradient_accumulation_steps: 1\n", "  deepspeed_config_file: ds.json\n"))
    b = sft.batch_settings(str(viajson), world=4)
    assert (b.per_device, b.grad_accum, b.effective) == (1, 4, 16)
    (tmp_path / "ds.json").write_text('{"gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto"}')
    b = sft.batch_settings(str(viajson), world=4)
    assert (b.per_device, b.grad_accum, b.sources["per_device"]) == (1, 4, "auto")


def test_sft_lines_are_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("distributed_type: 'NO'\n# sft.per_device_batch_size: 2\n")
    with pytest.raises(sft.SFTError, match="unknown key sft.per_device_batch_size"):
        sft.read_sft_keys(p)
    p.write_text("distributed_type: 'NO'\nsft.per_device_train_batch_size: 2\n")
    with pytest.raises(sft.SFTError, match="keep .* a comment"):
        sft.read_sft_keys(p)
    p.write_text("# sft.gradient_accumulation_steps: two\n")
    with pytest.raises(sft.SFTError, match="whole number"):
        sft.read_sft_keys(p)


def test_warmup_is_the_papers_100_clamped_to_a_tenth():
    assert sft.warmup_steps(5000) == 100
    assert sft.warmup_steps(300) == 30
    assert sft.warmup_steps(4) == 0


# ---------------------------------------------------------------------------------------------------- labels
def test_collated_batch_labels_only_the_response(tiny_models, tmp_path):
    import torch
    from transformers import AutoTokenizer

    rows = [
        {"id": "a", "question": "What is 2+2?", "answer": "2+2 = 4.\n#### 4"},
        {"id": "b", "question": "A much longer question about the cost of a pen and a pencil?", "answer": "#### 3"},
        {"id": "c", "question": "Hi?", "answer": "Mercury is the closest planet to the sun, so the answer is Mercury."},
    ]
    b = sft.BatchSettings(3, 1, 1, None, "test", {"per_device": "test", "grad_accum": "test"})
    torch.backends.cuda.enable_cudnn_sdp(True)
    trainer = sft.build_trainer(str(tiny_models["qwen_small"]), rows, tmp_path, b, sft.TrainOptions(max_steps=1))
    assert not torch.backends.cuda.cudnn_sdp_enabled()  # cuDNN attention's NaN backward (results/nan_kernels_gpu.json)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen_small"])
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    expected = []
    for ex in sft.to_examples(rows):
        prompt = tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=True)["input_ids"]
        expected.append((len(prompt), full))
    assert batch["input_ids"].shape[0] == 3
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        assert torch.all(mask[:n] == 1) and torch.all(mask[n:] == 0)  # right padding, never attended
        matches = [(n_prompt, full) for n_prompt, full in expected if full == ids[:n].tolist()]
        assert len(matches) == 1  # exactly the model's own chat template of one row
        n_prompt, full = matches[0]
        assert torch.all(labels[:n_prompt] == -100)  # prompt: no loss
        assert torch.all(labels[n:] == -100)  # padding: no loss
        assert labels[n_prompt:n].tolist() == ids[n_prompt:n].tolist()  # the whole completion carries labels
        assert end_of_turn in labels[n_prompt:n].tolist()  # ... the end-of-turn token included
    assert int((batch["attention_mask"] == 0).sum()) > 0  # the batch did pad


# ---------------------------------------------------------------------------------------------------- methods
def test_base_trains_with_the_yaml_batch_saves_loads_and_rerun_skips(tiny_models, data_dir, cfg, tmp_path, capsys):
    rec = train(tmp_path, data_dir, cfg, "--method", "base", "--student", tiny_models["qwen_small"], "--limit", 8)
    out = Layout(tmp_path).base_model("custom", str(tiny_models["qwen_small"]), "gsm8k")
    assert Path(rec["output_dir"]) == out and sft.is_finished(out)
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["per_device_train_batch_size"], saved["gradient_accumulation_steps"], saved["effective_batch"]) == (2, 2, 4)
    assert saved["accelerate_config_file"] == cfg and saved["rows"] == 8 and saved["rows_available"] == 20
    assert saved["learning_rate"] == sft.PAPER.lr and saved["weight_decay"] == sft.PAPER.weight_decay
    assert [h["loss"] for h in json.loads((out / "loss_log.json").read_text()) if "loss" in h]
    assert "effective batch 4 = 2 per device" in capsys.readouterr().out
    assert not (out / sft.CHECKPOINTS).exists()
    _generate(out)
    assert train(tmp_path, data_dir, cfg, "--method", "base", "--student", tiny_models["qwen_small"], "--limit", 8) is None
    assert "up to date" in capsys.readouterr().out


def test_loss_decreases_on_a_repeated_batch(tiny_models, data_dir, cfg, tmp_path):
    rec = train(tmp_path, data_dir, cfg, "--method", "base", "--student", tiny_models["qwen_small"], "--limit", 4,
                "--per-device-batch-size", 4, "--gradient-accumulation-steps", 1, "--max-steps", 8, "--lr", "3e-3")
    assert rec["batch_sources"] == {"per_device": "--per-device-batch-size", "grad_accum": "--gradient-accumulation-steps"}
    losses = [h["loss"] for h in json.loads((Path(rec["output_dir"]) / "loss_log.json").read_text()) if "loss" in h]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5


def test_stage1_methods(tiny_models, data_dir, cfg, tmp_path, capsys):
    T = str(tiny_models["qwen_small"])
    L = Layout(tmp_path)
    # original-wts-stage1 qa: short answers of the teacher half
    job = sft.resolve_job(model="custom", data="gsm8k", method="original-wts-stage1", teacher=T, student=None,
                          layout=L, data_dir=data_dir)
    assert len(job.rows) == 20 and job.rows[3]["answer"] == "#### 7" and job.out_dir == L.teacher_qa_model("custom", T, "gsm8k")
    # ours-wts-stage1 on gsm8k: the teacher half's worked solutions, no CoT file needed
    job = sft.resolve_job(model="custom", data="gsm8k", method="ours-wts-stage1", teacher=T, student=None,
                          layout=L, data_dir=data_dir)
    assert job.rows[3]["answer"].endswith("#### 7") and job.out_dir == L.teacher_cot_model("custom", T, "gsm8k")
    # ours-wts-stage1 elsewhere needs the CoT file: the error names the command
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, "--data", "hotpotqa", "--method", "ours-wts-stage1", "--teacher", T)
    assert e.value.code == 2
    assert "python cot/cot_generate_filter.py --model custom --data hotpotqa --teacher" in capsys.readouterr().err
    write_jsonl(L.cot_correct("custom", T, "hotpotqa"), [
        {"id": f"hp{i}", "question": f"Which city is number {i}?", "answer": f"Step by step: it is City {i}."} for i in range(6)
    ])
    rec = train(tmp_path, data_dir, cfg, "--data", "hotpotqa", "--method", "ours-wts-stage1", "--teacher", T,
                "--ours-wts-type", "singleturn")
    assert rec["rows"] == 6 and rec["trained_role"] == "teacher"
    rec = train(tmp_path, data_dir, cfg, "--data", "gsm8k", "--method", "original-wts-stage1", "--teacher", T,
                "--original-wts-type", "qa", "--limit", 6)
    assert sft.is_finished(rec["output_dir"])


def test_qa_teacher_trains_on_the_questions_with_a_correct_cot(tiny_models, data_dir, tmp_path, capsys):
    """As the seed's SFT.py: outside gsm8k the qa teacher reads *_cot_correct.jsonl and learns the ground-truth short
    answer of those questions only, not the whole teacher half."""
    T = str(tiny_models["qwen_small"])
    L = Layout(tmp_path)
    kw = dict(model="custom", data="hotpotqa", method="original-wts-stage1", teacher=T, student=None, layout=L,
              data_dir=data_dir)
    with pytest.raises(MissingInputError) as e:
        sft.resolve_job(**kw)
    assert "python cot/cot_generate_filter.py --model custom --data hotpotqa --teacher" in str(e.value)
    correct = [3, 7, 11]  # of the 25 teacher-half questions, the teacher's CoT was right on these
    write_jsonl(L.cot_correct("custom", T, "hotpotqa"), [
        {"id": f"hp{i}", "question": f"Which city is number {i}?", "answer": f"Step by step: it is City {i}.",
         "ground_truth_response": f"City {i}", "correct": True} for i in correct])
    job = sft.resolve_job(**kw)
    assert [(r["id"], r["answer"]) for r in job.rows] == [(f"hp{i}", f"City {i}") for i in correct]
    assert str(L.cot_correct("custom", T, "hotpotqa")) in job.source
    # gsm8k keeps the whole teacher half, '#### N' as the solution writes it
    job = sft.resolve_job(**dict(kw, data="gsm8k"))
    assert len(job.rows) == len(data.teacher_half(data.load_train("gsm8k", data_dir))) and job.rows[0]["answer"] == "#### 1"


def test_stage2_methods(tiny_models, data_dir, cfg, tmp_path, capsys):
    T, S = str(tiny_models["qwen_small"]), str(tiny_models["qwen_large"])
    L = Layout(tmp_path)
    labels = [{"id": f"gsm8k-train-{i:05d}", "question": f"q{i}?", "answer": f"weak answer {i}\n#### {i}"} for i in range(20, 40)]
    # original-wts-stage2 qa: the missing file names its command, then trains
    with pytest.raises(SystemExit):
        train(tmp_path, data_dir, cfg, "--method", "original-wts-stage2", "--original-wts-type", "qa", "--teacher", T, "--student", S)
    assert "W2SG_pipeline/original/original_weak_to_strong.py" in capsys.readouterr().err
    write_jsonl(L.original_labels("custom", T, "gsm8k", "qa"), labels)
    rec = train(tmp_path, data_dir, cfg, "--method", "original-wts-stage2", "--original-wts-type", "qa", "--teacher", T, "--student", S)
    assert Path(rec["output_dir"]) == L.original_student_model("custom", T, S, "gsm8k", "qa") and rec["model_id"] == S
    # cascade baseline: the labeler's file (resolved only: the same training path as above)
    write_jsonl(L.original_cascade_labels("custom", T, "gsm8k"), labels[:10])
    job = sft.resolve_job(model="custom", data="gsm8k", method="original-wts-stage2", original_type="cascade", teacher=T,
                          student=S, layout=L, data_dir=data_dir)
    assert len(job.rows) == 10 and job.out_dir == L.original_student_model("custom", T, S, "gsm8k", "cascade")
    # ours-wts-stage2 singleturn
    with pytest.raises(SystemExit):
        train(tmp_path, data_dir, cfg, "--method", "ours-wts-stage2", "--ours-wts-type", "singleturn", "--teacher", T, "--student", S)
    err = capsys.readouterr().err
    assert f"python W2SG_pipeline/ours/new_weak_to_strong_final.py --model custom --data gsm8k --teacher {T} --student {S} " \
           f"--method singleturn --data-dir {data_dir} --root {tmp_path}`" in err
    write_jsonl(L.alice_train("custom", T, S, "gsm8k"), labels)
    rec = train(tmp_path, data_dir, cfg, "--method", "ours-wts-stage2", "--ours-wts-type", "singleturn", "--teacher", T, "--student", S)
    assert rec["rows"] == 20 and Path(rec["output_dir"]) == L.ours_student_model("custom", T, S, "gsm8k")
    # cascade2 (mid -> student): the cascade Alice file
    write_jsonl(L.alice_train("custom", T, S, "gsm8k", cascade=True), labels[10:])
    job = sft.resolve_job(model="custom", data="gsm8k", method="ours-wts-stage2", ours_type="cascade2", teacher=T,
                          student=S, layout=L, data_dir=data_dir)
    assert len(job.rows) == 10 and job.out_dir == L.ours_student_model("custom", T, S, "gsm8k", "cascade2")
    assert job.source == str(L.alice_train("custom", T, S, "gsm8k", cascade=True))


def test_cascade1_joins_by_id(tiny_models, data_dir, cfg, tmp_path):
    T, MID = str(tiny_models["qwen_small"]), str(tiny_models["llama"])
    L = Layout(tmp_path)
    # 'original' rows first, then 'new' rows, each kind from both halves of the W2S part (ids 20..29 | 30..39)
    ids = [22, 35, 27, 31, 20, 38, 29, 33, 25, 21]
    rows = [{"id": f"gsm8k-train-{i:05d}", "question": f"q{i}", "answer": f"a{i}", "type": "original" if k < 5 else "new"}
            for k, i in enumerate(ids)]
    write_jsonl(L.alice_train("custom", T, MID, "gsm8k"), rows)
    job = sft.resolve_job(model="custom", data="gsm8k", method="ours-wts-stage2", ours_type="cascade1", teacher=T,
                          student=MID, layout=L, data_dir=data_dir)
    assert [r["id"] for r in job.rows] == [f"gsm8k-train-{i:05d}" for i in ids if i < 30]
    assert job.out_dir == L.ours_student_model("custom", T, MID, "gsm8k", "cascade1") and job.model_id == MID
    rec = train(tmp_path, data_dir, cfg, "--method", "ours-wts-stage2", "--ours-wts-type", "cascade1", "--teacher", T, "--student", MID)
    assert rec["rows"] == 6


def test_lora_saves_merged_weights(tiny_models, data_dir, cfg, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    S = str(tiny_models["llama"])
    rec = train(tmp_path, data_dir, cfg, "--method", "base", "--student", S, "--limit", 8, "--lora", "--lora-r", 4,
                "--lora-alpha", 8, "--lr", "1e-2")
    out = Path(rec["output_dir"])
    assert rec["lora"]["r"] == 4 and not (out / "adapter_config.json").exists()
    keys = load_file(out / "model.safetensors").keys()
    assert not any("lora" in k for k in keys)
    trained = _generate(out)
    base = AutoModelForCausalLM.from_pretrained(S)
    w0, w1 = base.model.layers[0].self_attn.q_proj.weight, trained.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w0, w1)  # the adapters were merged into the weights


def test_lora_of_a_bf16_model_writes_its_merged_weights_once_in_bf16(tiny_models, data_dir, cfg, tmp_path, monkeypatch):
    """A bf16 source (as the published models are): the merged weights are written in bf16 by the save itself, and
    finish_saved_folder has nothing left to rewrite (the demo's CPU runs saved 1.5B in fp32, then rewrote it)."""
    import safetensors.torch as st
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "bf16_src"
    AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).to(torch.bfloat16).save_pretrained(src)
    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(src)
    rewrites = []
    real = st.save_file
    monkeypatch.setattr(st, "save_file", lambda *a, **k: (rewrites.append(a[1]), real(*a, **k))[1])
    rec = train(tmp_path, data_dir, cfg, "--method", "base", "--student", str(src), "--limit", 8, "--lora",
                "--lora-r", 4, "--lora-alpha", 8, "--lr", "1e-2")
    out = Path(rec["output_dir"])
    assert rec["trained_weights_dtype"] == ["float32"]  # the adapters, trained in fp32 on a CPU (recorded before the merge)
    assert rewrites == []  # finish_saved_folder found every weight in bf16 already
    tensors = st.load_file(out / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.bfloat16}
    assert not any("lora" in k for k in tensors)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    base = st.load_file(src / "model.safetensors")
    key = next(k for k in tensors if "q_proj" in k)
    assert not torch.equal(base[key], tensors[key])  # the adapters were merged into the weights
    _generate(out)


def test_rerun_resumes_from_the_last_checkpoint(tiny_models, data_dir, cfg, tmp_path, capsys):
    from alice.fresh import meta_path

    S = str(tiny_models["qwen_small"])
    flags = ["--method", "base", "--student", S, "--limit", 8, "--per-device-batch-size", 4, "--gradient-accumulation-steps", 1,
             "--max-steps", 3]
    rec = train(tmp_path, data_dir, cfg, *flags, "--save-steps", 1, "--keep-checkpoints")
    out = Path(rec["output_dir"])
    ckpt = out / sft.CHECKPOINTS
    (ckpt / "checkpoint-3").rename(ckpt / "checkpoint-2")  # as if killed after step 2, before the final save
    state = json.loads((ckpt / "checkpoint-2" / "trainer_state.json").read_text())
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(dict(state, global_step=2)))
    for p in [out / "config.json", *out.glob("*.safetensors"), meta_path(out)]:
        p.unlink()
    # checkpoints made with other settings are not resumed: one line naming --overwrite
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, *flags, "--lr", "1e-4")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "checkpoints was made otherwise (lr 1e-05 -> 0.0001)" in err and "--overwrite" in err
    # the same settings resume (logging/checkpoint flags are not settings)
    rec = train(tmp_path, data_dir, cfg, *flags)
    assert rec["resumed_from"].endswith("checkpoint-2") and rec["optimizer_steps"] == 3
    assert not ckpt.exists() and json.loads((out / "train_config.json").read_text())["settings"]["lr"] == sft.PAPER.lr


def test_rerun_with_other_settings_stops_or_retrains(tiny_models, data_dir, cfg, tmp_path, capsys):
    S = str(tiny_models["qwen_small"])
    flags = ["--method", "base", "--student", S, "--limit", 4, "--max-steps", 1]
    out = Path(train(tmp_path, data_dir, cfg, *flags)["output_dir"])
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, *flags[:-1], 2)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "max_steps 1 -> 2" in err and "--overwrite" in err
    assert [ln for ln in err.splitlines() if "error" in ln or "Traceback" in ln] == [err.splitlines()[-1]]
    assert (out / "model.safetensors").read_bytes() == weights  # kept
    rec = train(tmp_path, data_dir, cfg, *flags[:-1], 2, "--overwrite")
    assert rec["optimizer_steps"] == 2 and rec["resumed_from"] is None
    # the same settings again: kept, even with --overwrite
    assert train(tmp_path, data_dir, cfg, *flags[:-1], 2, "--overwrite") is None
    # a newer input makes the folder stale: a changed training file
    T = S
    L = Layout(tmp_path)
    labels = [{"id": f"gsm8k-train-{i:05d}", "question": f"q{i}?", "answer": f"a {i}"} for i in range(20, 26)]
    write_jsonl(L.original_labels("custom", T, "gsm8k", "qa"), labels)
    f2 = ["--method", "original-wts-stage2", "--original-wts-type", "qa", "--teacher", T, "--student", S, "--max-steps", 1]
    train(tmp_path, data_dir, cfg, *f2)
    write_jsonl(L.original_labels("custom", T, "gsm8k", "qa"), labels[:3])
    with pytest.raises(SystemExit):
        train(tmp_path, data_dir, cfg, *f2)
    assert "qateacher.jsonl changed since" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--epochs", "-1"), ("--epochs", "0"), ("--limit", "0"), ("--limit", "-3"),
                                        ("--max-steps", "0"), ("--lr", "0")])
def test_bad_numbers_are_usage_errors(flag, value, tiny_models, data_dir, cfg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, "--method", "base", "--student", tiny_models["qwen_small"], flag, value)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}" in err and ("at least 1" in err or "above 0" in err)
    assert not (tmp_path / "model_outputs").exists()


def test_user_errors_are_one_line(tiny_models, data_dir, cfg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, "--method", "ours-wts-stage2", "--teacher", "x/y", "--student", "x/z")
    assert e.value.code == 2 and "needs --ours-wts-type" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data_dir, cfg, "--method", "base", "--teacher", "x/y")
    assert e.value.code == 2 and "needs --student" in capsys.readouterr().err


def test_full_determinism_trains_the_same_weights_and_is_recorded(tiny_models, data_dir, cfg, tmp_path, capsys,
                                                                   monkeypatch):
    """--full-determinism: transformers' deterministic mode during training (and the process's mode back after it);
    two runs write the same weights; the record says so, and a rerun without it is a run made otherwise."""
    import torch

    for var in ("CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG", "FLASH_ATTENTION_DETERMINISTIC",
                "ASCEND_LAUNCH_BLOCKING", "HCCL_DETERMINISTIC"):
        monkeypatch.delenv(var, raising=False)  # enable_full_determinism sets them: restored after the test
    seen = []
    real = sft.build_trainer

    def watching(*a, **kw):
        trainer = real(*a, **kw)

        from transformers import TrainerCallback

        class Watch(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                seen.append(torch.are_deterministic_algorithms_enabled())
        trainer.add_callback(Watch())
        return trainer

    monkeypatch.setattr(sft, "build_trainer", watching)
    flags = ["--method", "base", "--student", tiny_models["qwen_small"], "--limit", 4, "--max-steps", 2, "--full-determinism"]
    weights = []
    for root in (tmp_path / "a", tmp_path / "b"):
        rec = train(root, data_dir, cfg, *flags)
        assert rec["full_determinism"] is True
        weights.append((Path(rec["output_dir"]) / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    assert seen == [True] * 4 and not torch.are_deterministic_algorithms_enabled()  # on while training, off after
    with pytest.raises(SystemExit):
        train(tmp_path / "a", data_dir, cfg, *flags[:-1])
    assert "full_determinism" in capsys.readouterr().err


def test_packing_runs(tiny_models, data_dir, cfg, tmp_path):
    rec = train(tmp_path, data_dir, cfg, "--method", "base", "--student", tiny_models["qwen_small"], "--limit", 8, "--packing")
    assert rec["packing"] and rec["rows_after_preparation"] < 8  # whole examples packed into fewer sequences
