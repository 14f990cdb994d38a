"""Training you can trust (issue 11): fp32 master weights under bf16 autocast, a divergence guard that stops at the
first non-finite loss or gradient norm and saves nothing as finished, a refused NaN model at generation time, and a
saved folder whose config ends a turn where the chat template does."""

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from alice import sft
from alice.generation import GenerationError, Generator, Sampling, end_of_turn_token
from alice.jsonl import write_jsonl
from alice.testing import load_script

REPO = Path(__file__).resolve().parent.parent
SCRIPT = load_script("training/SFT.py")
ROWS = [{"id": str(i), "question": f"Tom has {i} apples and buys {i + 1} more. How many?",
         "answer": f"{i}+{i + 1} = {2 * i + 1}. #### {2 * i + 1}"} for i in range(8)]


def _batch():
    return sft.BatchSettings(2, 1, 1, None, "test", {"per_device": "test", "grad_accum": "test"})


def _trainer(model, out, **opts):
    return sft.build_trainer(str(model), ROWS, Path(out), _batch(), sft.TrainOptions(max_steps=3, save_steps=1000, **opts))


def test_bf16_mixed_keeps_fp32_master_weights_and_optimizer_state_and_computes_in_bf16(tiny_models, tmp_path):
    trainer = _trainer(tiny_models["qwen_small"], tmp_path / "out", bf16=True)
    assert trainer.precision == "bf16-mixed" and trainer.args.bf16
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    seen = []
    lin = trainer.model.model.layers[0].mlp.down_proj
    hook = lin.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train()
    hook.remove()
    assert torch.bfloat16 in seen  # the matrix work ran under bf16 autocast
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    states = [v for st in trainer.optimizer.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0]
    assert states and {v.dtype for v in states} == {torch.float32}


def test_bf16_follows_the_hardware_fp32_on_request_and_pure_bf16_is_the_old_path(tiny_models, tmp_path, monkeypatch):
    t = _trainer(tiny_models["qwen_small"], tmp_path / "a")  # the default: bf16 where this machine computes it
    assert t.precision == ("bf16-mixed" if sft.bf16_supported() else "fp32") and t.args.bf16 == sft.bf16_supported()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # a CPU without native bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    if not torch.cuda.is_available():
        t = _trainer(tiny_models["qwen_small"], tmp_path / "c")
        assert t.precision == "fp32" and not t.args.bf16
    t = _trainer(tiny_models["qwen_small"], tmp_path / "d", bf16=False)
    assert t.precision == "fp32" and not t.args.bf16
    t = _trainer(tiny_models["qwen_small"], tmp_path / "b", pure_bf16=True)
    assert t.precision == "bf16-pure" and {p.dtype for p in t.model.parameters()} == {torch.bfloat16}


def test_pure_bf16_rounds_small_updates_away_where_fp32_masters_keep_them(tiny_models, tmp_path):
    """The mechanism behind the lesson: at lr 1e-5 a bf16 weight moves far less than its fp32 master."""
    def moved(**opts):
        t = sft.build_trainer(str(tiny_models["qwen_small"]), ROWS, tmp_path / str(opts), _batch(),
                              sft.TrainOptions(max_steps=4, lr=1e-5, save_steps=1000, **opts))
        t.args.warmup_steps = 0
        before = {n: p.detach().float().clone() for n, p in t.model.named_parameters()}
        t.train()
        return sum(int((p.detach().float() != before[n]).sum()) for n, p in t.model.named_parameters()), \
            sum(p.numel() for p in t.model.parameters())
    changed_mixed, n = moved(bf16=True)
    changed_pure, _ = moved(pure_bf16=True)
    assert changed_mixed > 0.9 * n
    assert changed_pure < 0.5 * changed_mixed


def test_lora_keeps_a_bf16_base_and_fp32_adapters(tiny_models, tmp_path):
    t = _trainer(tiny_models["qwen_small"], tmp_path / "l", bf16=True, lora=True)
    trained = {p.dtype for p in t.model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in t.model.parameters() if not p.requires_grad}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_divergence_guard_stops_at_the_first_nonfinite_step_and_saves_nothing(tiny_models, tmp_path, where):
    out = tmp_path / "out"
    job = sft.Job("base", None, "student", "x", str(tiny_models["qwen_small"]), out, "test rows", list(ROWS))
    real_build = sft.build_trainer
    calls = {"n": 0}

    def poisoned(*a, **kw):
        trainer = real_build(*a, **kw)
        emb = trainer.model.get_input_embeddings().weight
        if where == "loss":  # from the 2nd micro-batch on, the forward pass returns inf
            def fwd_hook(mod, inp, output):
                calls["n"] += 1
                return output * float("inf") if calls["n"] >= 2 else output
            trainer.model.model.norm.register_forward_hook(fwd_hook)
        else:  # finite loss, but the 2nd backward gives an inf gradient
            def grad_hook(g):
                calls["n"] += 1
                return g * float("inf") if calls["n"] >= 2 else g
            emb.register_hook(grad_hook)
        return trainer

    sft.build_trainer = poisoned
    try:
        with pytest.raises(sft.TrainingDiverged) as e:
            sft.run(job, _batch(), sft.TrainOptions(max_steps=5, save_steps=1000))
    finally:
        sft.build_trainer = real_build
    # the loss: at once; an inf gradient norm with a finite loss: its step is skipped (1 of 5 steps allowed), the next
    # one stops the run
    step = 2 if where == "loss" else 3
    assert e.value.step == step
    msg = str(e.value)
    assert "\n" not in msg and f"step {step}/5" in msg and str(out) in msg and "--lr" in msg
    assert ("loss" in msg) if where == "loss" else ("gradient norm" in msg)
    assert not sft.is_finished(out) and not (out / "train_config.json").exists()


@pytest.mark.slow
def test_one_nonfinite_gradient_skips_its_step_and_training_finishes(tiny_models, tmp_path, capsys):
    """A single non-finite gradient norm (finite loss) skips that optimizer step, as mixed-precision training skips an
    overflowing step: no weight moves in it, training goes on, the saved model is finite and the record names the
    skipped step."""
    import torch

    out = tmp_path / "out"
    job = sft.Job("base", None, "student", "x", str(tiny_models["qwen_small"]), out, "test rows", list(ROWS))
    real_build = sft.build_trainer
    seen = {"n": 0, "before": None, "after": None}

    def poisoned(*a, **kw):
        trainer = real_build(*a, **kw)
        emb = trainer.model.get_input_embeddings().weight

        def grad_hook(g):
            seen["n"] += 1
            return g * float("nan") if seen["n"] == 2 else g  # the 2nd backward only
        emb.register_hook(grad_hook)

        class Watch(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == 1:
                    seen["before"] = emb.detach().clone()

            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 2:
                    seen["after"] = emb.detach().clone()
        trainer.add_callback(Watch())
        return trainer

    sft.build_trainer = poisoned
    try:
        record = sft.run(job, _batch(), sft.TrainOptions(max_steps=4, save_steps=1000, weight_decay=0.01))
    finally:
        sft.build_trainer = real_build
    assert torch.equal(seen["before"], seen["after"])  # the skipped step moved nothing (weight decay included)
    assert sft.is_finished(out) and record["optimizer_steps"] == 4
    assert [s["step"] for s in record["skipped_nonfinite_steps"]] == [2]
    err = capsys.readouterr().err
    assert "optimizer step 2/4 skipped" in err
    # the warning names the step's rows (batch 2 x 1): their completion tokens, to find the row behind it
    rows = [line for line in err.split("optimizer step 2/4 skipped", 1)[1].splitlines() if "completion/all tokens" in line]
    assert len(rows) == 2 and all("####" in line for line in rows), err[-1500:]


def test_divergence_is_one_line_from_the_script(tiny_models, tmp_path, capsys):
    """Through training/SFT.py: an absurd learning rate makes the loss blow up; exit 2 with one line."""
    data = tmp_path / "data"
    write_jsonl(data / "gsm8k" / "train.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in ROWS * 4])
    with pytest.raises(SystemExit) as e:
        SCRIPT.main(["--model", "custom", "--data", "gsm8k", "--student", str(tiny_models["qwen_small"]),
                     "--method", "base", "--root", str(tmp_path), "--data-dir", str(data), "--lr", "1e30",
                     "--max-steps", "6", "--per-device-batch-size", "2", "--gradient-accumulation-steps", "1",
                     "--weight-decay", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = ["error:" + line.split("error:", 1)[1] for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged at optimizer step"), err[-2000:]


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_nan_model_is_refused_by_the_generator_in_one_line(tiny_models, tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bad = tmp_path / "nan_model"
    m = AutoModelForCausalLM.from_pretrained(str(tiny_models["qwen_small"]))
    with torch.no_grad():
        m.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    m.save_pretrained(str(bad))
    AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"])).save_pretrained(str(bad))
    gen = Generator(str(bad), backend=backend)
    with pytest.raises(GenerationError) as e:
        gen.generate([[{"role": "user", "content": "hi"}]], Sampling(temperature=1.0, max_new_tokens=4))
    assert str(bad) in str(e.value) and "non-finite" in str(e.value) and "\n" not in str(e.value)
    assert not gen.loaded


def _qwen_like_eos(tiny_models, tmp_path):
    """The fixture with the tokenizer/config eos set to <|endoftext|> (as the provisioned Qwen2.5-Coder has), while
    the chat template ends a turn with <|im_end|>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src, dst = str(tiny_models["qwen_small"]), tmp_path / "qwen_like"
    tok = AutoTokenizer.from_pretrained(src)
    tok.eos_token = "<|endoftext|>"
    m = AutoModelForCausalLM.from_pretrained(src)
    m.config.eos_token_id = tok.eos_token_id
    m.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    m.save_pretrained(str(dst))
    tok.save_pretrained(str(dst))
    return dst, tok


def test_end_of_turn_is_read_off_the_chat_template(tiny_models, tmp_path):
    _, tok = _qwen_like_eos(tiny_models, tmp_path)
    assert tok.eos_token == "<|endoftext|>" and end_of_turn_token(tok) == "<|im_end|>"


def test_saved_folder_stops_plain_transformers_at_the_end_of_turn(tiny_models, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src, tok = _qwen_like_eos(tiny_models, tmp_path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    out = tmp_path / "trained"
    job = sft.Job("base", None, "student", "x", str(src), out, "test rows", list(ROWS))
    record = sft.run(job, _batch(), sft.TrainOptions(max_steps=2, save_steps=1000))
    assert record["precision"] == ("bf16-mixed" if sft.bf16_supported() else "fp32") and sft.is_finished(out)
    gen_cfg = GenerationConfig.from_pretrained(str(out))
    eos = gen_cfg.eos_token_id if isinstance(gen_cfg.eos_token_id, list) else [gen_cfg.eos_token_id]
    assert im_end in eos
    cfg = AutoConfig.from_pretrained(str(out))
    assert im_end in (cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id])
    # Plain generate (the folder's own generation_config) stops at <|im_end|>: force the model to emit it.
    model = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        model.lm_head.weight.zero_() if not model.config.tie_word_embeddings else None
        model.model.norm.weight.zero_()
        model.lm_head.bias = None
    ids = AutoTokenizer.from_pretrained(str(out)).apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)

    class ForceEot(torch.nn.Module):
        def forward(self, h):
            logits = torch.full(h.shape[:-1] + (model.config.vocab_size,), -1e4)
            logits[..., im_end] = 0.0
            return logits

    model.lm_head = ForceEot()
    gen = model.generate(**ids, max_new_tokens=20, do_sample=False)
    new = gen[0, ids["input_ids"].shape[1]:].tolist()
    assert new == [im_end]  # stopped right after the end of turn, not 20 tokens later


def test_saved_weights_keep_the_source_dtype(tiny_models, tmp_path):
    """Trained from fp32 masters, stored in the source checkpoint's dtype (bf16 for the published models)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "bf16_src"
    AutoModelForCausalLM.from_pretrained(str(tiny_models["qwen_small"]), dtype=torch.bfloat16).save_pretrained(str(src))
    AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"])).save_pretrained(str(src))
    out = tmp_path / "trained"
    job = sft.Job("base", None, "student", "x", str(src), out, "test rows", list(ROWS))
    rec = sft.run(job, _batch(), sft.TrainOptions(max_steps=2, save_steps=1000, bf16=True))
    assert rec["trained_weights_dtype"] == ["float32"]
    with safe_open(str(next(out.glob("*.safetensors"))), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    from alice import fresh

    assert fresh.checked_by_maker(out, "weights_finite")  # its record: the saved weights were checked


def test_the_generator_takes_the_trainings_weight_check_only_for_the_weights_it_checked(tiny_models, tmp_path):
    """A folder whose record says its maker checked the saved weights (training/SFT.py does) is not read again; a NaN
    planted afterwards changes the file, so the record no longer holds and the scan finds it. A LoRA save checks the
    adapters, then the merged weights it writes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alice import fresh
    from alice.generation.common import check_weights_finite

    folder = tmp_path / "checked"
    m = AutoModelForCausalLM.from_pretrained(str(tiny_models["qwen_small"]))
    m.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"])).save_pretrained(str(folder))
    fresh.record(folder, {"made": "here"}, checked={"weights_finite": True})
    assert fresh.checked_by_maker(folder, "weights_finite") and not fresh.checked_by_maker(folder, "other")
    import safetensors

    opened = []
    real_open = safetensors.safe_open
    safetensors.safe_open = lambda *a, **k: opened.append(a) or real_open(*a, **k)
    try:
        check_weights_finite(str(folder))
        assert opened == []  # taken from the record: nothing read
        with torch.no_grad():
            m.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
        m.save_pretrained(str(folder))  # the same size, other bytes: the record's check of the file fails
        assert not fresh.checked_by_maker(folder, "weights_finite")
        with pytest.raises(GenerationError, match="non-finite"):
            check_weights_finite(str(folder))
        assert opened  # read and scanned
    finally:
        safetensors.safe_open = real_open

    out = tmp_path / "lora_out"
    trainer = _trainer(tiny_models["qwen_small"], out, lora=True)
    trainer.train()
    from alice import sft_trainer

    sft_trainer._save_final(trainer, out, lora=True)  # the adapters, then the merged weights, checked
    assert (out / "config.json").is_file() and sft_trainer.nonfinite_weight(trainer.model, trainable_only=True) is None
    # a NaN in a frozen base weight passes the adapters' check and is caught in the merged weights: nothing saved
    trainer = _trainer(tiny_models["qwen_small"], tmp_path / "lora_bad", lora=True)
    with torch.no_grad():
        next(p for n, p in trainer.model.named_parameters() if "up_proj.base_layer" in n).view(-1)[0] = float("nan")
    assert sft_trainer.nonfinite_weight(trainer.model, trainable_only=True) is None
    with pytest.raises(sft_trainer.TrainingDiverged, match="merged weight"):
        sft_trainer._save_final(trainer, tmp_path / "lora_bad", lora=True)
    assert not (tmp_path / "lora_bad" / "config.json").exists()
