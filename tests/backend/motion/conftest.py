"""A tiny motion model trained once per test session on four real Bandai-Namco clips (labels from the file
names), for the wire, plugin and CLI tests. Other test folders load this file by path (`tiny_model_dir`)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

BANDAI = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "motion" / "bandai-namco-1" / "data"
TINY_CLIPS = [
    BANDAI / "dataset-1_walk_tired_001.bvh",  # 247 frames
    BANDAI / "dataset-1_bow_active_001.bvh",  # 128
    BANDAI / "dataset-1_dash_not-confident_001.bvh",  # 99
    BANDAI / "dataset-1_run_tired_001.bvh",  # 133
]
TINY_TOKENIZER = {
    "group_width": 16,
    "width": 32,
    "depth": 1,
    "codebook_size": 32,
    "code_dim": 8,
    "linear_path": True,
    "n_quantizers": 3,
}
TINY_TRANSFORMER = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ff": 64}
TINY_RESIDUAL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ff": 64}
TINY_WINDOW = 32
TINY_CONFIG = {
    "tokenizer_steps": 30,
    "transformer_steps": 30,
    "window": TINY_WINDOW,
    "tokenizer_batch": 8,
    "transformer_batch": 8,
    "transformer_window": 32,
    "tokenizer": TINY_TOKENIZER,
    "transformer": TINY_TRANSFORMER,
    "residual_steps": 20,
    "residual_transformer": TINY_RESIDUAL,
}


def tiny_clip_dir(base: Path) -> Path:
    folder = base / "tiny-motion-clips"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for clip in TINY_CLIPS:
            shutil.copy(clip, folder / clip.name)
    return folder


def tiny_model_dir(base: Path) -> Path:
    """Train (once per `base`) and return the tiny model's folder."""
    from backend.motion.dataset import load_library
    from backend.motion.train import TrainConfig, train

    out = base / "tiny-motion-model"
    if not (out / "model.safetensors").is_file():
        library = load_library(tiny_clip_dir(base), labels_from_filenames=True)
        with one_thread():
            train(library, out, TrainConfig(**TINY_CONFIG))
    return out


@contextmanager
def one_thread():
    """Tiny models train and run faster on one torch thread (and far faster on busy cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory) -> Path:
    return tiny_clip_dir(tmp_path_factory.getbasetemp())
