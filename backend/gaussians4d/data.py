"""Multi-view video in and out: the NeRF / D-NeRF `transforms.json` folder convention.

A folder holds `transforms_{split}.json` (or `transforms.json` for the training split) and the images it
names. Each entry of `frames` is one image of one camera at one time:

    {"camera_angle_x": 0.69,                       # or fl_x / fl_y / cx / cy, here or per entry
     "frames": [{"file_path": "./train/r_000",     # ".png" is tried when there is no extension
                 "time": 0.0,                       # in [0, 1]: 0 = first frame, 1 = last
                 "transform_matrix": [[...4x4...]]  # camera → world, OpenGL (x right, y up, looking −Z)
                }, ...]}

`load_transforms` checks everything a fit needs before it returns (files, sizes, times, at least two
views, every camera seeing the object), so a bad folder fails in a second with a message naming the entry,
never after minutes of optimisation. `write_transforms` writes the same layout (RGBA PNGs when there is
alpha) and is what the Blender capture and `benchmarks/render_views.py` produce.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import InputError

from .cameras import Cameras, cameras_from_nerf, nerf_c2w

ALPHA_THRESHOLD = 0.5  # a pixel belongs to the object's silhouette above this alpha
_GRID = 40  # voxels per side for the bounds' carving (two passes: coarse box, then refined)
_INTRINSIC_KEYS = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy")
_SIZE_KEYS = ("w", "h")  # the image size the pixel intrinsics refer to (nerfstudio), when given
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIME_TOLERANCE = 1e-4  # times closer than this are one time (float rounding between views: 0.3333333 / 0.33333334)
KEY_LOW, KEY_HIGH = 0.03, 0.12  # keyed alpha: 0 within KEY_LOW of the background colour, 1 beyond KEY_HIGH
PLAIN_BORDER = 0.98  # a background is plain when this share of the border pixels is within KEY_LOW of one colour
WINDOW_VIEWS = 4  # a moving camera's consecutive images are taken as one time until they hold this many poses


@dataclass
class MultiViewVideo:
    """Images of one scene from several cameras over time: one entry per (view, time).

    images (F, H, W, 3) float32 in [0, 1], composited over the background they were loaded with;
    alphas (F, H, W) float32 in [0, 1] or None; cameras: F cameras (OpenCV viewmats + pixel Ks), one per
    entry; times (F,) float32 in [0, 1]; names: each entry's `file_path` as written in the json.
    """

    images: np.ndarray
    alphas: np.ndarray | None
    cameras: Cameras
    times: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def time_values(self) -> np.ndarray:
        """(T,) float32 sorted distinct times."""
        return np.unique(self.times).astype(np.float32)

    def view_count(self) -> int:
        """The number of distinct camera poses."""
        return len(_pose_groups(self.cameras.viewmats))

    def describe(self) -> str:
        """'8 views × 16 times', '8 moving views × 16 times' for a rig that moves (a capture ring following the
        object), or for a moving camera (a pose per image) '24 camera poses, 24 times'."""
        views, times = self.view_count(), len(self.time_values())
        if views * times == len(self):
            return f"{views} views × {times} times"
        per_time = set(self._poses_per_time())
        if len(per_time) == 1 and min(per_time) >= 2 and min(per_time) * times == len(self):
            return f"{min(per_time)} moving views × {times} times"
        return f"{views} camera poses, {times} times"

    def still_warning(self) -> str | None:
        """A warning when the video has several times but nothing moves: every camera sees the same image (to
        1/255) at all its times. The fit then makes a still splat and mesh, which is rarely what was meant."""
        if len(self.time_values()) < 2:
            return None
        compared = False  # a camera seen at two times or more (not so in a monocular video: one pose per image)
        for group in _pose_groups(self.cameras.viewmats):
            if len(np.unique(self.times[group])) > 1:
                compared = True
                if np.abs(self.images[group] - self.images[group[:1]]).max() > 1 / 255:
                    return None
        if not compared:
            return None
        return (
            "nothing moves over the captured times (every view's images are the same at all of them): the result "
            "is a still splat and mesh. Animate the object over the frame range, or capture the animated one."
        )

    def empty_warning(self) -> str | None:
        """A warning naming the images in which the object is nowhere (alpha 0 everywhere) when others show it:
        the fit takes the object as absent from that view at that time, right for an object that leaves the
        frame, wrong for a render that failed."""
        if self.alphas is None:
            return None
        empty = np.flatnonzero(~(self.alphas > ALPHA_THRESHOLD).reshape(len(self), -1).any(axis=1))
        if len(empty) == 0 or len(empty) == len(self):
            return None
        named = ", ".join(self.names[i] for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
        return (
            f"{len(empty)} of {len(self)} images are fully transparent ({named}): the object is fitted as absent "
            "from those views at those times. If it is in view there, re-render them (a failed render?) or remove "
            "their entries."
        )

    def fixed_cameras(self) -> bool:
        """Whether every time is seen from two camera poses or more (a rig of cameras, the Blender capture), as
        opposed to a moving camera (monocular video: D-NeRF's scenes), where one image does not fix depth."""
        return min(self._poses_per_time()) >= 2

    def cameras_move(self) -> bool:
        """Whether the cameras are somewhere else at another time (a moving camera, or a capture ring that follows
        the object), as opposed to a rig that stays put."""
        return self.view_count() > max(self._poses_per_time())

    def _poses_per_time(self) -> list[int]:
        """The number of distinct camera poses at each time, in time order."""
        return [len(_pose_groups(self.cameras.viewmats[g])) for g in self.time_groups()]

    def time_groups(self) -> list[np.ndarray]:
        """Entry indices of each distinct time, in time order."""
        return [np.flatnonzero(self.times == t) for t in np.unique(self.times)]

    def time_windows(self) -> list[np.ndarray]:
        """Entry indices seen as one time: each time's own with fixed cameras; for a moving camera, consecutive
        times merged until a window holds WINDOW_VIEWS camera poses (the object moves little over a few
        consecutive images, so they act as views of one time for the silhouettes: hull and rigid start)."""
        groups = self.time_groups()
        if self.fixed_cameras():
            return groups
        windows: list[np.ndarray] = []
        current = np.zeros(0, np.int64)
        for group in groups:
            current = np.concatenate([current, group])
            if len(_pose_groups(self.cameras.viewmats[current])) >= WINDOW_VIEWS:
                windows.append(current)
                current = np.zeros(0, np.int64)
        if len(current):
            windows = [*windows[:-1], np.concatenate([windows[-1], current])] if windows else [current]
        return windows

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The object's world bounding box (min (3,), max (3,)) over all times.

        With alphas: the visual hull, i.e. the points inside every view's silhouette (the union of that
        view's alpha masks over time), so the box holds the object at every time. Without alphas: the
        region every camera sees (the intersection of the view frusta), around the point the cameras look
        at. Both are carved on a voxel grid twice (coarse box, then refined); the result is padded by one
        voxel. Cameras that move (a moving camera, a capture ring following the object) see each place once: their
        views of different times would carve the moving object away, so there the box holds the hulls of the
        time windows (`time_windows`).
        """
        if self.alphas is not None and (not self.fixed_cameras() or self.cameras_move()):
            boxes = [box for _, box in self.window_bounds()]
            return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
        return self._hull_bounds()

    def window_bounds(self) -> list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
        """(entries, (min, max)) of each time window (`time_windows`): the object's box there, as `bounds`."""
        return [(w, self._subset(w)._hull_bounds()) for w in self.time_windows()]

    def start_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The object's bounding box at the start: as `bounds`, over the first time window only."""
        return self._subset(self.time_windows()[0])._hull_bounds()

    def _subset(self, entries: np.ndarray) -> MultiViewVideo:
        alphas = None if self.alphas is None else self.alphas[entries]
        names = [self.names[i] for i in entries]
        return MultiViewVideo(self.images[entries], alphas, self.cameras.subset(entries), self.times[entries], names)

    def _hull_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        groups = _pose_groups(self.cameras.viewmats)
        views = self.cameras.subset(np.array([g[0] for g in groups]))
        masks = None
        if self.alphas is not None:
            masks = np.stack([(self.alphas[g] > ALPHA_THRESHOLD).any(axis=0) for g in groups])
        centre = _look_at_point(views)
        half = float(np.linalg.norm(views.centers() - centre, axis=1).max()) or 1.0
        lo, hi = centre - half, centre + half
        for use_masks in (False, True) if masks is not None else (False,):
            for _ in range(2):
                box = _carve(views, masks if use_masks else None, lo, hi)
                if box is None:
                    break
                lo, hi = box
        return lo.astype(np.float32), hi.astype(np.float32)


def _pose_groups(viewmats: np.ndarray) -> list[np.ndarray]:
    """Entry indices grouped by camera pose (equal up to 1e-5 of the scene's scale), in first-seen order."""
    v = np.asarray(viewmats, np.float64).reshape(len(viewmats), 16)
    scale = max(float(np.abs(v[:, [3, 7, 11]]).max(initial=0.0)), 1.0)
    keys = np.round(v / (1e-5 * scale)).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]


def _look_at_point(views: Cameras) -> np.ndarray:
    """The point nearest to all optical axes in the least-squares sense (the cameras' common target)."""
    centres = views.centers().astype(np.float64)
    forward = np.linalg.inv(np.asarray(views.viewmats, np.float64))[:, :3, 2]  # OpenCV +z in world
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    projectors = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    a = projectors.sum(axis=0)
    b = (projectors @ centres[:, :, None]).sum(axis=0)[:, 0]
    point, *_ = np.linalg.lstsq(a, b, rcond=None)
    return point


def _carve(
    views: Cameras, masks: np.ndarray | None, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The bounding box of the grid points in [lo, hi] that every view sees (and, with masks, inside
    every silhouette), padded by one voxel; None when no point is left."""
    axes = [np.linspace(lo[i], hi[i], _GRID) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    xy, depth = views.project(points)
    xy = np.clip(np.nan_to_num(xy, nan=-1.0), -1.0, 1e7)  # behind the camera: NaN
    col, row = np.floor(xy[..., 0]).astype(np.int64), np.floor(xy[..., 1]).astype(np.int64)
    inside = (depth > 0) & (col >= 0) & (col < views.width) & (row >= 0) & (row < views.height)
    if masks is not None:
        h, w = masks.shape[1:]
        c = np.clip(col * w // views.width, 0, w - 1)
        r = np.clip(row * h // views.height, 0, h - 1)
        inside &= masks[np.arange(len(masks))[:, None], r, c]
    kept = points[inside.all(axis=0)]
    if len(kept) == 0:
        return None
    voxel = (np.asarray(hi) - np.asarray(lo)) / (_GRID - 1)
    return kept.min(axis=0) - voxel, kept.max(axis=0) + voxel


# -- reading ---------------------------------------------------------------------------------------


def load_transforms(
    folder: str | Path,
    split: str = "train",
    *,
    max_size: int | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    min_views: int | None = None,
) -> MultiViewVideo:
    """Load `folder/transforms_{split}.json` (`transforms.json` for "train" when that is missing).

    Images larger than `max_size` (longest side, pixels) are downscaled by area averaging (intrinsics
    follow). RGBA images give alphas and are composited over `background` (RGB in [0, 1]). An entry's
    `mask_path` (nerfstudio's key: a greyscale image of the image's size, white = the object, black = pixels
    not to fit) multiplies its alpha.

    Raises InputError, before returning, for: a missing folder or json, an unreadable json, entries
    without `file_path` / `transform_matrix` / `time`, times outside [0, 1], missing image files,
    images of different sizes, fewer than `min_views` distinct camera poses (default: 2 for "train", which a
    fit needs, 1 for other splits, e.g. one held-out test view), and cameras that do not see the object
    (checked when there are 2 views or more: the object's bounds need them).
    """
    folder = Path(folder)
    json_path = _json_path(folder, split)
    meta = _read_json(json_path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{json_path} has no 'frames' list: it needs one entry per image (file_path, time, ...).")
    names, c2w, times, intrinsics = parse_entries(json_path, meta, frames)
    masks = _mask_paths(json_path, frames)
    images, alphas, original_hw = _load_images(folder, json_path, names, masks, max_size, background)
    if alphas is not None and not (alphas > ALPHA_THRESHOLD).any():
        raise InputError(
            f"{json_path.name}: every image is fully transparent (alpha 0 everywhere), so the object is in none "
            "of them: re-render with the object in view, or export without alpha if the object is opaque."
        )
    cameras = entry_cameras(c2w, intrinsics, original_hw, images.shape[1:3], json_path)
    video = MultiViewVideo(images, alphas, cameras, times, names)
    _check_views(video, json_path, (2 if split == "train" else 1) if min_views is None else min_views)
    return video


def _json_path(folder: Path, split: str) -> Path:
    if folder.is_file() and folder.suffix.lower() == ".json":
        raise InputError(
            f"{folder} is a file: give the folder that holds it ({folder.parent}); the splits are found there by "
            "name (transforms_train.json or transforms.json, transforms_test.json)."
        )
    if not folder.is_dir():
        raise InputError(f"Multi-view folder {folder} does not exist: give the folder that holds transforms_*.json.")
    path = folder / f"transforms_{split}.json"
    if path.is_file():
        return path
    if split == "train" and (folder / "transforms.json").is_file():
        return folder / "transforms.json"
    present = sorted(p.name for p in folder.glob("transforms*.json"))
    also = f" (found: {', '.join(present)})" if present else ""
    raise InputError(
        f"{folder} has no transforms_{split}.json{also}: a D-NeRF folder holds transforms_train.json "
        "(or transforms.json) and transforms_test.json next to the images."
    )


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: Windows editors may start it with a BOM
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}): fix or regenerate the file.") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path} holds a {type(meta).__name__}, not an object with 'frames'.")
    return meta


def _entry_name(i: int, frame: dict) -> str:
    path = frame.get("file_path") if isinstance(frame, dict) else None
    return f"entry {i} ('{path}')" if path else f"entry {i}"


def parse_entries(json_path: Path, meta: dict, frames: list) -> tuple[list[str], np.ndarray, np.ndarray, list]:
    """(file_paths, c2w (F,4,4) f64, times (F,) f32, per-entry intrinsics) of a transforms json's `frames`,
    each checked (InputError naming the json and the entry). Intrinsics merge the json's top level with the
    entry's own keys: camera_angle_x or fl_x, optional fl_y / cx / cy, and w / h when given."""
    names, c2w, times, intrinsics = [], [], [], []
    for i, frame in enumerate(frames):
        where = f"{json_path.name}: {_entry_name(i, frame)}"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or not frame["file_path"]:
            raise InputError(f"{where} has no 'file_path': each entry names its image, e.g. './train/r_000'.")
        try:
            matrix = np.array(frame["transform_matrix"], np.float64)
        except (KeyError, TypeError, ValueError):
            matrix = None
        if matrix is None or matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise InputError(
                f"{where} needs a 'transform_matrix': a finite 4×4 camera→world matrix (OpenGL: x right, y up, "
                "looking −Z)."
            )
        if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
            raise InputError(
                f"{where} has a 'transform_matrix' that is not a camera pose (a rotation and a position, bottom "
                f"row 0 0 0 1): {np.round(matrix, 4).tolist()}."
            )
        if "time" not in frame:
            hint = (
                " None of the entries has one: this looks like a static NeRF folder."
                if not any(isinstance(f, dict) and "time" in f for f in frames)
                else ""
            )
            raise InputError(
                f"{where} has no 'time': each entry of a multi-view video needs 'time' in [0, 1] "
                f"(0 = first frame, 1 = last).{hint}"
            )
        t = frame["time"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0.0 <= t <= 1.0:
            raise InputError(
                f"{where} has time {t!r}; it must be a number in [0, 1]: rescale the times so the first frame "
                "is 0 and the last 1."
            )
        own = {k: frame[k] for k in _INTRINSIC_KEYS if k in frame}
        merged = {k: meta[k] for k in _INTRINSIC_KEYS if k in meta} | own
        if "fl_x" in merged and not ("camera_angle_x" in own and "fl_x" not in own):
            merged.pop("camera_angle_x", None)  # pixels win over the angle, as in nerfstudio
        elif "camera_angle_x" in own:
            merged.pop("fl_x", None), merged.pop("fl_y", None)
        if "fl_x" in merged or "camera_angle_x" in merged:
            merged.pop("camera_angle_y", None)  # only for folders that give the vertical angle alone
        if not {"fl_x", "camera_angle_x", "camera_angle_y"} & set(merged):
            raise InputError(
                f"{where} has no focal length: give 'camera_angle_x' (radians) or 'fl_x' (pixels), at the top "
                "of the json or in the entry."
            )
        for k, v in merged.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{where}: '{k}' is {v!r}; it must be a positive number.")
        for key in ("camera_angle_x", "camera_angle_y"):
            if merged.get(key, 0.0) < math.pi:
                continue
            angle = merged[key]
            raise InputError(
                f"{where}: {key} is {angle}, but it is a field of view in radians, in (0, π). If it is in "
                f"degrees, write {math.radians(angle):.6g} (degrees × π / 180)."
            )
        size = {k: frame.get(k, meta.get(k)) for k in _SIZE_KEYS if frame.get(k, meta.get(k)) is not None}
        if size:
            if set(size) != set(_SIZE_KEYS) or any(
                isinstance(v, bool) or not isinstance(v, int | float) or v < 1 for v in size.values()
            ):
                raise InputError(f"{where}: 'w' and 'h' must both be given, as the image size in pixels; got {size}.")
            merged |= {k: float(v) for k, v in size.items()}
        names.append(frame["file_path"])
        c2w.append(matrix)
        times.append(t)
        intrinsics.append(merged)
    return names, np.stack(c2w), snap_times(np.array(times, np.float32)), intrinsics


_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")


def distortion_note(folder: str | Path, split: str = "train") -> str | None:
    """A note when the split's json gives lens distortion (nerfstudio's k1..k4, p1, p2 not 0, or a camera_model
    other than a pinhole): the fit's cameras are pinholes, so the images should be undistorted first. None if
    there is none (or no readable json: load_transforms says why)."""
    try:
        path = _json_path(Path(folder), split)
        meta = _read_json(path)
    except InputError:
        return None
    frames = meta.get("frames") if isinstance(meta.get("frames"), list) else []
    found, models = {}, set()
    for entry in (meta, *(f for f in frames if isinstance(f, dict))):
        for k in _DISTORTION_KEYS:
            v = entry.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool) and v != 0 and k not in found:
                found[k] = v
        if isinstance(entry.get("camera_model"), str) and entry["camera_model"].upper() not in _PINHOLE_MODELS:
            models.add(entry["camera_model"])
    if not found and not models:
        return None
    what = ", ".join([f"{k} = {v:g}" for k, v in found.items()] + [f"camera_model {m}" for m in sorted(models)])
    return (
        f"{path.name} gives lens distortion ({what}), which the fit ignores (its cameras are pinholes): the views "
        "will not quite line up, most near the edges. Undistort the images first (nerfstudio's ns-process-data, "
        "COLMAP's image_undistorter) and give their pinhole intrinsics."
    )


def snap_times(times: np.ndarray) -> np.ndarray:
    """(F,) float32 times with each run of times less than TIME_TOLERANCE apart replaced by the one most images
    have (the smallest of those on a tie), so that views written with float rounding between them (0.3333333 and
    0.33333334) share one time, as they were meant to."""
    times = np.asarray(times, np.float32)
    values, counts = np.unique(times, return_counts=True)
    if len(values) < 2:
        return times
    run = np.concatenate([[0], np.cumsum(np.diff(values.astype(np.float64)) >= TIME_TOLERANCE)])
    chosen = np.empty(run[-1] + 1, np.float32)
    for r in range(len(chosen)):
        members = np.flatnonzero(run == r)
        chosen[r] = values[members[np.argmax(counts[members])]]
    return chosen[run[np.searchsorted(values, times)]]


def keyed_alpha(images: np.ndarray, background) -> np.ndarray:
    """(..., H, W) float32 alpha of images over a known plain background: a pixel's largest channel distance from
    it, 0 below KEY_LOW, 1 above KEY_HIGH, linear between (soft edges)."""
    distance = np.abs(np.asarray(images, np.float32) - np.asarray(background, np.float32)).max(axis=-1)
    return np.clip((distance - KEY_LOW) / (KEY_HIGH - KEY_LOW), 0.0, 1.0).astype(np.float32)


def key_plain_background(video: MultiViewVideo) -> tuple[MultiViewVideo, str | None]:
    """A video without alpha gets alphas keyed from its background when that is one plain colour (what the
    border of the images shows), with a note saying so; otherwise it is returned as it is, with a warning that
    the background will be fitted too. A video with alphas is returned as it is, without a note."""
    if video.alphas is not None:
        return video, None
    images = np.asarray(video.images, np.float32)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1).reshape(-1, 3)
    colour = np.median(border, axis=0)
    plain = float((np.abs(border - colour).max(axis=-1) <= KEY_LOW).mean()) >= PLAIN_BORDER
    alphas = keyed_alpha(images, colour) if plain else None
    if alphas is None or not (alphas > ALPHA_THRESHOLD).any(axis=(1, 2)).all():
        return video, (
            "the images have no alpha (transparency) and their background is not one plain colour that the object "
            "could be told from: the background is fitted as part of the scene (splats fill the view, no mesh of "
            "the object alone, no silhouettes to start its motion from). Render with a transparent background "
            "(RGBA PNG) for a clean object, its motion and its mesh."
        )
    rgb = ", ".join(f"{c:.2f}" for c in colour)
    return MultiViewVideo(images, alphas, video.cameras, video.times, video.names), (
        f"the images have no alpha: the object was told from their plain background (RGB {rgb}) by colour. "
        "Give RGBA images to set its silhouettes yourself (parts of the object in the background's colour are "
        "taken for background)."
    )


def image_path(folder: Path, file_path: str) -> Path | None:
    """The image an entry names: `file_path` as written (Windows backslashes read as folders), else with .png,
    .jpg or .jpeg added (D-NeRF writes paths without an extension), else the one image file of that name with
    another image extension or its extension in another case ('r_000.PNG', a '.png' entry saved as '.jpg')."""
    path = folder / file_path.replace("\\", "/")
    for candidate in (path, *(path.with_name(path.name + s) for s in _IMAGE_SUFFIXES)):
        if candidate.is_file():
            return candidate
    if not path.parent.is_dir():
        return None
    stems = {path.name.lower()} | ({path.stem.lower()} if path.suffix.lower() in _IMAGE_SUFFIXES else set())
    found = [
        p
        for p in path.parent.iterdir()
        if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem.lower() in stems and p.is_file()
    ]
    return found[0] if len(found) == 1 else None


def _mask_paths(json_path: Path, frames: list) -> list[str | None]:
    """Each entry's `mask_path` (nerfstudio), or None where it has none."""
    masks = []
    for i, frame in enumerate(frames):
        mask = frame.get("mask_path")
        if mask is not None and (not isinstance(mask, str) or not mask):
            raise InputError(
                f"{json_path.name}: {_entry_name(i, frame)} has 'mask_path' {mask!r}; it must name a mask image "
                "(white = the object), or be left out."
            )
        masks.append(mask)
    return masks


def _read_mask(folder: Path, json_path: Path, i: int, name: str, mask: str, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in [0, 1] of entry i's mask image: its grey level, times its own alpha where it has one.
    A mask saved with the values 0 and 1 (not 0 and 255, so it looks black) is read as 0 and 1."""
    path = image_path(folder, mask)
    if path is None:
        raise InputError(
            f"{json_path.name}: the mask of entry {i} ('{name}') is missing: no {folder / mask} (nor with .png, "
            ".jpg or .jpeg added). Put the file there, fix its 'mask_path', or remove the key to fit without it."
        )
    rgb, alpha = _read_image(path)
    if rgb.shape[:2] != hw:
        raise InputError(
            f"{json_path.name}: the mask of entry {i} ('{name}'), {path.name}, is {rgb.shape[1]}×{rgb.shape[0]} "
            f"but its image is {hw[1]}×{hw[0]}: a mask must have its image's size."
        )
    grey = rgb.mean(axis=-1)
    if 0.0 < grey.max() <= 1.0 / 255.0 + 1e-6:  # 0/1 labels: 1 is the object
        grey = (grey > 0.0).astype(np.float32)
    return grey * alpha if alpha is not None else grey


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) float32 straight (not premultiplied) RGB and (H, W) alpha or None."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16") or mode == "I":
                gray = np.asarray(im, np.float32) / 65535.0
                return np.repeat(gray[..., None], 3, axis=-1), None
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), np.float32) / 255.0
    except OSError as exc:
        raise InputError(f"{path} is not a readable image ({exc}): re-export it as PNG.") from exc
    return (arr[..., :3], arr[..., 3]) if has_alpha else (arr, None)


def _resize(channels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, K) float32 → (h, w, K) by area averaging; size is (w, h)."""
    out = [
        np.asarray(Image.fromarray(channels[..., k], mode="F").resize(size, Image.BOX))
        for k in range(channels.shape[-1])
    ]
    return np.stack(out, -1).astype(np.float32)


def _load_images(folder, json_path, names, masks, max_size, background):
    bg = np.asarray(background, np.float32).reshape(3)
    images = alphas = None
    without_alpha = []  # entries whose image has neither an alpha channel nor a mask
    first_size = None
    for i, name in enumerate(names):
        path = image_path(folder, name)
        if path is None:
            raise InputError(
                f"{json_path.name}: the image of entry {i} ('{name}') is missing: no {folder / name} "
                f"(nor with .png, .jpg or .jpeg added). Put the file there or fix its 'file_path'."
            )
        rgb, alpha = _read_image(path)
        h, w = rgb.shape[:2]
        if first_size is None:
            first_size = (h, w, path)
            scale = min(1.0, max_size / max(h, w)) if max_size else 1.0
            out_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
            images = np.empty((len(names), *out_hw, 3), np.float32)
            alphas = np.ones((len(names), *out_hw), np.float32)
        elif (h, w) != first_size[:2]:
            raise InputError(
                f"Images differ in size: {first_size[2].name} is {first_size[1]}×{first_size[0]} but {path.name} "
                f"(entry {i}) is {w}×{h}. All images of a multi-view video must have one size."
            )
        a = alpha if alpha is not None else np.ones((h, w), np.float32)
        if masks[i] is not None:
            a = a * _read_mask(folder, json_path, i, name, masks[i], (h, w))
        elif alpha is None:
            without_alpha.append(i)
        premultiplied = np.concatenate([rgb * a[..., None], a[..., None]], -1)
        if premultiplied.shape[:2] != images.shape[1:3]:
            premultiplied = _resize(premultiplied, (images.shape[2], images.shape[1]))
        a = np.clip(premultiplied[..., 3], 0.0, 1.0)
        images[i] = np.clip(premultiplied[..., :3] + (1.0 - a[..., None]) * bg, 0.0, 1.0)
        alphas[i] = a
    if 0 < len(without_alpha) < len(names):
        listed = ", ".join(f"{i} ('{names[i]}')" for i in without_alpha[:5])
        more = f" and {len(without_alpha) - 5} more" if len(without_alpha) > 5 else ""
        raise InputError(
            f"{json_path.name}: the images of entries {listed}{more} have no alpha channel (nor a 'mask_path') while "
            "the others do, so in those the object would fill the whole image: export them with alpha (RGBA PNG) "
            "or give them masks like the others, or export every image without alpha."
        )
    return images, (alphas if not without_alpha else None), first_size[:2]


def entry_cameras(c2w: np.ndarray, intrinsics: list[dict], original_hw, out_hw, json_path: Path) -> Cameras:
    """One camera per entry; entries that share intrinsics are converted together.

    Pixel intrinsics refer to the json's "w" × "h" when it gives them (a folder of downscaled images keeps the
    full-size json, as nerfstudio's images_2 folders do), else to the images' own size; either way they are
    scaled to the size the images are loaded at (continuous pixel coordinates: pixel edges on integers)."""
    (h0, w0), (h, w) = original_hw, out_hw
    viewmats = np.empty((len(c2w), 4, 4), np.float32)
    ks = np.empty((len(c2w), 3, 3), np.float32)
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(intrinsics):
        groups.setdefault(tuple(sorted(k.items())), []).append(i)
    for key, idx in groups.items():
        k = dict(key)
        ref_w, ref_h = int(round(k.pop("w", w0))), int(round(k.pop("h", h0)))
        if abs(ref_w / ref_h - w0 / h0) > 0.01 * (w0 / h0) + 1.0 / h0:
            raise InputError(
                f"{json_path.name}: 'w' × 'h' is {ref_w}×{ref_h} but the images are {w0}×{h0}, another shape: "
                "the intrinsics cannot be scaled to them. Fix 'w'/'h' (and fl_x/cx/cy) or the images."
            )
        cams = cameras_from_nerf(c2w[idx], ref_w, ref_h, **k)
        viewmats[idx], ks[idx] = cams.viewmats, cams.Ks
        ks[idx, 0, :] *= w / ref_w
        ks[idx, 1, :] *= h / ref_h
    return Cameras(viewmats=viewmats, Ks=ks, width=int(w), height=int(h))


def _check_views(video: MultiViewVideo, json_path: Path, min_views: int) -> None:
    views = video.view_count()
    if views < min_views:
        raise InputError(
            f"{json_path.name} has {views} distinct camera pose(s): fitting a 3D object over time needs at least "
            f"{min_views} (8 or more around the object work well). Add views from other directions."
        )
    if views < 2:
        return
    if video.alphas is not None and video.fixed_cameras() and video.cameras_move():
        # a rig that moves with the object (the capture's follow): each time's cameras see it where it is then
        checks = video.window_bounds()  # such a rig's windows are its times
    else:
        checks = [(np.arange(len(video)), video.bounds())]
    for entries, (lo, hi) in checks:
        _check_centre_seen(video, entries, ((lo + hi) / 2).astype(np.float32), json_path)


def _check_centre_seen(video: MultiViewVideo, entries: np.ndarray, centre: np.ndarray, json_path: Path) -> None:
    xy, depth = video.cameras.subset(entries).project(centre[None])
    x, y, d = xy[:, 0, 0], xy[:, 0, 1], depth[:, 0]
    bad = ~((d > 0) & (x >= 0) & (x < video.width) & (y >= 0) & (y < video.height))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        i = int(entries[j])
        where = "behind the camera" if d[j] <= 0 else f"at pixel ({x[j]:.0f}, {y[j]:.0f}), outside the image"
        raise InputError(
            f"{json_path.name}: the camera of entry {i} ('{video.names[i]}') does not see the object: its centre "
            f"{np.round(centre, 3).tolist()} lands {where} ({video.width}×{video.height}). Check that entry's "
            "'transform_matrix' is camera→world in the OpenGL convention (looking −Z), or remove the entry."
        )


# -- writing ---------------------------------------------------------------------------------------


def write_transforms(
    folder: str | Path,
    video: MultiViewVideo,
    split: str = "train",
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Path:
    """Write `folder/{split}/r_NNNN.png` (RGBA when the video has alphas) and `folder/transforms_{split}.json`.

    Entries are named `./{split}/r_NNNN` (D-NeRF's layout, no extension). With alphas the images are
    un-composited from `background` (the one they were loaded or rendered over), so loading the folder
    over the same background gives the images back within 1/255. Returns the json path.
    """
    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    cams = video.cameras
    c2w = nerf_c2w(cams)
    ks = np.asarray(cams.Ks, np.float64)
    shared = bool(np.all(ks == ks[0]))
    meta: dict = {"w": video.width, "h": video.height}
    if shared:
        meta |= _intrinsics_json(ks[0], video.width)
    bg = np.asarray(background, np.float32)
    frames = []
    for i in range(len(video)):
        rel = f"{split}/r_{i:04d}"
        rgb = np.asarray(video.images[i], np.float32)
        if video.alphas is not None:
            a = np.asarray(video.alphas[i], np.float32)
            straight = (rgb - (1.0 - a[..., None]) * bg) / np.maximum(a[..., None], 1e-6)
            pixels = np.concatenate([np.where(a[..., None] > 0, straight, 0.0), a[..., None]], -1)
        else:
            pixels = rgb
        Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)).save(folder / f"{rel}.png")
        entry = {
            "file_path": f"./{rel}",
            "time": float(np.float32(video.times[i])),
            "transform_matrix": np.asarray(c2w[i], np.float64).tolist(),
        }
        if not shared:
            entry |= _intrinsics_json(ks[i], video.width)
        frames.append(entry)
    meta["frames"] = frames
    path = folder / f"transforms_{split}.json"
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def _intrinsics_json(k: np.ndarray, width: int) -> dict:
    fx = float(k[0, 0])
    return {
        "camera_angle_x": 2.0 * math.atan(0.5 * width / fx),
        "fl_x": fx,
        "fl_y": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
    }
