#!/usr/bin/env bash
# Issue 14 on the GPU machine: the project's one command (python -m alice.pipeline) per dataset, in the background,
# so that several datasets share the card and the run outlives the 10-minute call
# (docs/benchmarks.md: "The weak-to-strong results runs on a GPU").
#
#   bash bench/oneoff/gpu_real_results.sh launch gsm8k arc_challenge   # start one pipeline per dataset (setsid, detached)
#   bash bench/oneoff/gpu_real_results.sh status                       # each pipeline's last lines and exit code
#   bash bench/oneoff/gpu_real_results.sh wait SECONDS                 # status every 30 s until all ended or SECONDS passed
#   bash bench/oneoff/gpu_real_results.sh pack                         # $OUT/real_<data>.tar.gz.part*: stage JSONL, evaluations,
#                                                               # report, logs, training records (no weights)
# Run from the checkout root after `source .carry/kit/on_device.sh env` (models by hub id, offline) with the data
# under .gpu_data/ (both copied to /tmp/real/{code,gpu_data} at the first launch). Each dataset runs under
# /tmp/real/<data> (its --root). Settings (env): TRAIN_LIMIT (1000),
# NUM_SAMPLES (16), MAX_NEW_TOKENS (1024), MODEL / TEACHER / MIDLEVEL / STUDENT (the setting, below), GEN_ARGS / SFT_ARGS (extra generation / training flags), BACKEND (auto), EVAL_LIMIT (none:
# the whole test split; set only for a rehearsal), JOBS (steps at once per dataset: 3 for one dataset on a card of
# >= 120 GB, else 2), EXTRA_ARGS (more pipeline flags, e.g. '--ablations all'), WITH_NAIVE (1; 0: no untrained rows).
set -uo pipefail
RUNS=${RUNS:-/tmp/real}
TRAIN_LIMIT=${TRAIN_LIMIT:-1000}
NUM_SAMPLES=${NUM_SAMPLES:-16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-1024}
BACKEND=${BACKEND:-auto}
# --jobs runs up to JOBS steps at once (one training step at a time): each vLLM engine gets a fixed 12 GiB KV cache
# (no memory profiling, which miscounts while another process on the card allocates) and checks for 15% free memory
GEN_ARGS=${GEN_ARGS:---gpu-memory-utilization 0.15 --kv-cache-gib 12 --enforce-eager}
MEM_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
# two datasets at once with 3 jobs each ran out of memory on the H200 (a training process held 106 GB; the retries
# finished both): 2 each then
JOBS=${JOBS:-$([ "${MEM_MIB:-0}" -ge 120000 ] && [ "$#" -le 2 ] && echo 3 || echo 2)}
# the paper's effective batch 16 as 16 x 1 instead of accelerate_config.yaml's 1 x 16 (the seed's, for small GPUs):
# on the H200, 1 x 16 trained 0.5B on 560 arc rows x 3 epochs at 8.4 rows/s (200 s)
SFT_ARGS=${SFT_ARGS:---per-device-batch-size 16 --gradient-accumulation-steps 1}
STUDENT_ID=Qwen/Qwen2.5-Coder-1.5B-Instruct
# the setting (default: Qwen2.5-Coder 0.5B -> 1.5B); the cascade of issue 30: MODEL=custom
# TEACHER=HuggingFaceTB/SmolLM2-135M-Instruct MIDLEVEL=Qwen/Qwen2.5-Coder-0.5B-Instruct STUDENT=$STUDENT_ID
MODEL=${MODEL:-qwen2.5-coder}; TEACHER=${TEACHER:-0.5B}; STUDENT=${STUDENT:-1.5B}; MIDLEVEL=${MIDLEVEL:-}
CODE=$RUNS/code  # a snapshot of the checkout: the next call's copy of the working tree must not change running code
DATA_DIR=$RUNS/gpu_data

command_for() {  # the one command, as recorded in the results file
  echo python -m alice.pipeline --model "$MODEL" --data "$1" --teacher "$TEACHER" ${MIDLEVEL:+--midlevel "$MIDLEVEL"} --student "$STUDENT" --paper \
    --train-limit "$TRAIN_LIMIT" --num-samples "$NUM_SAMPLES" --max-new-tokens "$MAX_NEW_TOKENS" \
    --summarizer-model "$STUDENT_ID" $([ "${WITH_NAIVE:-1}" = 1 ] && echo --with-naive) --backend "$BACKEND" --data-dir "$DATA_DIR" --root "$RUNS/$1" --jobs "$JOBS" \
    --extra-gen-args "'$GEN_ARGS'" --extra-sft-args "'$SFT_ARGS'" ${EVAL_LIMIT:+--eval-limit $EVAL_LIMIT} ${EXTRA_ARGS:-}
}

case "${1:-}" in
  launch)
    shift
    mkdir -p "$RUNS"
    [ -d "$CODE" ] || { mkdir -p "$CODE" && tar cf - --exclude=./.carry --exclude=./.whl . | tar xf - -C "$CODE"; }
    [ -d "$DATA_DIR" ] || cp -r .gpu_data "$DATA_DIR"
    cd "$CODE"
    # the steps import alice from the snapshot, never from the checkout the next call replaces
    export PYTHONPATH=$CODE${PYTHONPATH:+:$PYTHONPATH}
    for d in "$@"; do
      mkdir -p "$RUNS/$d"
      cmd=$(command_for "$d")
      echo "$cmd" > "$RUNS/$d/command.txt"
      nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$RUNS/$d/device.txt" 2>/dev/null
      cp .gpu_data/commit.txt "$RUNS/$d/commit.txt" 2>/dev/null || true  # written here before the hold (no .git there)
      # one attempt: an identical rerun of a deterministic failure fails the same way. The pipeline itself changes
      # what it retries (a training OOM: half the micro-batch, then gradient checkpointing; alice.sft_memory), and
      # the engines' fixed KV cache (--kv-cache-gib in GEN_ARGS) avoids the memory profiling that a neighbour's
      # allocation could fail. A failure is reported (rc, failed steps), never hidden by a retry.
      setsid nohup bash -c "date +%s > $RUNS/$d/start; PYTHONUNBUFFERED=1 eval $(printf %q "$cmd") >> $RUNS/$d/pipeline.log 2>&1; \
        echo \$? > $RUNS/$d/rc; date +%s > $RUNS/$d/end" > /dev/null 2>&1 < /dev/null &
      echo "launched $d: $cmd"
      sleep "${STAGGER:-45}"  # engines of two pipelines starting at once race for the card's memory
    done;;
  status)
    for dir in "$RUNS"/*/; do
      d=$(basename "$dir"); [ -f "$dir/command.txt" ] || continue
      s=$(cat "$dir/start" 2>/dev/null || date +%s); e=$(cat "$dir/end" 2>/dev/null || date +%s)
      echo "== $d: rc=$(cat "$dir/rc" 2>/dev/null || echo running) after $(( e - s )) s"
      grep -E ": ok in|: running|FAILED|all steps" "$dir/pipeline.log" 2>/dev/null | tail -3
      grep -E "Error|error:" "$dir/pipeline.log" 2>/dev/null | tail -3
      step=$(ls -t "$dir"/model_outputs/logs/*/* 2>/dev/null | head -1)
      [ -z "$step" ] || { echo "   $(basename "$step"):"; tail -c 400 "$step" | tr '\r' '\n' | grep -v '^\s*$' | tail -2; }
    done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null;;
  wait)
    limit=${2:-540}; t0=$(date +%s)
    while :; do
      running=0
      for dir in "$RUNS"/*/; do [ ! -f "$dir/command.txt" ] || [ -f "$dir/rc" ] || running=1; done
      [ $running = 0 ] && break
      [ $(( $(date +%s) - t0 )) -ge "$limit" ] && break
      sleep 30
    done
    bash "$0" status;;
  pack)
    for dir in "$RUNS"/*/; do
      d=$(basename "$dir"); [ -f "$dir/command.txt" ] || continue
      (cd "$dir" && tar czf "${OUT:-/tmp}/real_$d.tar.gz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' \
        --exclude='checkpoint-*' $(ls -d data model_outputs command.txt device.txt commit.txt start end rc pipeline.log 2>/dev/null))
      # files that come back from the device machine have a size limit (16 MiB; an 18 MB tarball did not) and a
      # count (8 a call): 12 MiB parts;
      # here: cat real_<data>.tar.gz.part* > real_<data>.tar.gz
      (cd "${OUT:-/tmp}" && split -b 12M "real_$d.tar.gz" "real_$d.tar.gz.part" && rm "real_$d.tar.gz" && ls -l real_$d.tar.gz.part*)
    done;;
  *) sed -n 2,13p "$0"; exit 2;;
esac
