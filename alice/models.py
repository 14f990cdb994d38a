"""Model families, one spec each: sizes -> hub ids, the chat template's end-of-turn token, parameter counts and the
hints derived from them (tensor-parallel size for vLLM, sequences per hf ``generate`` call).

``alice.registry`` resolves ``--model <family> --teacher <size>`` from these specs; any role may instead name a hub id
or a local folder. A new family is one more ``ModelFamily`` in ``FAMILIES``.

The hints are starting points for a run's flags (``--tensor-parallel-size``, ``--batch-size``), not defaults that
change what a stage does: the stage flags' defaults stay in ``alice.options``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GPU_GIB = 80  # the cards the hints are sized for (H100 80 GB)
WEIGHTS_SHARE = 0.5  # at most this share of a card for bf16 weights; the rest holds the KV cache


@dataclass(frozen=True)
class ModelFamily:
    name: str
    hub_ids: dict[str, str]  # size -> hub id
    end_of_turn: str  # the token the chat template writes after an assistant turn (a stop token when generating)
    params_b: dict[str, float] = field(default_factory=dict)  # size -> parameters, billions (for the hints)

    def hub_id(self, size: str) -> str:
        return self.hub_ids[size]

    def tensor_parallel_hint(self, size: str) -> int:
        """The fewest GPUs (a power of two) whose ``WEIGHTS_SHARE`` holds the bf16 weights (1 for unknown sizes)."""
        gib = 2 * self.params_b.get(size, 0) * 1e9 / 2**30
        tp = 1
        while gib > tp * GPU_GIB * WEIGHTS_SHARE:
            tp *= 2
        return tp

    def hf_batch_hint(self, size: str) -> int:
        """Sequences per hf ``generate`` call on one GPU: 64 (``generation.DEFAULT_HF_BATCH``) up to 8B, fewer above."""
        p = self.params_b.get(size, 0)
        return 64 if p < 9 else 16 if p < 33 else 4


def _sizes(pattern: str, params: dict[str, float]) -> dict[str, str]:
    return {s: pattern.format(s) for s in params}


_QWEN = {"0.5B": 0.49, "1.5B": 1.54, "3B": 3.09, "7B": 7.62, "14B": 14.7, "32B": 32.8, "72B": 72.7}
_CODER = {s: _QWEN[s] for s in ("0.5B", "1.5B", "3B", "7B")}
_LLAMA = {"1B": 1.24, "3B": 3.21, "8B": 8.03, "70B": 70.6}
_SMOL = {"135M": 0.135, "360M": 0.36, "1.7B": 1.71}

# The paper's settings are qwen2.5 (1.5B/3B teach 3B/7B) and llama3 (1B/3B teach 3B/8B); the others are small
# families useful on modest hardware.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("qwen2.5", _sizes("Qwen/Qwen2.5-{}-Instruct", _QWEN), "<|im_end|>", _QWEN),
    ModelFamily("llama3", {
        "1B": "meta-llama/Llama-3.2-1B-Instruct",
        "3B": "meta-llama/Llama-3.2-3B-Instruct",
        "8B": "meta-llama/Llama-3.1-8B-Instruct",
        "70B": "meta-llama/Llama-3.1-70B-Instruct",
    }, "<|eot_id|>", _LLAMA),
    ModelFamily("qwen2.5-coder", _sizes("Qwen/Qwen2.5-Coder-{}-Instruct", _CODER), "<|im_end|>", _CODER),
    ModelFamily("smollm2", _sizes("HuggingFaceTB/SmolLM2-{}-Instruct", _SMOL), "<|im_end|>", _SMOL),
)}

# Stop tokens beyond the families' own: other chat formats' end-of-turn tokens (used when a tokenizer knows them).
OTHER_END_OF_TURN = ("<|end_of_turn|>", "<end_of_turn>", "<|eom_id|>")
END_OF_TURN_TOKENS = tuple(dict.fromkeys([f.end_of_turn for f in FAMILIES.values()] + list(OTHER_END_OF_TURN)))
