"""A folder of BVH clips as a training library: loading, held-out split, windows, feature normalisation."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared.errors import InputError

from ..formats.paths import is_hidden
from .bvh import read_bvh
from .skeleton import Motion, Skeleton

# `{prefix}_{content}_{style}_{id}`, as in Bandai-Namco's `dataset-1_walk-back_tired_001.bvh`
LABELLED_NAME = re.compile(r"^(?P<prefix>[^_]+)_(?P<content>[^_]+)_(?P<style>[^_]+)_(?P<id>\d+)$")


@dataclass
class Library:
    """Clips sharing one skeleton; `labels[i]` is clip i's text label ("walk back, tired") or None."""

    skeleton: Skeleton
    motions: list[Motion]
    files: list[Path]
    labels: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.motions)

    @property
    def fps(self) -> float:
        """The clips' common frame rate; InputError when they differ (this module resamples nothing)."""
        rates = sorted({round(m.fps, 3) for m in self.motions})
        if len(rates) != 1:
            raise InputError(f"Clips have different frame rates {rates}; resample them to one rate first")
        return self.motions[0].fps

    def subset(self, indices: list[int]) -> Library:
        return Library(
            self.skeleton,
            [self.motions[i] for i in indices],
            [self.files[i] for i in indices],
            [self.labels[i] for i in indices],
        )


def label_from_filename(path: str | Path) -> str | None:
    """The text label a clip's file name gives: "content, style" from a `{prefix}_{content}_{style}_{id}` name
    (Bandai-Namco's; hyphens read as spaces), else the name's words without numbers, lower case
    (`Walk_Tired_03.bvh` → "walk tired"); None when the name is only numbers."""
    stem = Path(path).stem
    match = LABELLED_NAME.match(stem)
    if match is not None:
        return f"{match['content'].replace('-', ' ')}, {match['style'].replace('-', ' ')}"
    words = [w for w in re.split(r"[\s_\-.]+", stem.lower()) if w and not w.isdigit()]
    return " ".join(words) or None


def load_library(folder: str | Path, labels_from_filenames: bool = False) -> Library:
    """Every `*.bvh` in `folder` and its subfolders (sorted by path); InputError naming the first clip whose
    skeleton differs."""
    folder = Path(folder)
    files = sorted(
        (f for f in folder.rglob("*.bvh") if not is_hidden(f, folder)), key=lambda f: f.relative_to(folder).parts
    )  # hidden files and folders (macOS's ._ companions, .git) are not clips
    if not files:
        raise InputError(f"No .bvh files in {folder} or its subfolders")
    motions = [read_bvh(f) for f in files]
    first = motions[0].skeleton
    for f, m in zip(files[1:], motions[1:], strict=True):
        diff = first.difference(m.skeleton)
        if diff is not None:
            raise InputError(
                f"{f.relative_to(folder)} does not share the skeleton of {files[0].relative_to(folder)}: {diff}. "
                "A model learns one skeleton: keep one skeleton's clips in the folder (retarget the others)."
            )
    labels = [label_from_filename(f) if labels_from_filenames else None for f in files]
    return Library(first, motions, files, labels)


def split(library: Library, held_out_fraction: float = 0.1, seed: int = 0) -> tuple[Library, Library]:
    """(train, held out), deterministic from file names and `seed`. Clips are grouped by content label (or
    all in one group without labels) and each group gives up about `held_out_fraction` of its clips."""
    if not 0.0 <= held_out_fraction < 1.0:
        raise InputError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(library.labels or [None] * len(library)):
        groups.setdefault(label.split(",")[0] if label else "", []).append(i)
    held: list[int] = []
    for content, members in sorted(groups.items()):
        ranked = sorted(members, key=lambda i: _hash01(f"{seed}:{library.files[i].name}"))
        # a hash-drawn fractional part keeps the expected count at fraction × size for small groups too
        count = int(np.floor(held_out_fraction * len(members) + _hash01(f"{seed}:group:{content}")))
        held += ranked[:count]
    held_set = set(held)
    train = [i for i in range(len(library)) if i not in held_set]
    return library.subset(train), library.subset(sorted(held))


def windows(features: np.ndarray, length: int, stride: int) -> np.ndarray:
    """(N, length, D) windows of (T, D) features every `stride` frames; N = 0 when T < length."""
    t, d = features.shape
    if t < length:
        return np.zeros((0, length, d), dtype=features.dtype)
    view = np.lib.stride_tricks.sliding_window_view(features, length, axis=0)  # (T - length + 1, D, length)
    return np.ascontiguousarray(view[::stride].transpose(0, 2, 1))


@dataclass
class Normalizer:
    """Per-dimension mean and std (floored so constant dimensions do not blow up): x' = (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray | list[np.ndarray], floor: float = 1e-2) -> Normalizer:
        """Fit on (..., D) features or a list of (T_i, D) clips."""
        if isinstance(features, list):
            features = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features], axis=0)
        flat = np.asarray(features, dtype=np.float64).reshape(-1, features.shape[-1])
        return cls(flat.mean(0).astype(np.float32), np.maximum(flat.std(0), floor).astype(np.float32))

    def apply(self, x):
        mean, std = self._like(x)
        return (x - mean) / std

    def invert(self, x):
        mean, std = self._like(x)
        return x * std + mean

    def to_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray]) -> Normalizer:
        return cls(np.asarray(arrays["mean"], dtype=np.float32), np.asarray(arrays["std"], dtype=np.float32))

    def _like(self, x):
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(self.mean, device=x.device).to(x.dtype), torch.as_tensor(
                self.std, device=x.device
            ).to(x.dtype)
        return self.mean, self.std


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64
