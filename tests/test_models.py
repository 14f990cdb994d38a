"""Model families (``alice.models``): one spec per family, which the registry and the generation layer read."""

from alice import models, registry
from alice.generation import END_OF_TURN_TOKENS, end_of_turn_token


def test_registry_resolves_from_the_family_specs():
    for name, fam in models.FAMILIES.items():
        for size, hub_id in fam.hub_ids.items():
            assert registry.resolve_model(name, size) == hub_id
    assert registry.resolve_model("llama3", "8B") == "meta-llama/Llama-3.1-8B-Instruct"
    assert set(registry.FAMILIES) == set(models.FAMILIES)


def test_end_of_turn_of_the_spec_is_the_chat_templates(tiny_models):
    """The fixture models share a ChatML tokenizer (the qwen families' format): the token read off its chat template is
    the family spec's, and every family's end-of-turn token is a stop token of the generation layer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"]))
    assert end_of_turn_token(tok) == models.FAMILIES["qwen2.5"].end_of_turn == "<|im_end|>"
    assert {f.end_of_turn for f in models.FAMILIES.values()} <= set(END_OF_TURN_TOKENS)


def test_hints_follow_the_parameter_counts():
    q, llama = models.FAMILIES["qwen2.5"], models.FAMILIES["llama3"]
    assert [q.tensor_parallel_hint(s) for s in ("0.5B", "7B", "14B", "32B", "72B")] == [1, 1, 1, 2, 4]
    assert llama.tensor_parallel_hint("70B") == 4 and llama.tensor_parallel_hint("8B") == 1
    assert q.hf_batch_hint("1.5B") == 64 and llama.hf_batch_hint("8B") == 64 and q.hf_batch_hint("72B") == 4
    assert q.tensor_parallel_hint("not-a-size") == 1
