#!/usr/bin/env bash
# Issues 15 and 13 on a 2-GPU machine in one hold, after provisioning (docs/benchmarks.md, "A GPU session"): the
# runs go on in the background, so each device call stays short and the hold is not lost between calls.
#   bash bench/oneoff/gpu_multi_session.sh launch DATA_DIR [PLAN]   # start PLAN (default sft, below) in the background
#   bash bench/oneoff/gpu_multi_session.sh wait SECONDS      # follow it (returns early when it is done)
#   bash bench/oneoff/gpu_multi_session.sh pack              # $OUT/gpu_multi_session.tar.gz: the JSONs and logs
# Plan sft (session 6), one step after another (each figure from a card nothing else uses):
#   1. bench/multi_gpu_sft.py --eval: SFT of the 0.5B on 1 GPU, ZeRO-2 and FSDP on 2; each saved model evaluated
#   2. bench/bench_generation_gpu.py sampling (0.5B, N=16, 1,000 questions): vllm-graphs on 1 GPU, then over 2 (DP)
#   3. bench/bench_generation_gpu.py eval (the 0.5B, all 1,319 test questions): hf-continuous (the reference of greedy
#      equality), vllm-inproc (start-up without the engine process), vllm-graphs (torch.compile's cache warm by then)
# Plan generation (session 7): two lanes at once, one card each, then both cards:
#   GPU 0: sampling (0.5B, N=16, 1,000 questions), vllm-graphs with a seed per request (the default), then
#          +engine-seed (--seeding engine)
#   GPU 1: eval (the 1.5B, all 1,319 test questions): vllm-inproc, vllm-graphs, vllm-graphs#2 (compile cache warm);
#          greedy equality with hf-padded on the first 256; determinism_gpu.py --only eval (--batch-size now reaches
#          vLLM as max_num_seqs)
#   then:  sampling vllm-graphs-dp2+engine-seed over both cards (data-parallel scaling against GPU 0's run)
# Plan engines (one card; session 8): eval start-up (the 1.5B, all 1,319 test questions): CUDA graphs without
#   torch.compile with the engine core in-process, eager in-process, CUDA graphs without torch.compile; then sampling
#   (0.5B, N=16, 1,000 questions) with one engine, then two engines on the same card (--data-parallel-size 2
#   --engines-per-gpu 2), both with --seeding engine
set -uo pipefail
W=${ALICE_SESSION_DIR:-/tmp/gpu_multi_session}
case "${1:-}" in
launch)
  DATA=${2:?usage: launch DATA_DIR [sft|generation|engines]}; PLAN=${3:-sft}; mkdir -p "$W"; rm -f "$W/done"
  export ALICE_COMMIT=${ALICE_COMMIT:-$(cat "$DATA/commit.txt" 2>/dev/null)} VLLM_ALLREDUCE_USE_SYMM_MEM=0
  # a snapshot of the checkout: a later call of the same hold replaces the working tree under the running jobs
  rm -rf "$W/repo" && mkdir -p "$W/repo" && cp -r alice bench training cot W2SG_pipeline evaluation.py \
    accelerate_configs accelerate_config.yaml "$W/repo/" && cd "$W/repo" && export PYTHONPATH="$W/repo:${PYTHONPATH:-}"
  if [ "$PLAN" = engines ]; then
  setsid nohup bash -c "
    export CUDA_VISIBLE_DEVICES=0
    python3 -c 'import vllm' > /dev/null 2>&1  # the libraries' files read once (page cache), as on a machine in use
    python3 bench/bench_generation_gpu.py --data-dir $DATA --workloads eval \
      --paths vllm-graphs+nocompile+inproc,vllm-inproc,vllm-graphs+nocompile --timeout 200 \
      --out $W/generation_startup.json > $W/1_startup.log 2>&1
    python3 bench/bench_generation_gpu.py --data-dir $DATA --workloads sampling \
      --paths vllm-graphs+engine-seed,vllm-graphs-dp2+engine-seed+epg2+kv40 --timeout 480 \
      --out $W/generation_engines.json > $W/2_engines.log 2>&1
    touch $W/done" > "$W/all.log" 2>&1 < /dev/null &
  echo "launched plan engines in $W"; exit 0
  fi
  if [ "$PLAN" = generation ]; then
  B="python3 bench/bench_generation_gpu.py --data-dir $DATA"
  setsid nohup bash -c "
    ( export CUDA_VISIBLE_DEVICES=0
      $B --workloads sampling --paths vllm-graphs,vllm-graphs+engine-seed --timeout 480 \
        --out $W/generation_sampling.json > $W/1_sampling.log 2>&1 ) &
    ( export CUDA_VISIBLE_DEVICES=1
      $B --workloads eval --paths vllm-inproc,vllm-graphs,vllm-graphs --timeout 300 \
        --out $W/generation_eval.json > $W/2_eval.log 2>&1
      $B --workloads eval --eval-questions 256 --paths hf-padded,vllm-graphs --equal-ref hf-padded --equal 256 \
        --timeout 300 --out $W/generation_equal.json > $W/3_equal.log 2>&1
      python3 bench/determinism_gpu.py $DATA --only eval --work $W/det --out $W/determinism_eval.json > $W/4_det.log 2>&1 ) &
    wait
    $B --workloads sampling --paths vllm-graphs-dp2+engine-seed --timeout 480 \
      --out $W/generation_dp2.json > $W/5_dp2.log 2>&1
    touch $W/done" > "$W/all.log" 2>&1 < /dev/null &
  echo "launched plan generation in $W"; exit 0
  fi
  setsid nohup bash -c "
    python3 bench/multi_gpu_sft.py --data-dir $DATA --eval --work $W/sft --out $W/multi_gpu_sft.json > $W/1_sft.log 2>&1
    python3 bench/bench_generation_gpu.py --data-dir $DATA --workloads sampling --paths vllm-graphs,vllm-graphs-dp2 \
      --timeout 420 --out $W/generation_sampling.json > $W/2_sampling.log 2>&1
    python3 bench/bench_generation_gpu.py --data-dir $DATA --workloads eval --eval-model Qwen/Qwen2.5-Coder-0.5B-Instruct \
      --paths hf-continuous,vllm-inproc,vllm-graphs --equal-ref hf-continuous --equal 1319 --timeout 300 \
      --out $W/generation_eval.json > $W/3_eval.log 2>&1
    touch $W/done" > "$W/all.log" 2>&1 < /dev/null &
  echo "launched in $W";;
wait)
  end=$(( $(date +%s) + ${2:-60} ))
  while [ ! -e "$W/done" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  ls "$W"; for f in "$W"/*.log; do echo "== $f"; grep -v "^INFO\|it/s\]$" "$f" | tail -4 | cut -c1-300; done
  [ -e "$W/done" ] && echo DONE;;
pack)
  tar czf "$OUT/gpu_multi_session.tar.gz" -C "$W" --exclude='sft/one' --exclude='sft/zero2' --exclude='sft/fsdp' \
    --exclude='*.parts' --exclude=repo . && ls -la "$OUT";;
*) echo "usage: bash bench/oneoff/gpu_multi_session.sh launch DATA_DIR | wait SECONDS | pack" >&2; exit 2;;
esac
