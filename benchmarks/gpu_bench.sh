#!/usr/bin/env bash
# On a lent GPU machine (../shared/GPU.md): install the carried wheels once, make the
# random-weight model folders, then run `synth-ray bench` with the arguments given.
#   bash benchmarks/gpu_bench.sh install
#   bash benchmarks/gpu_bench.sh bench configs/bench.yaml --set engine.model=.gpu-models/embedded ...
# Wheels arrive in .gpu-stage/w (one carried part per call); installed into .gpu-stage/site.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.gpu-stage/site:$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
case "${1:-}" in
  install)
    cd .gpu-stage/w
    for f in *.split00; do
      [ -e "$f" ] || continue
      b=${f%.split00}; cat "$b".split* > "$b" && rm "$b".split*
    done
    python3 -m pip install -q --no-index --no-deps --no-compile --target ../site ./*.whl 2>&1 | tail -3
    cd ../..
    python3 -c "import vllm, ray, torch; print('vllm', vllm.__version__, 'ray', ray.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
    ;;
  bench)
    shift
    python3 -m synth_ray bench "$@"
    ;;
  *)
    echo "usage: $0 install | bench CONFIG [bench options]" >&2; exit 2 ;;
esac
