import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_models_load_and_chat(tiny_models):
    tok = AutoTokenizer.from_pretrained(str(tiny_models["qwen_small"]))
    text = tok.apply_chat_template([{"role": "user", "content": "What is 48 + 24?"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "What is 48 + 24?" in text
    ids = tok(text, return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == text  # byte-level: lossless
    for name in ("qwen_small", "qwen_large", "llama"):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_models[name]))
        assert model.config.hidden_size // model.config.num_attention_heads == 32
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        assert out.shape[1] <= ids["input_ids"].shape[1] + 5
    assert AutoModelForCausalLM.from_pretrained(str(tiny_models["qwen_large"])).num_parameters() > model.num_parameters()
