#!/usr/bin/env bash
# Issue 33's GPU figures in one call of at most 8 minutes, written to the folder OUT.
#   bash benchmarks/gpu_figures.sh OUT            # on a lent GPU (wheels carried and installed
#                                                 # first: ../shared/GPU.md, gpu_bench.sh install)
#   bash benchmarks/gpu_figures.sh OUT --tiny     # the same steps on CPU, embedded model, tiny sizes
#   bash benchmarks/gpu_figures.sh OUT --plan     # print each step's command, start nothing
#
# Steps (each a `synth-ray bench` into OUT, labelled; each under its own time slice, so the
# whole call stays inside 8 minutes: a step that runs out is recorded in OUT/steps.txt and the
# next one starts):
#   warm        a small untimed run of each model shape: torch.compile's cache is warm before
#               the first timed system (the order bias of issue 33), engine starts reported apart
#   skewed      Qwen2.5-0.5B's shape (random weights), 8192 skewed requests: synth-ray, raw vLLM,
#               Ray Data LLM
#   smol-default / smol-tuned   SmolLM2-135M's shape: vLLM's defaults, then datatrove's tuned
#               settings (512 sequences, 32,768 batched tokens, n-gram speculation of 6)
#   smol-seqs   max_num_seqs sweep on SmolLM2-135M
#   rephrase-ngram   WRAP rephrasing of examples/web_docs.jsonl, without and with n-gram
#               speculation (random weights accept few drafts: the real-weights figure needs
#               REAL_MODEL=<folder>, e.g. the carried SmolLM2 GGUF converted there)
# Then OUT/summary.md: tok/s per GPU, GPU-hours per 1B output tokens, the goals met or missed
# (python -m synth_ray.bench.gpu_summary). Sizes can be set from the environment (PROMPTS_SKEWED,
# PROMPTS_SMOL, SLICE_SKEWED, ...) to fit another GPU.
#
# Everything does not fit 8 minutes (on an H200, one system's 8192 skewed requests of up to 512
# tokens took 140-250 s): the first call runs STEPS="warm skewed smol-default smol-tuned" (the
# goals; slices sum to 430 s), a second call into the same OUT runs
# STEPS="warm-smollm2-135m smol-seqs rephrase-ngram" (its slices sum to 225 s). The summary
# covers both.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_figures.sh OUT [--tiny|--plan]}"
case "${2:-}" in
  "") MODE=gpu ;;
  --tiny) MODE=tiny ;;
  --plan) MODE=plan ;;  # the GPU run's steps and sizes, printed
  *) echo "usage: gpu_figures.sh OUT [--tiny|--plan]" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD/.gpu-stage/site:$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ "$MODE" = tiny ] && PY=.venv/bin/python
MODELS="${MODELS:-.gpu-models}"
NGRAM='{method: ngram, num_speculative_tokens: 6, prompt_lookup_max: 6, prompt_lookup_min: 2}'

if [ "$MODE" != tiny ]; then
  : "${PROMPTS_SKEWED:=8192}" "${TOKENS_SKEWED:=256}" "${PROMPTS_SMOL:=4096}" "${TOKENS_SMOL:=128}"
  : "${PROMPTS_SWEEP:=2048}" "${SEQS_SWEEP:=256,512,1024}" "${PROMPTS_REPHRASE:=512}"
  : "${SLICE_WARM:=35}" "${SLICE_SKEWED:=200}" "${SLICE_SMOL:=80}" "${SLICE_SWEEP:=120}" "${SLICE_REPHRASE:=70}"
  : "${STEPS:=warm skewed smol-default smol-tuned}"
  ENGINE=(--set engine.extra_args.load_format=dummy --set engine.enforce_eager=false)
  SKEWED_SYSTEMS=synth-ray,vllm,ray-data
else  # CPU: the embedded model's shape at tiny sizes; a dry run of every step, not timed
  : "${PROMPTS_SKEWED:=4}" "${TOKENS_SKEWED:=8}" "${PROMPTS_SMOL:=4}" "${TOKENS_SMOL:=8}"
  : "${PROMPTS_SWEEP:=4}" "${SEQS_SWEEP:=4,8}" "${PROMPTS_REPHRASE:=2}"
  : "${SLICE_WARM:=300}" "${SLICE_SKEWED:=600}" "${SLICE_SMOL:=300}" "${SLICE_SWEEP:=300}" "${SLICE_REPHRASE:=300}"
  : "${STEPS:=warm skewed smol-default smol-tuned smol-seqs rephrase-ngram}"
  ENGINE=(--set engine.extra_args.load_format=dummy --set engine.max_model_len=512)
  SKEWED_SYSTEMS="${SKEWED_SYSTEMS:-synth-ray,vllm}"
fi
if [ "$MODE" != tiny ]; then
  QWEN="$MODELS/qwen2.5-0.5b"; SMOL="$MODELS/smollm2-135m"
else
  QWEN="$MODELS/tiny-embedded"; SMOL="$MODELS/tiny-embedded"  # one shape: the embedded model's
fi
REAL="${REAL_MODEL:-$SMOL}"

touch "$OUT/steps.txt"
step() {  # step LABEL SLICE_S bench-args...: one `synth-ray bench`, bounded by its slice
  local label=$1 slice=$2; shift 2
  case " $STEPS " in
    *" $label "*) ;;
    *" warm "*) [[ $label == warm-* ]] || return 0 ;;  # "warm": every shape's warm-up
    *) return 0 ;;
  esac
  local cmd=("$PY" -m synth_ray bench configs/bench.yaml --results "${RESULTS:-$OUT}" --label "$label" "$@")
  if [ "$MODE" = plan ]; then
    printf '%s (at most %ss):' "$label" "$slice"; printf ' %q' "${cmd[@]}"; echo
    return 0
  fi
  local started=$SECONDS
  echo "== $label (at most ${slice}s)" >&2
  timeout --kill-after=10 "$slice" "${cmd[@]}" > "$OUT/$label.log" 2>&1
  local rc=$?
  local took=$((SECONDS - started))
  case $rc in
    0) echo "$label: done in ${took}s" ;;
    124|137) echo "$label: timed out after ${slice}s (raise SLICE_* or lower PROMPTS_*; its log: $label.log)" ;;
    *) echo "$label: failed (exit $rc) after ${took}s; its log: $label.log" ;;
  esac | tee -a "$OUT/steps.txt" >&2
}

if [ "$MODE" != plan ]; then
  "$PY" - "$OUT" <<'EOF' || exit 1
import sys
from synth_ray.bench import machine
m = machine.describe()
open(f"{sys.argv[1]}/machine.txt", "w").write(machine.line(m) + "\n")
print("machine:", machine.line(m), file=sys.stderr)
EOF
  if [ "$MODE" = gpu ]; then
    [ -d "$QWEN" ] || "$PY" -m synth_ray.bench.random_model "$QWEN" --shape qwen2.5-0.5b >&2 || exit 1
    [ -d "$SMOL" ] || "$PY" -m synth_ray.bench.random_model "$SMOL" --shape embedded >&2 || exit 1
  else
    [ -d "$QWEN" ] || "$PY" -m synth_ray.bench.random_model "$QWEN" --shape embedded >&2 || exit 1
  fi
fi

# warm: torch.compile's cache of each shape, untimed (its records go to a folder of their own)
WARM=("$QWEN")
[ "$SMOL" != "$QWEN" ] && WARM+=("$SMOL")
for model in "${WARM[@]}"; do
  RESULTS="$OUT/warm" step "warm-$(basename "$model")" "$SLICE_WARM" --systems vllm \
    --prompts 16 --set engine.model="$model" "${ENGINE[@]}" --set sampling.max_tokens=16
done

step skewed "$SLICE_SKEWED" --systems "$SKEWED_SYSTEMS" --prompts "$PROMPTS_SKEWED" \
  --lengths skewed --set engine.model="$QWEN" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SKEWED"
step smol-default "$SLICE_SMOL" --systems synth-ray,vllm --prompts "$PROMPTS_SMOL" --lengths fixed \
  --set engine.model="$SMOL" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SMOL"
step smol-tuned "$SLICE_SMOL" --systems synth-ray,vllm --prompts "$PROMPTS_SMOL" --lengths fixed \
  --set engine.model="$SMOL" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SMOL" \
  --set engine.max_num_seqs=512 --set engine.extra_args.max_num_batched_tokens=32768 \
  --set "engine.speculative_config=$NGRAM"
step smol-seqs "$SLICE_SWEEP" --systems synth-ray,vllm --prompts "$PROMPTS_SWEEP" --lengths fixed \
  --set engine.model="$SMOL" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SMOL" \
  --sweep "engine.max_num_seqs=$SEQS_SWEEP"
RE_ENGINE=("${ENGINE[@]}")
[ -n "${REAL_MODEL:-}" ] && RE_ENGINE=(--set engine.enforce_eager=false)
step rephrase-ngram "$SLICE_REPHRASE" --systems synth-ray,vllm --prompts "$PROMPTS_REPHRASE" \
  --source rephrase --lengths natural --set engine.model="$REAL" "${RE_ENGINE[@]}" \
  --set input.path=examples/web_docs.jsonl --set input.text_column=text \
  --set sampling.max_tokens="$TOKENS_SMOL" --sweep "engine.speculative_config=null,$NGRAM"

[ "$MODE" = plan ] && exit 0
"$PY" -m synth_ray.bench.gpu_summary "$OUT"
