#!/usr/bin/env bash
# Issue 15 on a 2-GPU machine: greedy evaluation of the untrained 1.5B on the whole gsm8k test split three ways, one
# after another, each a fresh evaluation.py process (wall incl. the engine's start-up): one GPU, data parallel over
# two (--data-parallel-size 2: one engine per GPU, questions dealt round-robin) and tensor parallel over two
# (--tensor-parallel-size 2). Writes $OUT/multi_gpu_generation.json (summaries + wall times) and the logs.
#
#   bash bench/oneoff/multi_gpu_generation.sh DATA_DIR      # after provisioning (docs/benchmarks.md, "A GPU session"), models by hub id, offline
set -uo pipefail
DATA_DIR=${1:?usage: bash bench/oneoff/multi_gpu_generation.sh DATA_DIR}
OUT=${OUT:-/tmp/multi_gpu_out}; mkdir -p "$OUT"
export VLLM_ALLREDUCE_USE_SYMM_MEM=0  # no symmetric-memory all-reduce (NVLink multicast stays off on shared hosts)
MODEL_ARGS="--model qwen2.5-coder --data gsm8k --data-dir $DATA_DIR --student 1.5B --method naive --backend vllm
  --max-new-tokens 1024 --enforce-eager --gpu-memory-utilization 0.5"
for run in dp2:--data-parallel-size=2 one: tp2:--tensor-parallel-size=2; do
  name=${run%%:*}; flag=${run#*:}
  t0=$(date +%s.%N)
  python evaluation.py $MODEL_ARGS --root "/tmp/mgpu_$name" ${flag:+${flag/=/ }} > "$OUT/$name.log" 2>&1
  rc=$?; t1=$(date +%s.%N)
  s=$(ls /tmp/mgpu_$name/model_outputs/eval/gsm8k/*_summary.json 2>/dev/null | head -1)
  python3 - "$name" "$flag" "$rc" "$t0" "$t1" "$s" "$OUT/multi_gpu_generation.json" <<'EOF'
import json, os, sys, subprocess
name, flag, rc, t0, t1, summ, out = sys.argv[1:]
res = json.load(open(out)) if os.path.exists(out) else {"runs": []}
s = json.load(open(summ)) if summ else {}
res["device"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True).stdout.strip().splitlines()
res["runs"].append({"run": name, "flag": flag, "exit_code": int(rc), "process_wall_s": round(float(t1) - float(t0), 1),
                    "accuracy": s.get("accuracy"), "n": s.get("n"), "eval_wall_s": s.get("wall_s")})
json.dump(res, open(out, "w"), indent=1)
print(res["runs"][-1])
EOF
done
