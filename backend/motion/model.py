"""A motion model in one object, and what animators do with it: tokenize, in-between, edit, generate.

`MotionModel` holds the skeleton it was trained for, the feature normaliser, the body parts (one token
stream each), the tokenizer (`tokenizer.py`) and the masked token transformer (`transformer.py`). It saves
to and loads from a local folder (`config.json` + `model.safetensors`, see `pretrained.py`).

How the operations use tokens (MoMask/MMM editing, reference/anchors-motion-rig.md §1.4, §7.4):

- in-between, by default (`method="auto"` with a library): motion matching over the model's library of training
  clips (`matching.py`), which measures far better than the token model on held-out clips.
- in-between with the token model (`method="tokens"`): frames outside the kept ranges are first filled by
  interpolation (only so the encoder sees a plausible clip), the clip is tokenized, every token that covers a
  frame to generate is masked and the transformer fills them by confidence decoding, conditioned on the kept
  tokens around them. The decoded motion is then fitted into each gap (`surgery.fit_into`): moved rigidly
  (heading + position) onto the kept frame before the gap, and the remaining differences at both ends
  (per-joint rotations, root position) are cross-faded across the gap, so it meets the kept frames on both
  sides. Kept frames are copied from the input, so they stay exactly as they were.
- edit: the tokens of the chosen body parts over the chosen frames are masked and regenerated (with
  sampling, so each seed gives a variation); only the chosen joints change, cross-faded into the frames
  around the range.
- generate: every token is generated, conditioned on a text embedding (`text.py`) when the model was
  trained with labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from shared.errors import InputError

from .dataset import Normalizer
from .features import (
    FeatureLayout,
    body_size,
    feature_layout,
    features_to_motion,
    motion_root,
    motion_to_features,
    top_joint_travels,
    travel_on_motion_root,
    travel_on_top_joint,
)
from .matching import MatchSettings, MotionLibrary, fill_by_matching, match_groups
from .mirror import mirrored_clips
from .pretrained import load_pretrained, save_pretrained
from .residual import ResidualTokenTransformer, ResidualTransformerConfig
from .rotations import quat_yaw
from .skeleton import Motion, Skeleton, check_same_units, forward_kinematics
from .surgery import fill_by_interpolation, fit_into, runs
from .tokenizer import MotionTokenizer, TokenizerConfig
from .transformer import MaskedTokenTransformer, MaskedTransformerConfig

MODEL_KIND = "tessera4d.motion"
INBETWEEN_METHODS = ("auto", "match", "tokens")
INBETWEEN_METHOD_LABELS = {"match": "library match", "tokens": "token model"}  # what progress messages say


def group_columns(layout: FeatureLayout, parts: dict[str, list[int]]) -> list[list[int]]:
    """Feature columns per body part (in `parts` order); the first part also takes the root columns."""
    groups = []
    for i, joints in enumerate(parts.values()):
        cols = layout.columns_for_joints(joints, include_contacts=True)
        if i == 0:
            cols = np.concatenate([layout.root_columns, cols])
        groups.append(sorted(int(c) for c in cols))
    flat = sorted(c for g in groups for c in g)
    if flat != list(range(layout.dim)):
        raise ValueError("body parts do not partition the feature columns")  # a bug, not user input
    return groups


def parse_ranges(text: str, n_frames: int, what: str = "range") -> list[tuple[int, int]]:
    """ "0-9,40-59" → [(0, 9), (40, 59)] (inclusive, 0-based); InputError on bad syntax, out of bounds, overlap."""
    ranges = []
    for piece in [p.strip() for p in str(text).split(",") if p.strip()]:
        a, sep, b = piece.partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise InputError(f"Bad frame {what} '{piece}': write ranges like 0-9,40-59 (0-based, inclusive)") from None
        if lo > hi:
            raise InputError(f"Frame {what} '{piece}' runs backwards; write the smaller frame first")
        if lo < 0 or hi >= n_frames:
            raise InputError(f"Frame {what} '{piece}' is outside the clip's frames 0-{n_frames - 1}")
        ranges.append((lo, hi))
    if not ranges:
        raise InputError(f"No frame {what} given: write ranges like 0-9,40-59")
    ranges.sort()
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:], strict=False):
        if a1 <= b0:
            raise InputError(f"Frame ranges {a0}-{b0} and {a1}-{b1} ({what}) overlap: give each frame once")
    return ranges


MIN_WINDOW = 16  # frames: the tokenizer's convolutions need this many (4 tokens); the shortest training window
FPS_TOLERANCE = 0.02  # a clip within 2 % of the model's rate is taken as it (exporters round Frame Time: 0.033)


def fps_text(fps: float) -> str:
    """A frame rate as people write it: 120 for 1 / 0.008333, 29.97 for 29.97."""
    return f"{round(fps, 2):g}"


@dataclass
class MotionModel:
    skeleton: Skeleton
    fps: float
    parts: dict[str, list[int]]
    normalizer: Normalizer
    tokenizer: MotionTokenizer
    transformer: MaskedTokenTransformer
    window: int = 64  # training window in frames: the shortest clip the model takes
    meta: dict[str, Any] = field(default_factory=dict)
    trained: bool = False
    residual: ResidualTokenTransformer | None = None  # residual layers of generated positions (RVQ tokenizers)
    # the training clips' tokens, all layers, clip after clip ((rows, G[, Q]) int16), and each clip's frame
    # count: the library that motion matching in-betweens from (`matching.py`); None for folders saved without
    library_codes: np.ndarray | None = None
    library_frames: np.ndarray | None = None
    match_settings: MatchSettings = field(default_factory=MatchSettings)
    _library: MotionLibrary | None = field(default=None, init=False, repr=False)

    # -- construction and files ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        skeleton: Skeleton,
        fps: float,
        normalizer: Normalizer,
        parts: dict[str, list[int]],
        tokenizer: dict | None = None,
        transformer: dict | None = None,
        window: int = 64,
        max_frames: int = 512,
        cond_dim: int = 0,
        residual_transformer: dict | None = None,
    ) -> MotionModel:
        """A new, untrained model for `skeleton`; `tokenizer`/`transformer`/`residual_transformer` override
        config fields."""
        layout = feature_layout(skeleton)
        tcfg = TokenizerConfig(
            feature_dim=layout.dim, group_columns=group_columns(layout, parts), groups=list(parts), **(tokenizer or {})
        )
        mcfg = MaskedTransformerConfig(
            codebook_size=tcfg.codebook_size,
            n_groups=len(parts),
            max_time_tokens=-(-max_frames // tcfg.downsample),
            cond_dim=cond_dim,
            **(transformer or {}),
        )
        residual = None
        if tcfg.n_quantizers > 1:
            rcfg = ResidualTransformerConfig(
                codebook_size=tcfg.codebook_size,
                n_groups=len(parts),
                n_quantizers=tcfg.n_quantizers,
                code_dim=tcfg.code_dim,
                max_time_tokens=mcfg.max_time_tokens,
                **(residual_transformer or {}),
            )
            residual = ResidualTokenTransformer(rcfg)
        return cls(
            skeleton,
            fps,
            dict(parts),
            normalizer,
            MotionTokenizer(tcfg),
            MaskedTokenTransformer(mcfg),
            window,
            residual=residual,
        )

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """The model's networks by name (the residual transformer only with a residual tokenizer)."""
        out = {"tokenizer": self.tokenizer, "transformer": self.transformer}
        if self.residual is not None:
            out["residual"] = self.residual
        return out

    def save_pretrained(self, folder: str | Path) -> None:
        meta = dict(self.meta)
        meta.update(
            kind=MODEL_KIND,
            joints=list(self.skeleton.names),
            fps=self.fps,
            parts={k: list(map(int, v)) for k, v in self.parts.items()},
            window=self.window,
        )
        arrays = {
            "skeleton_parents": self.skeleton.parents,
            "skeleton_offsets": self.skeleton.offsets,
            "feature_mean": self.normalizer.mean,
            "feature_std": self.normalizer.std,
        }
        if self.library_codes is not None:
            arrays["library_codes"] = np.asarray(self.library_codes, np.int16)
            arrays["library_frames"] = np.asarray(self.library_frames, np.int64)
        save_pretrained(
            folder,
            self.modules,
            {name: module.config for name, module in self.modules.items()},
            extra_arrays=arrays,
            meta=meta,
            trained=self.trained,
        )

    @classmethod
    def from_pretrained(cls, folder: str | Path, require_trained: bool = True) -> MotionModel:
        """Load a model folder; InputError naming the folder and what is missing or wrong."""
        folder = Path(folder)
        if folder.is_file():
            raise InputError(
                f"'{folder}' is a file; a motion model is a folder (made by `tessera4d motion train --out "
                "MODEL_DIR`): give that folder"
            )
        if not folder.is_dir():
            raise InputError(
                f"Motion model folder '{folder}' does not exist: train one with "
                "`tessera4d motion train --data DIR_OF_BVH --out MODEL_DIR`, or point to an existing one"
            )
        loaded = load_pretrained(
            folder,
            {
                "tokenizer": (TokenizerConfig, MotionTokenizer),
                "transformer": (MaskedTransformerConfig, MaskedTokenTransformer),
                "residual": (ResidualTransformerConfig, ResidualTokenTransformer),
            },
            required_arrays=("skeleton_parents", "skeleton_offsets", "feature_mean", "feature_std"),
            require_trained=require_trained,
            optional=("residual",),  # one-layer tokenizers and folders saved before it have none
        )
        meta = loaded.meta
        if meta.get("kind") != MODEL_KIND:
            raise InputError(f"'{folder}' holds a model of kind {meta.get('kind')!r}, not a motion model")
        end_sites = {int(j): np.asarray(o, np.float32) for j, o in (meta.get("end_sites") or {}).items()}
        skeleton = Skeleton(
            tuple(meta["joints"]), loaded.arrays["skeleton_parents"], loaded.arrays["skeleton_offsets"], end_sites
        )
        normalizer = Normalizer(loaded.arrays["feature_mean"], loaded.arrays["feature_std"])
        parts = {k: list(v) for k, v in meta["parts"].items()}
        return cls(
            skeleton,
            float(meta["fps"]),
            parts,
            normalizer,
            loaded.modules["tokenizer"],
            loaded.modules["transformer"],
            int(meta.get("window", 64)),
            {k: v for k, v in meta.items() if k not in ("kind", "joints", "fps", "parts", "window")},
            loaded.trained,
            loaded.modules.get("residual"),
            loaded.arrays.get("library_codes"),
            loaded.arrays.get("library_frames"),
        )

    # -- helpers --------------------------------------------------------------------------------------------

    @property
    def downsample(self) -> int:
        return self.tokenizer.config.downsample

    @property
    def max_frames(self) -> int:
        return self.transformer.config.max_time_tokens * self.downsample

    @property
    def context_tokens(self) -> int:
        """Time tokens the transformer looks at in one go: the length of its training windows (its time
        embeddings past that were never trained), or its maximum for a model made in code."""
        frames = self.meta.get("train_config", {}).get("transformer_window")
        limit = self.transformer.config.max_time_tokens
        return min(limit, max(2, int(frames) // self.downsample)) if frames else limit

    def check_clip(self, motion: Motion, what: str = "clip") -> None:
        self.skeleton.check_same(motion.skeleton, f"The {what}'s skeleton (model: {len(self.skeleton.names)} joints)")
        if motion.n_frames < self.window:
            n = motion.n_frames - motion.n_frames % self.downsample
            shorter = (
                f"or train a model with a window that fits it (`tessera4d motion train ... --config "
                f"'{{\"window\": {n}}}'`)"
                if n >= MIN_WINDOW
                else f"no model takes fewer than {MIN_WINDOW} frames"
            )
            raise InputError(
                f"The {what} has {motion.n_frames} frames; this model needs at least {self.window} "
                f"(its training window). Give a longer clip, {shorter}"
            )
        exporter = "in Blender: the BVH exporter's Scale"
        check_same_units(body_size(motion.skeleton), body_size(self.skeleton), f"{what}'s skeleton", exporter)
        if abs(motion.fps - self.fps) > FPS_TOLERANCE * self.fps:
            raise InputError(
                f"The {what} runs at {fps_text(motion.fps)} fps; this model was trained at {fps_text(self.fps)} fps. "
                f"Resample the clip to {fps_text(self.fps)} fps (in Blender: set the scene's frame rate and scale "
                "the action with the Time Stretching settings), or train a model on clips at its rate"
            )

    def features(self, motion: Motion) -> torch.Tensor:
        """(1, T, D) normalised features."""
        feats, _ = motion_to_features(motion)
        return torch.from_numpy(self.normalizer.apply(feats)).float()[None]

    def tokenize(self, motion: Motion) -> np.ndarray:
        """(T', G) int64 tokens of a clip (G = body parts, in `parts` order); (T', G, Q) with Q residual layers."""
        self.check_clip(motion)
        self.tokenizer.eval()
        return self.tokenizer.encode(self.features(motion))[0].numpy()

    def decode(
        self, codes: np.ndarray | torch.Tensor, n_frames: int, like: Motion | None = None, smooth: bool = False
    ) -> Motion:
        """Motion from (T', G) tokens, starting where `like` starts (heading and ground position) if given.

        smooth: low-pass the decoded features over time (Gaussian, σ = ¾ of a token's frames). Generated
        positions often decode from their base code alone, which steps at token boundaries (held-out foot
        skate 5.9× the source's); on held-out in-betweens this took L2P from 1.20× / 1.07× / 1.12× of
        interpolation's to 0.95× / 1.03× / 1.09× at 5 / 15 / 30 frames."""
        codes = torch.as_tensor(codes, dtype=torch.long)[None]
        self.tokenizer.eval()
        with torch.no_grad():
            feats = self.normalizer.invert(self.tokenizer.decode(codes, n_frames)[0].double().numpy())
        if smooth:
            feats = gaussian_filter1d(feats, 0.75 * self.downsample, axis=0, mode="nearest")
        start, yaw, top = np.zeros(3), 0.0, None
        if like is not None:
            first = slice(0, 1)
            gpos, grot = forward_kinematics(
                like.skeleton, like.rotations[first], like.root_positions[first], like.local_translations()[first]
            )
            r = motion_root(self.skeleton)
            start, yaw = gpos[0, r].astype(np.float64), float(quat_yaw(grot[0, r].astype(np.float64)))
            top = gpos[0, 0].astype(np.float64)
        return features_to_motion(feats, self.skeleton, self.fps, start, yaw, start_top_position=top)

    def _fill(self, codes: np.ndarray, editable: np.ndarray, cond, seed: int, temperature: float) -> np.ndarray:
        """Generate the editable (T', G) tokens in windows of the transformer's context (`_fill_windows`). With residual
        layers (codes (T', G, Q)) the transformer fills the base layer; generated positions get no residual
        codes (-1: absent, which the decoder is trained for) and the others keep theirs."""
        if codes.ndim == 3:
            out = codes.copy()
            out[..., 0] = self._fill(codes[..., 0], editable, cond, seed, temperature)
            out[..., 1:][editable] = -1
            if self.residual is not None and editable.any():
                out = self._fill_residual(out, editable)
            return out
        out = codes.copy()
        limit = min(self.context_tokens, len(codes))
        rows = np.flatnonzero(editable.any(axis=1))
        if rows.size == 0:
            return out
        generator = torch.Generator().manual_seed(int(seed))
        cond_t = None if cond is None else torch.as_tensor(np.asarray(cond, np.float32)).reshape(1, -1)
        for lo, hi, a, b in _fill_windows(rows, len(codes), limit):
            window = torch.as_tensor(out[lo:hi])[None]
            mask = torch.as_tensor(editable[lo:hi])[None]
            mask[:, : a - lo] = False
            mask[:, b + 1 - lo :] = False
            filled = self.transformer.generate(
                window, mask, cond_t, temperature=temperature, generator=generator, cfg_scale=3.0
            )
            out[lo:hi] = filled[0].numpy()
        return out

    def _fill_residual(self, codes: np.ndarray, editable: np.ndarray) -> np.ndarray:
        """The residual layers of the editable positions of (T', G, Q) codes, in the same windows as the base."""
        out = torch.as_tensor(codes).clone()
        limit = min(self.context_tokens, len(codes))
        self.residual.eval()
        for lo, hi, a, b in _fill_windows(np.flatnonzero(editable.any(axis=1)), len(codes), limit):
            mask = torch.zeros(hi - lo, editable.shape[1], dtype=torch.bool)
            mask[a - lo : b + 1 - lo] = torch.as_tensor(editable[a : b + 1])
            out[lo:hi] = self.residual.fill(
                out[lo:hi][None], mask[None], self.tokenizer.partial_latents, RESIDUAL_MIN_CONFIDENCE
            )[0]
        return out.numpy()

    # -- the operations -------------------------------------------------------------------------------------

    def set_library(self, codes: list[np.ndarray], frames: list[int]) -> None:
        """Keep these clips' tokens ((rows, G[, Q]) each, from `tokenize`) as the library to in-between from."""
        if len(codes) != len(frames) or not codes:
            raise ValueError("set_library needs one frame count per clip, and at least one clip")
        d = self.downsample
        for c, f in zip(codes, frames, strict=True):
            if len(c) != -(-int(f) // d):
                raise ValueError(f"{len(c)} token rows do not cover {f} frames at {d} frames per token")
        self.library_codes = np.concatenate([np.asarray(c, np.int16) for c in codes])
        self.library_frames = np.asarray(frames, np.int64)
        self._library = None

    @property
    def library_decoded(self) -> bool:
        """Whether `library()` is ready (decoding and mirroring it takes about 20 ms per clip on 2 CPU cores)."""
        return self._library is not None

    def library(self) -> MotionLibrary | None:
        """The library decoded from `library_codes` (once, then cached), with each clip's mirror image when the
        skeleton's joint names pair left and right (`MotionLibrary.mirrored`); None when the folder keeps none."""
        if self.library_codes is None or self.library_frames is None:
            return None
        if self._library is None:
            d = self.downsample
            rows = np.cumsum([0] + [-(-int(f) // d) for f in self.library_frames])
            if rows[-1] != len(self.library_codes):
                raise InputError(
                    f"The model's library has {len(self.library_codes)} token rows but its frame counts need "
                    f"{rows[-1]}: the folder is damaged; retrain the model"
                )
            motions = [
                self.decode(self.library_codes[rows[i] : rows[i + 1]].astype(np.int64), int(frames))
                for i, frames in enumerate(self.library_frames)
            ]
            mirrored = mirrored_clips(motions)
            flags = [False] * len(motions) + [True] * len(mirrored)
            motions += mirrored
            feats = [self.normalizer.apply(motion_to_features(motion)[0]) for motion in motions]
            layout = feature_layout(self.skeleton)
            scale = self.match_settings.root_height_scale
            self._library = MotionLibrary.build(motions, feats, layout, scale, flags)
        return self._library

    def inbetween_method(self, method: str = "auto") -> str:
        """What `inbetween(method=...)` uses: "match" or "tokens". InputError for an unknown method, or for
        "match" with a model folder that keeps no library."""
        if method not in INBETWEEN_METHODS:
            raise InputError(f"Unknown in-betweening method {method!r}: choose one of {', '.join(INBETWEEN_METHODS)}")
        has_library = self.library_codes is not None and self.library_frames is not None
        if method == "match" and not has_library:
            raise InputError(
                "This model folder keeps no library of its training clips (it was trained before in-betweening by "
                "matching was added): use method 'tokens', or retrain the model"
            )
        if method == "auto":
            return "match" if has_library else "tokens"
        return method

    def inbetween(
        self,
        motion: Motion,
        keep: list[tuple[int, int]],
        seed: int = 0,
        temperature: float = 0.0,
        method: str = "auto",
        mirror: bool | None = None,
    ) -> Motion:
        """Frames outside the inclusive `keep` ranges are generated; kept frames are returned unchanged.

        method: "match" blends the library segments that fit each gap best (`matching.py`), "tokens" fills the
        gap's tokens with the masked token transformer (seed and temperature apply to it), "auto" matches when
        the model keeps a library (models trained since it was added) and uses tokens otherwise. mirror: whether
        matching may draw from the library's mirror images (None: `match_settings.mirror`, on by default); off
        keeps handed moves (a right-handed sword swing) to the side the library has them on."""
        self.check_clip(motion)
        method = self.inbetween_method(method)
        if top_joint_travels(motion):  # work in the features' convention, give the clip's back
            return travel_on_top_joint(
                self.inbetween(travel_on_motion_root(motion), keep, seed, temperature, method, mirror)
            )
        t = motion.n_frames
        kept = np.zeros(t, bool)
        for a, b in keep:
            if not (0 <= a <= b < t):
                raise InputError(f"Kept frames {a}-{b} are outside the clip's frames 0-{t - 1}")
            kept[a : b + 1] = True
        if not kept.any():
            raise InputError("Keep at least one frame: in-betweening fills the frames between kept ones")
        source = fill_by_interpolation(motion, kept)
        if method == "tokens":
            return self._inbetween_tokens(motion, kept, source, seed, temperature)
        out = motion.copy()
        groups = match_groups(self.skeleton, self.parts, self.tokenizer.config.group_columns)
        features = self.normalizer.apply(motion_to_features(source)[0])
        settings = self.match_settings if mirror is None else replace(self.match_settings, mirror=bool(mirror))
        unmatched = fill_by_matching(out, source, features, kept, self.library(), groups, settings)
        if unmatched:  # no library clip is long enough for these gaps and their context: the token model fills them
            by_tokens = self._inbetween_tokens(motion, kept, source, seed, temperature)
            for a, b in unmatched:
                out.rotations[a:b] = by_tokens.rotations[a:b]
                out.root_positions[a:b] = by_tokens.root_positions[a:b]
                if out.translations is not None:
                    out.translations[a:b] = by_tokens.translations[a:b]
        return out

    def _inbetween_tokens(
        self, motion: Motion, kept: np.ndarray, source: Motion, seed: int, temperature: float
    ) -> Motion:
        t = motion.n_frames
        codes = self.tokenize(source)
        d = self.downsample
        pad = len(codes) * d - t
        kept_padded = np.concatenate([kept, np.repeat(kept[-1:], pad)])
        editable_rows = ~kept_padded.reshape(-1, d).all(axis=1)
        editable = np.repeat(editable_rows[:, None], len(self.parts), axis=1)
        new_codes = self._fill(codes, editable, None, seed, temperature)
        decoded = self.decode(new_codes, t, like=source, smooth=True)
        out = motion.copy()
        all_joints = np.arange(self.skeleton.n_joints)
        for a, b in runs(~kept):
            fit_into(out, decoded, a, b, all_joints, with_root=True, base=source)
        return out

    def edit(
        self,
        motion: Motion,
        frames: tuple[int, int],
        joints: list[int],
        seed: int = 0,
        temperature: float = 1.0,
    ) -> Motion:
        """Regenerate `joints` over the inclusive frame range; everything else is returned unchanged."""
        self.check_clip(motion)
        if top_joint_travels(motion):  # work in the features' convention, give the clip's back
            return travel_on_top_joint(self.edit(travel_on_motion_root(motion), frames, joints, seed, temperature))
        t = motion.n_frames
        a, b = frames
        if not (0 <= a <= b < t):
            raise InputError(f"Frames {a}-{b} to edit are outside the clip's frames 0-{t - 1}")
        if not joints:
            raise InputError("Choose at least one joint or body part to edit")
        codes = self.tokenize(motion)
        d = self.downsample
        groups = [g for g, members in enumerate(self.parts.values()) if set(members) & set(joints)]
        editable = np.zeros(codes.shape[:2], bool)
        editable[a // d : b // d + 1, groups] = True
        new_codes = self._fill(codes, editable, None, seed, temperature)
        decoded = self.decode(new_codes, t, like=motion, smooth=True)
        out = motion.copy()
        with_root = motion_root(self.skeleton) in joints or 0 in joints
        fit_into(out, decoded, a, b + 1, np.asarray(sorted(joints)), with_root=with_root, base=motion)
        return out

    def generate(self, n_frames: int, text: str = "", seed: int = 0, temperature: float = 1.0) -> Motion:
        """A new clip of `n_frames`, conditioned on `text` when the model was trained with labels."""
        if not self.window <= n_frames <= self.max_frames:
            raise InputError(f"Generate between {self.window} and {self.max_frames} frames with this model")
        cond = None
        if text.strip():
            if not self.transformer.config.cond_dim:
                raise InputError("This model was trained without labels, so it cannot follow a text; leave it empty")
            from .text import embed

            cond = embed([text.strip()])[0]
        rows = -(-n_frames // self.downsample)
        layers = self.tokenizer.config.n_quantizers
        codes = np.zeros((rows, len(self.parts)) + ((layers,) if layers > 1 else ()), np.int64)
        new_codes = self._fill(codes, np.ones(codes.shape[:2], bool), cond, seed, temperature)
        motion = self.decode(new_codes, n_frames, smooth=True)
        channels = self.meta.get("channels")  # the training files' layout, so the take is written like them
        if channels is not None and len(channels) == self.skeleton.n_joints:
            motion.channels = tuple(tuple(c) for c in channels)
        return motion


# -- token windows ----------------------------------------------------------------------------------------------


def _fill_windows(rows: np.ndarray, n_rows: int, limit: int) -> list[tuple[int, int, int, int]]:
    """(lo, hi, a, b): token windows [lo, hi) of at most `limit` rows, each filling the editable rows a..b.

    A run of editable rows that fits in a window (with at least one row of context when it can) is centred
    in one, so the model sees the kept rows on both sides. A longer run is filled left to right: each window
    keeps a quarter of its rows of context before the part it fills, which are kept rows or rows the previous
    window filled, so the chunks continue each other."""
    runs, start = [], int(rows[0])
    for x, y in zip(rows, rows[1:], strict=False):
        if y != x + 1:
            runs.append((start, int(x)))
            start = int(y)
    runs.append((start, int(rows[-1])))
    out = []
    for a, b in runs:
        if b - a + 1 <= max(1, limit - 2) or limit >= n_rows:
            lo = int(np.clip((a + b + 1) // 2 - limit // 2, 0, n_rows - limit))
            out.append((lo, lo + limit, a, b))
            continue
        context = max(1, limit // 4)
        pos = a
        while pos <= b:
            lo = max(0, min(pos - context, n_rows - limit))
            hi = lo + limit
            end = min(b, hi - 1)
            out.append((lo, hi, pos, end))
            pos = end + 1
    return out


# Residual codes the residual transformer predicts with less probability are left absent (see
# ResidualTokenTransformer.fill): measured on held-out Bandai-Namco in-betweens, argmax residual codes made
# them worse than base codes alone (1.06× vs 0.96× interpolation's L2P at 15 frames).
RESIDUAL_MIN_CONFIDENCE = 0.5
