#!/usr/bin/env bash
# Issue 33's GPU figures, prepared: each call at most 8 minutes, its results written to OUT.
#   CALL=1 bash benchmarks/gpu_figures.sh OUT     # on a lent GPU (wheels carried and installed
#   CALL=2 bash benchmarks/gpu_figures.sh OUT     # first: ../shared/GPU.md, gpu_bench.sh install)
#   CALL=3 bash benchmarks/gpu_figures.sh OUT
#   bash benchmarks/gpu_figures.sh OUT --tiny     # every step on CPU, embedded model, tiny sizes
#   bash benchmarks/gpu_figures.sh OUT --plan     # print the call's steps, start nothing
#
# Steps, each a `synth-ray bench` labelled in OUT and bounded by its own time slice. A step
# whose slice runs out is stopped: the bench writes the systems that finished (SIGTERM), the
# line goes to OUT/steps.txt, the next step starts, and the call exits 1.
#   CALL=1  warm-qwen (150 s)   a small untimed raw-vLLM run: torch.compile's cache warm for the
#                               shape before the first timed system (issue 33's order bias)
#           skewed (300 s)      Qwen2.5-0.5B's shape (random weights), 8192 skewed requests of up
#                               to 256 tokens: synth-ray, raw vLLM, Ray Data LLM
#   CALL=2  warm-smol (100 s), smol-default (130 s)    SmolLM2-135M's shape, vLLM's defaults
#           warm-smol-tuned (100 s), smol-tuned (130 s) datatrove's tuned settings (512
#                               sequences, 32,768 batched tokens, n-gram speculation of 6)
#   CALL=3  warm-smol (100 s), smol-seqs (230 s)       max_num_seqs 256, 512, 1024
#           rephrase-ngram (120 s)   WRAP rephrasing of examples/web_docs.jsonl, n-gram speculation
#                               off and on (random weights accept few drafts: REAL_MODEL=<folder>
#                               for real weights, e.g. the carried SmolLM2 GGUF converted there)
# Engine starts on a GPU: 40-90 s each (results.md), so one call holds 4-6 system runs; the
# slices come from the H100/H200 runs recorded there. STEPS="label ..." runs chosen steps;
# sizes and slices are set from the environment (PROMPTS_SKEWED, SLICE_SKEWED, ...).
# Each call ends with OUT/summary.md; over several calls' folders, here afterwards:
#   python -m synth_ray.bench.gpu_summary call1/ call2/ call3/
# (tok/s per GPU, GPU-hours per 1B output tokens as datatrove reports them, each goal met,
# missed or not measured).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: gpu_figures.sh OUT [--tiny|--plan]}"
case "${2:-}" in
  "") MODE=gpu ;;
  --tiny) MODE=tiny ;;
  --plan) MODE=plan ;;  # the GPU call's steps and sizes, printed
  *) echo "usage: gpu_figures.sh OUT [--tiny|--plan]" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD/.gpu-stage/site:$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ "$MODE" = tiny ] && PY=.venv/bin/python
MODELS="${MODELS:-.gpu-models}"
NGRAM='{method: ngram, num_speculative_tokens: 6, prompt_lookup_max: 6, prompt_lookup_min: 2}'
TUNED=(--set engine.max_num_seqs=512 --set engine.extra_args.max_num_batched_tokens=32768
       --set "engine.speculative_config=$NGRAM")

if [ "$MODE" != tiny ]; then
  : "${PROMPTS_SKEWED:=8192}" "${TOKENS_SKEWED:=256}" "${PROMPTS_SMOL:=4096}" "${TOKENS_SMOL:=128}"
  : "${PROMPTS_SWEEP:=2048}" "${SEQS_SWEEP:=256,512,1024}" "${PROMPTS_REPHRASE:=512}"
  : "${SLICE_WARM:=100}" "${SLICE_WARM_QWEN:=150}" "${SLICE_SKEWED:=300}" "${SLICE_SMOL:=130}"
  : "${SLICE_SWEEP:=230}" "${SLICE_REPHRASE:=120}" "${SKEWED_SYSTEMS:=synth-ray,vllm,ray-data}"
  case "${CALL:-1}" in
    1) : "${STEPS:=warm-qwen skewed}" ;;
    2) : "${STEPS:=warm-smol smol-default warm-smol-tuned smol-tuned}" ;;
    3) : "${STEPS:=warm-smol smol-seqs rephrase-ngram}" ;;
    *) echo "CALL=${CALL}: expected 1, 2 or 3" >&2; exit 2 ;;
  esac
  ENGINE=(--set engine.extra_args.load_format=dummy --set engine.enforce_eager=false)
  QWEN="$MODELS/qwen2.5-0.5b"; SMOL="$MODELS/smollm2-135m"
else  # CPU: the embedded model's shape at tiny sizes; a dry run of every step, not timed
  : "${PROMPTS_SKEWED:=4}" "${TOKENS_SKEWED:=8}" "${PROMPTS_SMOL:=4}" "${TOKENS_SMOL:=8}"
  : "${PROMPTS_SWEEP:=4}" "${SEQS_SWEEP:=4,8}" "${PROMPTS_REPHRASE:=2}"
  : "${SLICE_WARM:=300}" "${SLICE_WARM_QWEN:=300}" "${SLICE_SKEWED:=600}" "${SLICE_SMOL:=300}"
  : "${SLICE_SWEEP:=300}" "${SLICE_REPHRASE:=300}" "${SKEWED_SYSTEMS:=synth-ray,vllm}"
  : "${STEPS:=warm-qwen skewed warm-smol smol-default warm-smol-tuned smol-tuned smol-seqs rephrase-ngram}"
  ENGINE=(--set engine.extra_args.load_format=dummy --set engine.max_model_len=512)
  QWEN="$MODELS/tiny-embedded"; SMOL="$MODELS/tiny-embedded"  # one shape: the embedded model's
fi
REAL="${REAL_MODEL:-$SMOL}"
FAILED=0

step() {  # step LABEL SLICE_S bench-args...: one `synth-ray bench`, bounded by its slice
  local label=$1 slice=$2; shift 2
  case " $STEPS " in *" $label "*) ;; *) return 0 ;; esac
  local results="$OUT"
  [[ $label == warm-* ]] && results="$OUT/warm"  # untimed: apart from the figures
  local cmd=("$PY" -m synth_ray bench configs/bench.yaml --results "$results" --label "$label" "$@")
  if [ "$MODE" = plan ]; then
    printf '%s (at most %ss):' "$label" "$slice"; printf ' %q' "${cmd[@]}"; echo
    return 0
  fi
  local started=$SECONDS
  echo "== $label (at most ${slice}s)" >&2
  timeout --kill-after=10 "$slice" "${cmd[@]}" > "$OUT/$label.log" 2>&1
  local rc=$?
  local took=$((SECONDS - started))
  [ "$rc" = 0 ] || FAILED=1
  case $rc in
    0) echo "$label: done in ${took}s" ;;
    124|137) echo "$label: ran out of its ${slice}s (the systems that finished are in; raise SLICE_* or lower PROMPTS_*; log: $label.log)" ;;
    *) echo "$label: failed (exit $rc) after ${took}s; log: $label.log" ;;
  esac | tee -a "$OUT/steps.txt" >&2
}

if [ "$MODE" != plan ]; then
  mkdir -p "$OUT"
  OUT="$(cd "$OUT" && pwd)"
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

WARM=(--systems vllm --prompts 16 --set sampling.max_tokens=16)
step warm-qwen "$SLICE_WARM_QWEN" "${WARM[@]}" --set engine.model="$QWEN" "${ENGINE[@]}"
step skewed "$SLICE_SKEWED" --systems "$SKEWED_SYSTEMS" --prompts "$PROMPTS_SKEWED" \
  --lengths skewed --set engine.model="$QWEN" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SKEWED"
step warm-smol "$SLICE_WARM" "${WARM[@]}" --set engine.model="$SMOL" "${ENGINE[@]}"
step smol-default "$SLICE_SMOL" --systems synth-ray,vllm --prompts "$PROMPTS_SMOL" --lengths fixed \
  --set engine.model="$SMOL" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SMOL"
step warm-smol-tuned "$SLICE_WARM" "${WARM[@]}" --set engine.model="$SMOL" "${ENGINE[@]}" "${TUNED[@]}"
step smol-tuned "$SLICE_SMOL" --systems synth-ray,vllm --prompts "$PROMPTS_SMOL" --lengths fixed \
  --set engine.model="$SMOL" "${ENGINE[@]}" --set sampling.max_tokens="$TOKENS_SMOL" "${TUNED[@]}"
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
"$PY" -m synth_ray.bench.gpu_summary "$OUT" || FAILED=1
exit "$FAILED"
