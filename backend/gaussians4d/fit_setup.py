"""What a fit starts from: the video as tensors on the fitting device, its background colour, and initial
Gaussians (points carved from the alpha masks at the first time, coloured from the images)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Frames:
    """The video as tensors on the fitting device, grouped by time."""

    images: torch.Tensor  # (F,H,W,3)
    alphas: torch.Tensor | None  # (F,H,W,1)
    viewmats: torch.Tensor  # (F,4,4)
    Ks: torch.Tensor  # (F,3,3)
    times: np.ndarray  # (T,) sorted distinct
    groups: list[np.ndarray]  # entry indices of each time
    width: int
    height: int


def prepare_frames(video, max_size: int, device: torch.device) -> Frames:
    images = torch.as_tensor(np.asarray(video.images, dtype=np.float32))
    alphas = None if video.alphas is None else torch.as_tensor(np.asarray(video.alphas, dtype=np.float32))[..., None]
    Ks = np.array(video.cameras.Ks, dtype=np.float32)
    h, w = images.shape[1:3]
    scale = min(1.0, max_size / max(h, w))
    if scale < 1.0:
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        images = F.interpolate(images.permute(0, 3, 1, 2), size=(nh, nw), mode="area").permute(0, 2, 3, 1)
        if alphas is not None:
            alphas = F.interpolate(alphas.permute(0, 3, 1, 2), size=(nh, nw), mode="area").permute(0, 2, 3, 1)
        Ks[:, 0] *= nw / w
        Ks[:, 1] *= nh / h
        h, w = nh, nw
    times = np.unique(video.times)
    groups = video.time_groups()
    return Frames(
        images.to(device).contiguous(),
        None if alphas is None else alphas.to(device).contiguous(),
        torch.as_tensor(np.asarray(video.cameras.viewmats, dtype=np.float32), device=device),
        torch.as_tensor(Ks, device=device),
        times.astype(np.float32),
        groups,
        w,
        h,
    )


def background_colour(video) -> tuple[float, float, float]:
    """The colour the images were composited over: mean where alpha ≈ 0, else the median border colour."""
    images = np.asarray(video.images)
    if video.alphas is not None:
        empty = np.asarray(video.alphas) < 0.01
        if empty.any():
            return tuple(float(c) for c in images[empty].mean(axis=0))
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    return tuple(float(c) for c in np.median(border.reshape(-1, 3), axis=0))


def sample_colors(video, points: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Mean image colour where `points` (P,3) project in the given entries (ignoring those outside)."""
    cams = video.cameras.subset(entries)
    xy, depth = cams.project(points)
    total = np.zeros((len(points), 3))
    count = np.zeros((len(points), 1))
    for k, e in enumerate(entries):
        col = np.nan_to_num(np.floor(xy[k, :, 0]), nan=-1).astype(np.int64)
        row = np.nan_to_num(np.floor(xy[k, :, 1]), nan=-1).astype(np.int64)
        ok = (depth[k] > 0) & (col >= 0) & (col < cams.width) & (row >= 0) & (row < cams.height)
        total[ok] += video.images[e][row[ok], col[ok]]
        count[ok] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def initial_points(video, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points inside the object at the first time (a moving camera's first time window): carved from its
    alpha masks, drawn in its box at that time (`start_bounds`: a small object that travels fills a small share of
    its whole path's box), else in its bounds."""
    if video.alphas is None:
        lo, hi = (np.asarray(b, dtype=np.float64) for b in video.bounds())
        return rng.uniform(lo, hi, size=(count, 3)).astype(np.float32)
    lo, hi = (np.asarray(b, dtype=np.float64) for b in video.start_bounds())
    first = video.time_windows()[0]
    cams = video.cameras.subset(first)
    kept: list[np.ndarray] = []
    for _ in range(20):  # rejection sampling; a thin object keeps a small share of the box
        cand = rng.uniform(lo, hi, size=(count * 4, 3))
        xy, depth = cams.project(cand)
        col = np.nan_to_num(np.floor(xy[..., 0]), nan=-1).astype(np.int64)
        row = np.nan_to_num(np.floor(xy[..., 1]), nan=-1).astype(np.int64)
        inside = (depth > 0) & (col >= 0) & (col < cams.width) & (row >= 0) & (row < cams.height)
        for k, e in enumerate(first):
            mask = np.asarray(video.alphas[e]) > 0.5
            inside[k] &= mask[np.clip(row[k], 0, cams.height - 1), np.clip(col[k], 0, cams.width - 1)]
        kept.append(cand[inside.all(axis=0)])
        if sum(len(k) for k in kept) >= count:
            break
    points = np.concatenate(kept)[:count]
    if len(points) < 16:  # masks that disagree (or an object that does not fill them): fall back to the box
        return rng.uniform(lo, hi, size=(count, 3)).astype(np.float32)
    return points.astype(np.float32)


def knn_scale(points: np.ndarray) -> np.ndarray:
    """Per-point distance to the 3 nearest neighbours (the usual 3DGS initial scale)."""
    from scipy.spatial import cKDTree

    if len(points) < 4:
        return np.full(len(points), 0.01, dtype=np.float32)
    d, _ = cKDTree(points).query(points, k=4)
    return np.maximum(np.sqrt((d[:, 1:] ** 2).mean(axis=1)), 1e-6).astype(np.float32)
