# The four Alice stages in order, shared by ours-wts-single.sh and ours-wts-cascade.sh (sourced by them, which set
# METHOD, TEACHER, MIDLEVEL, STUDENT defaults and HELP_LINES first). Not meant to be run by itself.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA=${DATA:-hotpotqa}
MODEL=${MODEL:-qwen2.5}
STUDENT=${STUDENT:-7B}
GPUS=${GPUS:-}                          # CUDA_VISIBLE_DEVICES for every stage (the paper: 1,2,3,4); empty: unchanged
TP=${TP:-1}                             # vLLM tensor parallel size of the sampler and the student
NUM_SAMPLES=${NUM_SAMPLES:-}            # answers sampled per question; empty: the cluster stage's default (alice/options.py)
BACKEND=${BACKEND:-auto}                # auto | vllm | hf
SUMMARIZER=${SUMMARIZER:-}              # empty: ./Meta-Llama-3-70B-Instruct when present, else meta-llama/Meta-Llama-3-70B-Instruct
SUMMARIZER_TP=${SUMMARIZER_TP:-}       # empty: the memory plan's (python -m alice.plan tp summarizer): 4 for the 70B on 80 GB cards
EMBEDDING_MODEL=${EMBEDDING_MODEL:-}    # empty: the cluster stage's default (sentence-transformers/all-MiniLM-L6-v2)
THRESHOLD=${THRESHOLD:-}                # cosine similarity above which two answers cluster (hotpotqa, triviaqa); empty: its default
FINAL_TRIES=${FINAL_TRIES:-}            # final stage: answers sampled per question, first well-formed kept; empty: its default (4)
PYTHON=${PYTHON:-python}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"  # extra flags for every stage

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --teacher) TEACHER=$2; shift 2 ;;
    --midlevel) MIDLEVEL=$2; shift 2 ;;
    --student) STUDENT=$2; shift 2 ;;
    --gpus) GPUS=$2; shift 2 ;;
    --tp|--tensor-parallel-size) TP=$2; shift 2 ;;
    --num-samples) NUM_SAMPLES=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --summarizer|--summarizer-model) SUMMARIZER=$2; shift 2 ;;
    --summarizer-tp) SUMMARIZER_TP=$2; shift 2 ;;
    --embedding-model) EMBEDDING_MODEL=$2; shift 2 ;;
    --threshold|--similarity-threshold) THRESHOLD=$2; shift 2 ;;
    --final-tries) FINAL_TRIES=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    -h|--help) sed -n "2,${HELP_LINES}p" "$0"; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done

if [[ -n "$GPUS" ]]; then export CUDA_VISIBLE_DEVICES="$GPUS"; fi
if [[ -z "$SUMMARIZER_TP" ]]; then  # the plan for the visible GPUs, or one line saying what the summarizer needs
  SUMMARIZER_TP=$(PYTHONPATH="$HERE/../..${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m alice.plan tp "${SUMMARIZER:-summarizer}") || exit 2
fi
COMMON=(--data "$DATA" --model "$MODEL" --teacher "$TEACHER" --student "$STUDENT" --method "$METHOD" --backend "$BACKEND")
if [[ "$METHOD" == cascade ]]; then COMMON+=(--midlevel "$MIDLEVEL"); fi
# defaults live in one place, the stage scripts' flags (alice/options.py): a flag is passed only when it was set here
CLUSTER=()
if [[ -n "$NUM_SAMPLES" ]]; then CLUSTER+=(--num-samples "$NUM_SAMPLES"); fi
if [[ -n "$THRESHOLD" ]]; then CLUSTER+=(--similarity-threshold "$THRESHOLD"); fi
if [[ -n "$EMBEDDING_MODEL" ]]; then CLUSTER+=(--embedding-model "$EMBEDDING_MODEL"); fi
UNCERTAINTY=()
if [[ -n "$SUMMARIZER" ]]; then UNCERTAINTY+=(--summarizer-model "$SUMMARIZER"); fi
FINAL=()
if [[ -n "$FINAL_TRIES" ]]; then FINAL+=(--final-tries "$FINAL_TRIES"); fi

set -x
"$PYTHON" "$HERE/new_weak_to_strong_cluster.py" "${COMMON[@]}" --tensor-parallel-size "$TP" ${CLUSTER[@]+"${CLUSTER[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
"$PYTHON" "$HERE/new_weak_to_strong_uncertainty.py" "${COMMON[@]}" --tensor-parallel-size "$SUMMARIZER_TP" ${UNCERTAINTY[@]+"${UNCERTAINTY[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
"$PYTHON" "$HERE/new_weak_to_strong_zeroshot.py" "${COMMON[@]}" --tensor-parallel-size "$TP" ${EXTRA[@]+"${EXTRA[@]}"}
"$PYTHON" "$HERE/new_weak_to_strong_final.py" "${COMMON[@]}" --tensor-parallel-size "$TP" ${FINAL[@]+"${FINAL[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
