"""Skeletons, joint motion and forward kinematics (numpy for data work, torch for training losses).

A `Skeleton` is the rest hierarchy: names, parents (parents listed before children) and rest offsets from
the parent. A `Motion` is a clip on it: local joint rotations as unit quaternions (w, x, y, z) in the BVH
convention — the rest pose (all rotations identity) has every joint frame aligned with the world, and
`global = parent_global · local`, `position = parent_position + parent_global · translation` — plus the
root's position per frame and, when the source file animates them, the local translations of the other
joints (BVH files may carry position channels on any joint; Bandai-Namco's carry them on all of them).
Rotation helpers live in `rotations.py`; quaternions follow scipy's Euler conventions there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from shared.errors import InputError

from .rotations import matrix_to_quat, matrix_to_quat_torch, quat_to_matrix, quat_to_matrix_torch


@dataclass(frozen=True, eq=False)
class Skeleton:
    """Rest hierarchy. `parents` (J,) int32, -1 for the root, parents before children; `offsets` (J, 3)
    float32, rest translation from the parent (the root's is its rest position); `end_sites` maps a joint
    to the offset of its BVH End Site, kept so that exported files carry them."""

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        parents = np.asarray(self.parents, dtype=np.int32)
        offsets = np.asarray(self.offsets, dtype=np.float32).reshape(-1, 3)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "offsets", offsets)
        n = len(self.names)
        if parents.shape != (n,) or offsets.shape != (n, 3):
            raise InputError(f"Skeleton has {n} names, {parents.shape[0]} parents and {offsets.shape[0]} offsets")
        if n == 0 or parents[0] != -1:
            raise InputError("Skeleton needs a root joint first (parent -1)")
        bad = [j for j in range(1, n) if not 0 <= parents[j] < j]
        if bad:
            raise InputError(f"Joint {self.names[bad[0]]!r} is listed before its parent (or has none)")

    @property
    def n_joints(self) -> int:
        return len(self.names)

    def children(self, j: int) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.parents == j)]

    def leaves(self) -> list[int]:
        has_child = np.zeros(self.n_joints, dtype=bool)
        has_child[self.parents[1:]] = True
        return [int(j) for j in np.flatnonzero(~has_child)]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"Skeleton has no joint {name!r}") from None

    def rest_positions(self) -> np.ndarray:
        """Global joint positions (J, 3) in the rest pose (identity rotations, root at its offset)."""
        pos = np.zeros((self.n_joints, 3), dtype=np.float64)
        for j in range(self.n_joints):
            p = self.parents[j]
            pos[j] = self.offsets[j] + (pos[p] if p >= 0 else 0.0)
        return pos

    def rest_extent(self) -> float:
        """Largest side of the rest pose's bounding box: the skeleton's size, for scale-free tolerances."""
        pos = self.rest_positions()
        return float((pos.max(0) - pos.min(0)).max())

    def difference(self, other: Skeleton) -> str | None:
        """The first structural difference from `other` in words, or None when they match (names, parents)."""
        if self.n_joints != other.n_joints:
            return f"{self.n_joints} joints vs {other.n_joints}"
        for j, (a, b) in enumerate(zip(self.names, other.names, strict=True)):
            if a != b:
                return f"joint {j} is {a!r} vs {b!r}"
        for j in range(self.n_joints):
            if self.parents[j] != other.parents[j]:
                pa, pb = (self.names[p] if p >= 0 else "none" for p in (self.parents[j], other.parents[j]))
                return f"joint {self.names[j]!r} has parent {pa!r} vs {pb!r}"
        return None

    def matches(self, other: Skeleton) -> bool:
        return self.difference(other) is None

    def check_same(self, other: Skeleton, what: str = "skeleton") -> None:
        """Raise InputError naming the first difference between the two hierarchies."""
        diff = self.difference(other)
        if diff is not None:
            raise InputError(f"{what} does not match: {diff}")


SCALE_TOLERANCE = 1.6  # a skeleton this many times larger or smaller than the model's is in other units (actors
# differ by about ±15 %; inches against centimetres is 2.54×, metres 100×)


def check_same_units(size: float, model_size: float, what: str, how: str) -> None:
    """InputError when a skeleton of `size` (any measure of it) is over SCALE_TOLERANCE× larger or smaller than the
    model's `model_size` (the same measure): in other units, which a model in-betweens into nonsense."""
    scale = size / model_size
    if not 1 / SCALE_TOLERANCE <= scale <= SCALE_TOLERANCE:
        raise InputError(
            f"The {what} is {scale:.3g}× the size of the model's ({size:.4g} against {model_size:.4g} units): it is in "
            f"other units (metres against centimetres?). Scale it by {1 / scale:.3g} ({how}) so that its units are "
            "the model's"
        )


@dataclass
class Motion:
    """A clip: `rotations` (T, J, 4) float32 local unit quaternions (w, x, y, z); `root_positions` (T, 3)
    float32 in skeleton units; `translations` (T, J, 3) float32 local joint translations for files that
    animate them (row 0 unused: the root's is `root_positions`), else None and the rest offsets apply.
    `channels` keeps a BVH file's channel names per joint (see bvh.py) so that exporting an imported clip
    reproduces it; they are None for motions made in code."""

    skeleton: Skeleton
    rotations: np.ndarray
    root_positions: np.ndarray
    fps: float
    name: str = ""
    translations: np.ndarray | None = None
    channels: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self):
        self.rotations = np.asarray(self.rotations, dtype=np.float32)
        self.root_positions = np.asarray(self.root_positions, dtype=np.float32)
        t, j = self.rotations.shape[:2]
        if self.rotations.shape != (t, self.skeleton.n_joints, 4) or self.root_positions.shape != (t, 3):
            raise InputError(
                f"Motion {self.name!r}: rotations {self.rotations.shape} and root positions "
                f"{self.root_positions.shape} do not fit {self.skeleton.n_joints} joints"
            )
        if self.translations is not None:
            self.translations = np.asarray(self.translations, dtype=np.float32)
            if self.translations.shape != (t, j, 3):
                raise InputError(f"Motion {self.name!r}: translations {self.translations.shape}, want {(t, j, 3)}")

    @property
    def n_frames(self) -> int:
        return self.rotations.shape[0]

    def copy(self) -> Motion:
        """The same clip with its own arrays (the skeleton and channel layout are shared: they are immutable)."""
        return self.frames(0, self.n_frames)

    def frames(self, start: int, stop: int) -> Motion:
        """Frames [start, stop) as a clip of its own (copied arrays, same skeleton and channel layout)."""
        return Motion(
            self.skeleton,
            self.rotations[start:stop].copy(),
            self.root_positions[start:stop].copy(),
            self.fps,
            self.name,
            None if self.translations is None else self.translations[start:stop].copy(),
            self.channels,
        )

    def local_translations(self) -> np.ndarray:
        """(T, J, 3) translation of every joint from its parent, root's = root position."""
        if self.translations is not None:
            out = self.translations.copy()
        else:
            out = np.broadcast_to(self.skeleton.offsets, (self.n_frames, self.skeleton.n_joints, 3)).copy()
        out[:, 0] = self.root_positions
        return out

    def global_positions(self) -> np.ndarray:
        """(T, J, 3) float32 global joint positions."""
        return forward_kinematics(self.skeleton, self.rotations, self.root_positions, self.local_translations())[0]


def forward_kinematics(
    skeleton: Skeleton,
    rotations: np.ndarray,
    root_positions: np.ndarray,
    translations: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Global joint positions (..., J, 3) and global rotations (..., J, 4) from local rotations (..., J, 4)
    and root positions (..., 3). `translations` (..., J, 3) replaces the rest offsets when given (its root
    row is ignored). Computed in float64, returned as float32."""
    rot = quat_to_matrix(np.asarray(rotations, dtype=np.float64))
    trans = _translations(skeleton, rotations.shape[:-2], translations)
    trans[..., 0, :] = root_positions
    gpos, grot = _chain(skeleton.parents, rot, trans)
    return gpos.astype(np.float32), matrix_to_quat(grot).astype(np.float32)


def forward_kinematics_torch(
    skeleton: Skeleton,
    rotations: torch.Tensor,
    root_positions: torch.Tensor,
    translations: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable twin of `forward_kinematics`: rotations (..., J, 4) quaternions or (..., J, 3, 3)
    matrices, root positions (..., 3) → global positions (..., J, 3), global rotation matrices (..., J, 3, 3)."""
    rot = rotations if rotations.shape[-1] == 3 else quat_to_matrix_torch(rotations)
    lead = rot.shape[:-3]
    if translations is None:
        offsets = torch.as_tensor(skeleton.offsets, dtype=rot.dtype, device=rot.device)
        translations = offsets.expand(lead + offsets.shape)
    trans = torch.cat([root_positions[..., None, :], translations[..., 1:, :]], dim=-2)
    return _chain(skeleton.parents, rot, trans)


def global_rotations_torch(skeleton: Skeleton, rotations: torch.Tensor) -> torch.Tensor:
    """Global rotation quaternions (..., J, 4) from local ones, differentiable (for rotation losses)."""
    zeros = torch.zeros(rotations.shape[:-2] + (3,), dtype=rotations.dtype, device=rotations.device)
    return matrix_to_quat_torch(forward_kinematics_torch(skeleton, rotations, zeros)[1])


def _translations(skeleton: Skeleton, lead: tuple[int, ...], translations) -> np.ndarray:
    if translations is None:
        return np.broadcast_to(skeleton.offsets.astype(np.float64), lead + (skeleton.n_joints, 3)).copy()
    return np.array(translations, dtype=np.float64)


def _chain(parents: np.ndarray, rot, trans):
    """Walk the hierarchy once (parents before children), vectorised over frames and batch."""
    grot = [rot[..., 0, :, :]]
    gpos = [trans[..., 0, :]]
    for j in range(1, len(parents)):
        p = parents[j]
        grot.append(grot[p] @ rot[..., j, :, :])
        gpos.append(gpos[p] + (grot[p] @ trans[..., j, :, None])[..., 0])
    stack = np.stack if isinstance(rot, np.ndarray) else torch.stack
    return stack(gpos, -2), stack(grot, -3)
