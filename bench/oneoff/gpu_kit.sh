#!/usr/bin/env bash
# vLLM for the GPU machine (issue 13): download the smallest wheel set that the GPU image (Python 3.12, torch
# 2.11.0+cu130, transformers 5.17) lacks for `import vllm` + a Qwen2 model through vllm.LLM, and pack it, with the
# offline Qwen2.5-Coder pair, into parts of one call each (../shared/gpu/pack.sh --extra).
#
#   bash bench/oneoff/gpu_kit.sh [--download-only] [pack.sh options]   # in the checkout root: .whl/ (wheels), .carry/ (parts)
#   e.g. bash bench/oneoff/gpu_kit.sh --part-mib 60 --models "Qwen/Qwen2.5-Coder-0.5B-Instruct Qwen/Qwen2.5-Coder-1.5B-Instruct sentence-transformers/all-MiniLM-L6-v2"
#
# Why this set: vllm 0.26.0 is built for CUDA 13 (its .so files need libcudart.so.13, sm_90a included) and pins
# torch==2.11.0, the image's. Of its Requires-Dist, the image already has torch, transformers, numpy, regex,
# requests, tqdm, psutil, py-cpuinfo, safetensors, tokenizers, sentencepiece, protobuf, aiohttp, pillow, tiktoken,
# pyyaml, einops, cloudpickle, ninja, numba, opencv-python-headless, prometheus-client, filelock, six, setuptools,
# jinja2, uvloop, httpx, anyio. The modules that vllm's engine path imports at module level (vllm.entrypoints.llm,
# v1 engine core/client, gpu worker and model runner, qwen2, the flash-attn backend, sampler; read off the wheel's
# source) need in addition: pydantic (+ pydantic-core, annotated-types, typing-inspection), msgspec, pyzmq, openai
# (+ jiter, distro, sniffio), openai-harmony, fastapi, starlette, partial-json-parser, pybase64, and, imported
# lazily on the same path, cachetools, cbor2, blake3; and llguidance + xgrammar (+ apache-tvm-ffi): they sit behind
# a LazyLoader, but vllm.v1.structured_output (imported by the engine core) annotates dataclass fields with their
# types, which Python 3.12 evaluates at import (llguidance 1.7 wheels are tagged manylinux_2_31). Checked on CPU by
# importing those modules from the vllm 0.26.0 wheel with every distribution outside the image's list + this set
# hidden from the import system. Left out on purpose (serving, other kernels/models, imported lazily or in
# try/except): flashinfer (vLLM falls back to PyTorch top-p/top-k sampling), outlines-core, lm-format-enforcer, mistral-common, compressed-tensors, the cutlass-dsl /
# quack / tilelang / humming / tokenspeed kernels, torchaudio/torchvision/torchcodec, opentelemetry, anthropic, mcp.
# If an import still fails there, the error names the module: add its wheel to EXTRA below.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
EXCL="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx "/.whl/" "$EXCL" 2>/dev/null || echo "/.whl/" >> "$EXCL"
mkdir -p .whl
WHEELS=(
  vllm==0.26.0
  "pydantic>=2.12,<3" annotated-types typing-inspection "msgspec" "pyzmq>=25" "openai>=2.0.0,<3" jiter distro sniffio
  "openai-harmony>=0.0.3" "fastapi>=0.133.0,<0.137.0" "starlette>=1.0.1" partial-json-parser pybase64
  cachetools cbor2 blake3 typing-extensions
  "llguidance>=1.7.0,<1.8.0" "xgrammar>=0.2.1,<1.0.0" "apache-tvm-ffi>=0.1.11"
)
EXTRA=(compressed-tensors loguru)  # more NAME==VERSION wheels if an import on the GPU machine asks for them
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$@" 2>&1 | grep -v "^WARNING" || true
}
dl "${WHEELS[@]}" "${EXTRA[@]}"
# pydantic pins its pydantic-core exactly: fetch that one
core=$(unzip -p .whl/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p' | head -1)
dl "pydantic-core==$core"
# one version of each (two stop the install)
dups=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dups" ] || { echo "more than one version of: $dups (remove the older from .whl/)" >&2; exit 1; }
ls -l .whl/*.whl | awk '{printf "%10.1f MiB  %s\n", $5/1048576, $9; s+=$5} END {printf "%10.1f MiB  total (%d wheels)\n", s/1048576, NR}'
[ "${1:-}" = "--download-only" ] && exit 0
# The vllm wheel travels in parts (one call each); the 22 small wheels (17 MiB) would cost one call each that way,
# so they go to .carry/vllm-deps/, carried once, by the provisioning call:
#   carry [".carry/kit", ".carry/vllm-deps"]
#   command: cp .carry/vllm-deps/*.whl .carry/kit/ && bash .carry/kit/on_device.sh provision
# (provision installs every wheel in the kit folder and the joined vllm wheel into /tmp/site.)
bash ../shared/gpu/pack.sh --extra .whl/vllm-*.whl "$@"
rm -rf .carry/vllm-deps && mkdir -p .carry/vllm-deps
for w in .whl/*.whl; do case "$(basename "$w")" in vllm-*) ;; *) cp "$w" .carry/vllm-deps/;; esac; done
echo "small wheels for the provisioning call: $(ls .carry/vllm-deps | wc -l) in .carry/vllm-deps ($(du -sh .carry/vllm-deps | cut -f1))"
