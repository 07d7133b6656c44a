"""A model folder for random-weight throughput runs: a published architecture's config.json and a
tokenizer, no weights. vLLM loads it with `engine.extra_args: {load_format: dummy}`.

    python -m synth_ray.bench.random_model out/models/qwen2.5-1.5b --shape qwen2.5-1.5b
    python -m synth_ray.bench.random_model out/models/smollm2 --shape embedded

Then `synth-ray bench CONFIG --set engine.model=out/models/qwen2.5-1.5b --set
engine.extra_args.load_format=dummy --lengths fixed`. Random weights make meaningless text: use
them for speed only, with `fixed` or `skewed` lengths (`ignore_eos`), never `natural`.
The tokenizer comes from `--tokenizer` (default: the embedded SmolLM2 model, so this works
offline); the config's vocabulary is set to the tokenizer's, so a random model never samples an
id the tokenizer cannot decode. With another family's tokenizer the shape is that family's in
every layer and differs only in the embedding size, which the folder's README.md states.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

# Public config.json values (Hugging Face model cards), the fields that set the compute.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
    },
    "qwen2.5-1.5b": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
    },
    "qwen2.5-7b": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "vocab_size": 152064,
    },
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-05,
        "tie_word_embeddings": False,
        "vocab_size": 128256,
    },
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def make_random_model(out: Path, shape: str, tokenizer_dir: Path) -> Path:
    """Write `out/config.json` and the tokenizer files; return `out`."""
    from transformers import AutoTokenizer

    if shape != "embedded" and shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected embedded or one of {', '.join(SHAPES)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    own = json.loads((tokenizer_dir / "config.json").read_text())
    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    if shape == "embedded":
        config = own
        note = f"The config of {tokenizer_dir.name}, unchanged."
    else:
        config = {
            **SHAPES[shape],
            "torch_dtype": "bfloat16",
            "hidden_act": "silu",
            "bos_token_id": own.get("bos_token_id"),
            "eos_token_id": own.get("eos_token_id"),
        }
        published = config["vocab_size"]
        config["vocab_size"] = max(vocab, own.get("vocab_size", vocab))
        note = (
            f"{shape}'s shape (public config values) with the tokenizer of {tokenizer_dir.name}: "
            f"vocabulary {config['vocab_size']} instead of {published}, every other layer as "
            "published."
        )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "README.md").write_text(
        f"# Random-weight model folder ({shape})\n\n{note}\nNo weights: load it with vLLM's "
        "`load_format: dummy`, for throughput only.\n"
    )
    return out


def main() -> None:
    from synth_ray.engine.models import prepare_embedded_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", default="embedded", help=f"embedded, {', '.join(SHAPES)}")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a local model folder")
    args = parser.parse_args()
    tokenizer = args.tokenizer or Path(prepare_embedded_model())
    print(make_random_model(args.out, args.shape, tokenizer))


if __name__ == "__main__":
    main()
