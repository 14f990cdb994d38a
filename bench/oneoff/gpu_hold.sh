#!/usr/bin/env bash
# One short GPU hold, run by the machine itself (issues 26, 30, 31): the scale bench (bench/configs/scale_gpu.yaml),
# then two training benches (bench/train_variants.py), while the calls that carry weights go on. A driver
# started by the first call (setsid, so it outlives the call) runs the steps in order and waits for what each needs:
#   1. the scale bench's training cases (torch + the kit's wheels only: they start at once)
#   2. the NaN-norm bench (bench/configs/nan_norms_gpu.yaml), once the 0.5B's parts are there (provisioned first;
#      no vLLM needed, so the 0.5B's parts travel first)
#   3. the scale bench's 70B-class generation case, once vLLM's wheel is joined and installed (call `vllm`)
#   4. the packing bench, once the 1.5B's parts are there (likewise)
# Settings (env of `start`): SCALE_TRAIN=0 skips the training cases (a card already measured); BENCH_ARGS adds flags
# to the training benches (--no-evaluate: the packing bench without vLLM or evaluation); SCALE_GEN_ARGS adds
# flags to the generation case (e.g. '--prompts 32 --new-tokens 512' for the forced 70B on an 80 GB card); ORDER
# (default 'nan gen packing') is the order of steps 2-4: carry the parts in the same order; 'kernels' runs
# bench/nan_kernels_gpu.py (the 0.5B; KERNELS_ARGS: its flags beside the config, e.g. '--variants sdpa,sdpa_cudnn');
# 'real' runs the one command on REAL_DATA (default gsm8k) by bench/oneoff/gpu_real_results.sh, whose settings (JOBS,
# WITH_NAIVE, EXTRA_ARGS, GEN_ARGS...) `start` passes on, once the models of REAL_MODELS (default the 0.5B and the
# 1.5B) and vLLM are there; then `gpu_real_results.sh wait|pack`; 'setting' times issue 31's gsm8k setting
# (bench/setting.py, SETTING_ARGS beside its config).
# Nothing runs here between two calls (the machine goes back after 30 s idle): waits happen there (`wait`).
#
#   carry [.carry/kit .carry/vllm-deps .carry/tok .gpu_data]:  bash bench/oneoff/gpu_hold.sh start
#   carry [.carry/kit .carry/parts/<one part>]:               bash .carry/kit/on_device.sh collect
#   carry [.carry/kit .carry/parts/<vllm's last part>]:       bash .carry/kit/on_device.sh collect && bash bench/oneoff/gpu_hold.sh vllm
#   bash bench/oneoff/gpu_hold.sh wait SECONDS [MARKER]       # until MARKER (default: the driver's end) or SECONDS
#   bash bench/oneoff/gpu_hold.sh pack                        # results JSON and logs to $OUT
set -uo pipefail
H=${HOLD:-/tmp/hold}; CODE=$H/code; SITE=${SITE:-/tmp/site}; PARTS=${PARTS:-/tmp/alice-parts}
VLLM_WHL=vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
mark() { echo "$2" > "$H/$1.rc"; echo "$(date +%T) $1 rc=$2"; }
case "${1:-}" in
  start)
    mkdir -p $H $CODE
    tar cf - --exclude=./.carry --exclude=./.whl --exclude=./.gpu_data . | tar xf - -C $CODE
    cp -r .gpu_data $H/gpu_data; cp -r .carry/kit $H/kit; cp $H/kit/manifest.txt $H/manifest.all
    [ ! -d .carry/tok ] || cp -r .carry/tok $CODE/tok
    [ ! -d .carry/parts ] || bash .carry/kit/on_device.sh collect  # a part may travel with this call too
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE \
      $(ls .carry/kit/*.whl .carry/vllm-deps/*.whl 2>/dev/null) 2>&1 | grep -v "^WARNING" ; echo "wheels: rc=${PIPESTATUS[0]}"
    setsid nohup bash $CODE/bench/oneoff/gpu_hold.sh drive > $H/drive.log 2>&1 < /dev/null &
    sleep 5; cat $H/drive.log;;
  drive)
    export PYTHONPATH=$SITE:$CODE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 ALICE_COMMIT=$(cat $H/gpu_data/commit.txt)
    cd $CODE
    cfg="--config bench/configs/scale_gpu.yaml --tokenizer tok"
    if [ "${SCALE_TRAIN:-1}" = 1 ]; then
      python3 bench/scale_gpu.py $cfg --no-vllm --out $H/scale_train.json > $H/train.log 2>&1; mark train $?
    fi
    source $H/kit/on_device.sh env
    # a model's weights, once its parts are all there: provision it (the manifest cut to it), then its bench. NAME is
    # an extended regex (any case) over the manifest's file names (Coder-0.5B, SmolLM2, MiniLM); its files are all
    # there when their parts add up to the manifest's sizes
    provision() {  # NAME
      local tag=${1//[^A-Za-z0-9.]/_}
      grep -iE "$1" $H/manifest.all | grep -v "^vllm-" > $H/kit/manifest.txt
      [ -s $H/kit/manifest.txt ] || { echo "no file of $1 in the manifest: pack it (pack.sh --models)"; mark provision_$tag 1; return 1; }
      while read -r name size sha; do
        until [ "$(stat -c %s $PARTS/$name.part* 2>/dev/null | awk '{s+=$1} END {print s+0}')" = "$size" ]; do sleep 2; done
      done < $H/kit/manifest.txt
      ALICE_KIT_NO_WHEELS=1 bash $H/kit/on_device.sh provision > $H/provision_$tag.log 2>&1; local rc=$?
      mark provision_$tag $rc; return $rc
    }
    bench() {  # NAME (bench/configs/NAME_gpu.yaml)
      python3 bench/train_variants.py --config bench/configs/$1_gpu.yaml --data-dir $H/gpu_data --root /tmp/$1 \
        --out $H/$1_gpu.json ${BENCH_ARGS:-} > $H/$1.log 2>&1; mark $1 $?
    }
    vllm_in() { until [ -f $H/vllm.rc ]; do sleep 2; done; }  # vLLM's wheel joined and installed (call `vllm`)
    gen() {
      vllm_in
      python3 bench/scale_gpu.py $cfg --train --lora ${SCALE_GEN_ARGS:-} --out $H/scale_gen.json > $H/gen.log 2>&1
      mark gen $?
    }
    for job in ${ORDER:-nan gen packing}; do
      case $job in
        nan) provision Coder-0.5B && bench nan_norms;;
        gen) gen;;
        # BENCH_ARGS=--no-evaluate: the trainings alone, no vLLM (a short hold: carry the 1.5B's parts only)
        packing) provision Coder-1.5B && { [[ "${BENCH_ARGS:-}" == *--no-evaluate* ]] || vllm_in; } && bench packing;;
        real)  # the one command on REAL_DATA (bench/oneoff/gpu_real_results.sh, its settings from start's env)
          # REAL_MODELS: the setting's models as manifest names, provisioned in that order (carry their parts in the
          # same order, vLLM's before the last model's); the run starts once all are in and vLLM is installed, as the
          # pipeline checks every model of the setting before its first step (session 16: a launch before the 1.5B
          # was in stopped at that check). The cascade of issue 30: REAL_DATA=hotpotqa REAL_MODELS='SmolLM2 MiniLM
          # Coder-0.5B Coder-1.5B' MODEL=custom TEACHER=... MIDLEVEL=... STUDENT=... (gpu_real_results.sh)
          ok=1; for m in ${REAL_MODELS:-Coder-0.5B Coder-1.5B}; do provision "$m" || { ok=0; break; }; done
          [ $ok = 1 ] && vllm_in && {
            cp -r $H/gpu_data .gpu_data && bash bench/oneoff/gpu_real_results.sh launch ${REAL_DATA:-gsm8k} > $H/real.log 2>&1
            until [ -f /tmp/real/${REAL_DATA:-gsm8k}/rc ]; do sleep 5; done; mark real $(cat /tmp/real/${REAL_DATA:-gsm8k}/rc); };;
        setting)  # issue 31's gsm8k setting, timed (bench/setting.py; SETTING_ARGS: e.g. '--pipeline-args --shared-engines')
          provision Coder-0.5B && provision Coder-1.5B && vllm_in && {
            python3 bench/setting.py --config bench/configs/setting_gpu.yaml --root /tmp/setting --data-dir $H/gpu_data \
              --out $H/setting_gpu.json ${SETTING_ARGS:-} > $H/setting.log 2>&1; mark setting $?; };;
        kernels) provision Coder-0.5B && { python3 bench/nan_kernels_gpu.py --config bench/configs/nan_kernels_gpu.yaml ${KERNELS_ARGS:-} \
          --data-dir $H/gpu_data --out $H/nan_kernels_gpu.json > $H/nan_kernels.log 2>&1; mark nan_kernels $?; };;
      esac
    done
    mark drive 0;;
  vllm)
    # join in the background: the next call carries the next part meanwhile
    setsid nohup bash -c "cat $PARTS/$VLLM_WHL.part* > /tmp/$VLLM_WHL && python3 -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --target $SITE /tmp/$VLLM_WHL > $H/vllm.log 2>&1; echo \$? > $H/vllm.rc" \
      > /dev/null 2>&1 < /dev/null &
    echo "joining and installing vllm";;
  wait)
    limit=${2:-540}; marker=${3:-drive}; t0=$(date +%s)
    until [ -f $H/$marker.rc ] || [ $(( $(date +%s) - t0 )) -ge "$limit" ]; do sleep 5; done
    bash "$0" status;;
  status)
    cat $H/drive.log 2>/dev/null; for f in train gen nan_norms nan_kernels packing real setting; do [ -f $H/$f.log ] && { echo "== $f"; tail -n 4 $H/$f.log; }; done
    echo "parts: $(ls $PARTS 2>/dev/null | wc -l)"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader;;
  pack)
    # at most 8 files come back: the JSON files, the logs in one tarball, the packing roots (no weights) in another
    cp $H/*.json ${OUT:-/tmp} 2>/dev/null; (cd $H && tar czf ${OUT:-/tmp}/hold_logs.tar.gz *.log *.rc)
    (cd /tmp && tar czf ${OUT:-/tmp}/bench_roots.tar.gz --exclude='*.safetensors' --exclude='*.bin' \
      --exclude='*.pt' --exclude='checkpoint-*' $(ls -d nan_norms packing 2>/dev/null)); ls -l ${OUT:-/tmp};;
  *) sed -n 2,14p "$0"; exit 2;;
esac
