"""Tiny randomly initialised models for tests and demos: no download needed.

``build_tiny_models(folder)`` writes a byte-level BPE tokenizer with a ChatML chat template and three
causal LMs that share it (two Qwen2 sizes, one Llama), each saved with ``save_pretrained`` so that any
code taking a hub id accepts their folders. Heads are 32 wide (vLLM's CPU kernels need 32, 64, 80, ...).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. #### 72",
    "The answer is 42. My choice is A. My choice is B. My choice is C. My choice is D.",
    "Question: Which planet is closest to the sun? Answer: Mercury is the closest planet to the sun.",
    "Let x be the cost of the pencil. The total cost is $6. 2x = 6, so x = 3. #### 3",
    "I am uncertain about the correct answer. There is a probability that the answer is Paris.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ; : ! ? ( ) [ ] { } + - * / = < > $ % # @ & ' \"",
    "Here is the question: Here is your original answer: Here is another model's answer:",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(folder: str | Path):
    """A small byte-level BPE tokenizer (every string encodes) with a ChatML template; saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
    )
    fast.padding_side = "left"
    fast.save_pretrained(str(folder))
    return fast


def _save_model(config, tokenizer, folder: Path, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_tiny_models(folder: str | Path) -> dict[str, Path]:
    """Build (once) and return ``{'qwen_small', 'qwen_large', 'llama', 'tokenizer'}`` folders under ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, Qwen2Config

    root = Path(folder)
    out = {name: root / name for name in ("tokenizer", "qwen_small", "qwen_large", "llama")}
    marker = root / "fixtures.json"
    if marker.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out["tokenizer"])
    tok = AutoTokenizer.from_pretrained(str(out["tokenizer"]))
    common = dict(
        vocab_size=len(tok),
        max_position_embeddings=2048,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    qs = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, tie_word_embeddings=True, **common)
    ql = Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, tie_word_embeddings=True, **common)
    ll = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, tie_word_embeddings=False, **common)
    _save_model(qs, tok, out["qwen_small"], seed=1)
    _save_model(ql, tok, out["qwen_large"], seed=2)
    _save_model(ll, tok, out["llama"], seed=3)
    marker.write_text(json.dumps({k: str(v) for k, v in out.items()}))
    return out


def build_controlled_model(src, dst, words=(" Paris", " Mercury"), p_eos=0.5) -> Path:
    """The tiny llama fixture rewired so that every step samples one of ``words`` or end-of-turn with fixed
    probabilities, whatever the prompt: short answers that repeat, so some questions get one cluster and some
    several (a random tiny model's answers never repeat)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    m = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        m.model.embed_tokens.weight[:, 0] = 1000.0  # a constant direction dominates the residual stream
        m.model.norm.weight.zero_()
        m.model.norm.weight[0] = 1.0  # the final hidden state is ~(sqrt(hidden), 0, ..., 0) for every input
        m.lm_head.weight.zero_()
        scale, base = math.sqrt(m.config.hidden_size), 20.0
        for w in words:
            m.lm_head.weight[tok.convert_tokens_to_ids(tok.tokenize(w))[0], 0] = (base + math.log((1 - p_eos) / len(words))) / scale
        m.lm_head.weight[tok.convert_tokens_to_ids("<|im_end|>"), 0] = (base + math.log(p_eos)) / scale
    m.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def load_script(relpath: str):
    """Import one of the repository's stage scripts (e.g. ``"cot/cot_generate_filter.py"``) as a module."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / relpath
    spec = importlib.util.spec_from_file_location(relpath.replace("/", "_").removesuffix(".py"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_answer_model(src, dst, answers: dict[str, float], p_unreadable: float = 0.0) -> Path:
    """The tiny llama fixture rewired into a three-state machine that answers gsm8k-style, whatever the prompt:
    ``" #### <answer>"`` with the given probabilities (each answer one token of the fixture tokenizer, e.g.
    ``{" 72": 0.6, " 3": 0.3}``; the rest of the mass, and ``p_unreadable``, is an empty answer). Its samples
    cluster by final number like a real teacher's that agrees with itself only partly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    m = AutoModelForCausalLM.from_pretrained(src)

    def tid(t):
        ids = tok.convert_tokens_to_ids(tok.tokenize(t))
        if len(ids) != 1:
            raise ValueError(f"{t!r} is not one token of the fixture tokenizer")
        return ids[0]

    hashes, eos = tid(" ####"), tok.convert_tokens_to_ids("<|im_end|>")
    numbers = {tid(a): p for a, p in answers.items()}
    p_rest = 1.0 - sum(answers.values())
    with torch.no_grad():
        emb = m.model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1000.0  # state 0: any prompt token -> " ####" (or end: unreadable)
        emb[hashes, 0], emb[hashes, 1] = 0.0, 1000.0  # state 1: after " ####" -> a number
        for t in numbers:
            emb[t, 0], emb[t, 2] = 0.0, 1000.0  # state 2: after the number -> end of turn
        m.model.norm.weight.zero_()
        m.model.norm.weight[:3] = 1.0  # the final hidden state is ~sqrt(hidden) * one-hot(state)
        m.lm_head.weight.zero_()
        scale, base = math.sqrt(m.config.hidden_size), 30.0
        m.lm_head.weight[hashes, 0] = (base + math.log(1 - p_unreadable)) / scale
        if p_unreadable:
            m.lm_head.weight[eos, 0] = (base + math.log(p_unreadable)) / scale
        for t, p in numbers.items():
            m.lm_head.weight[t, 1] = (base + math.log(p)) / scale
        if p_rest > 1e-9:
            m.lm_head.weight[eos, 1] = (base + math.log(p_rest)) / scale
        m.lm_head.weight[eos, 2] = base / scale
    m.save_pretrained(dst)
    tok.save_pretrained(dst)
    return Path(dst)


def build_retrained_copy(src, dst, seed: int = 1) -> Path:
    """``src`` with other weights of the same shape (random, as the ``spiky`` fixture's), saved as a training run
    saves it (``alice.sft.finish_saved_folder``: config.json and generation_config.json end a turn at <|im_end|>):
    what a trained student looks like to the generation engines."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .sft import finish_saved_folder

    model = AutoModelForCausalLM.from_pretrained(str(src))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    finish_saved_folder(Path(dst), end_of_turn="<|im_end|>")
    return Path(dst)


def write_sum_data(folder: str | Path, n: int = 64) -> Path:
    """A gsm8k-shaped data folder of ``n`` addition questions (``folder/gsm8k/{train,test}.jsonl``, 4 test rows), for
    training tests that need rows, not a real dataset."""
    from .jsonl import write_jsonl

    d = Path(folder)
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i} = {2 * i}.\n#### {2 * i}"} for i in range(n)]
    write_jsonl(d / "gsm8k" / "train.jsonl", rows)
    write_jsonl(d / "gsm8k" / "test.jsonl", rows[:4])
    return d
