"""Training a motion model on a library of clips of one skeleton: tokenizer first, then the token transformer.

Both stages sample random windows of the training clips (clips are chosen in proportion to their length).
A held-out split (deterministic by file name, `dataset.split`) is never trained on; at the end the
tokenizer's reconstruction on it is measured (MPJPE in mm after forward kinematics, root-aligned, and foot
skate) and stored in the model folder's metadata. Progress goes to `progress(stage, fraction, message)`;
`check_cancelled()` is called every step and raises `JobCancelled`; a checkpoint is written every
`checkpoint_every` steps and on cancel, and `train` resumes from it when it matches the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared.errors import InputError, JobCancelled

from .dataset import Library, Normalizer, split
from .features import body_joints, body_size, feature_layout, features_to_positions, motion_to_features
from .metrics import foot_skate, mpjpe_mm
from .model import MotionModel
from .parts import body_parts
from .pretrained import load_checkpoint, save_checkpoint

Progress = Callable[[str, float, str], None]
CHECKPOINT = "checkpoint.safetensors"


# Sizes for a 2-core CPU (measured: tokenizer ≈ 0.1 s per step of 32 × 64 frames, transformer ≈ 0.3 s per step
# of 32 × 24 tokens × 5 parts, in-betweening a 10-second clip ≈ 70 ms). The modules' own defaults are the
# larger T2M-GPT/MoMask-like sizes, for a GPU.
CPU_TOKENIZER = {
    "group_width": 64,
    "width": 128,
    "depth": 2,
    "codebook_size": 256,
    "code_dim": 32,
    "n_quantizers": 12,
    "linear_path": True,
}
CPU_TRANSFORMER = {"d_model": 128, "n_layers": 3, "n_heads": 4, "ff": 512}
CPU_RESIDUAL = {"d_model": 128, "n_layers": 2, "n_heads": 4, "ff": 512}


@dataclass
class TrainConfig:
    window: int = 64  # frames per tokenizer training window (and the shortest clip the model takes)
    tokenizer_steps: int = 2000
    transformer_steps: int = 1500
    residual_steps: int = 1000  # the residual transformer (tokenizers with more than one quantizer layer)
    tokenizer_batch: int = 32
    transformer_batch: int = 32
    transformer_window: int = 96  # frames per transformer training window (24 tokens)
    lr: float = 2e-3  # tokenizer; measured at 600 steps: 4e-4 → 92 mm held-out MPJPE, 2e-3 → 68 mm, 4e-3 worse
    transformer_lr: float = 4e-4
    position_weight: float = 2.0  # tokenizer loss weight of the joint-position columns relative to the others
    fk_weight: float = 5.0  # tokenizer loss on joint positions after forward kinematics of the decoded window
    base_layer_weight: float = 0.5  # residual tokenizers: the same losses on the base layer's decoding alone
    held_out_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 250
    max_frames: int = 512  # longest span the transformer attends over at once
    units_to_mm: float = 0.0  # 0: guess from the skeleton's size (cm for a human in centimetres, …)
    tokenizer: dict = field(default_factory=lambda: dict(CPU_TOKENIZER))  # TokenizerConfig fields
    transformer: dict = field(default_factory=lambda: dict(CPU_TRANSFORMER))  # MaskedTransformerConfig fields
    residual_transformer: dict = field(default_factory=lambda: dict(CPU_RESIDUAL))  # ResidualTransformerConfig


@dataclass
class TrainReport:
    model_dir: Path
    train_clips: int
    held_out_clips: int
    seconds: float
    metrics: dict
    losses: dict[str, list[float]] = field(default_factory=dict)  # per step of this run, per stage


def guess_units_to_mm(size: float) -> float:
    """Millimetres per skeleton unit from the body's size (its largest side): metres, centimetres or millimetres,
    whichever makes it 0.5–2.5 m across; else (CMU's files are about 35 units tall) as if it were 1.7 m, a person.
    It only scales the reported errors; `TrainConfig.units_to_mm` sets it."""
    for mm in (1000.0, 10.0, 1.0):
        if 500.0 <= size * mm <= 2500.0:
            return mm
    return 1700.0 / max(size, 1e-9)


def _windows_sampler(clips: list[np.ndarray], length: int, rng: np.random.Generator):
    lengths = np.array([len(c) for c in clips], np.float64)
    usable = [i for i, n in enumerate(lengths) if n >= length]
    if not usable:
        raise InputError(f"No training clip has {length} frames; the shortest training window is {length} frames")
    weights = lengths[usable] / lengths[usable].sum()

    def sample(batch: int) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.choice(usable, size=batch, p=weights)
        starts = [int(rng.integers(0, len(clips[i]) - length + 1)) for i in picks]
        return np.stack([clips[i][s : s + length] for i, s in zip(picks, starts, strict=True)]), picks

    return sample


def _fk_loss(skeleton, normalizer: Normalizer):
    """SmoothL1 between the joint positions that forward kinematics makes of decoded and of true features,
    in body sizes, both windows integrated from the same start (the decoder ignores the position columns, so
    this is the loss on what the user sees: pose errors compound down the chain, and a bias in the root's
    turn or speed drifts the whole window)."""
    layout = feature_layout(skeleton)
    mean, std = torch.from_numpy(normalizer.mean), torch.from_numpy(normalizer.std)
    size = body_size(skeleton)

    def loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pred = features_to_positions(recon * std + mean, layout, skeleton) / size
        with torch.no_grad():
            true = features_to_positions(x * std + mean, layout, skeleton) / size
        return torch.nn.functional.smooth_l1_loss(pred, true, beta=0.02)

    return loss


def train(
    library: Library,
    out: str | Path,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    check_cancelled: Callable[[], None] | None = None,
    resume: bool = True,
) -> TrainReport:
    """Train a model on `library` and save it to `out` (a model folder); see the module doc."""
    config = config or TrainConfig()
    progress = progress or (lambda stage, fraction, message: None)
    check_cancelled = check_cancelled or (lambda: None)
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if len(library) < 2:
        raise InputError("Training needs at least 2 clips (one is held out for measuring)")
    fps = library.fps
    train_lib, held_lib = split(library, config.held_out_fraction, config.seed)
    if len(held_lib) == 0:
        train_lib, held_lib = library.subset(list(range(1, len(library)))), library.subset([0])
    progress("features", 0.0, f"{len(train_lib)} training clips, {len(held_lib)} held out")
    train_feats = [motion_to_features(m)[0] for m in train_lib.motions]
    normalizer = Normalizer.fit(train_feats)
    clips = [normalizer.apply(f).astype(np.float32) for f in train_feats]

    labelled = any(label for label in train_lib.labels)
    cond_dim, label_vectors = 0, None
    if labelled:
        from .text import TEXT_DIM, TEXT_ENCODER, embed

        progress("features", 0.5, f"embedding labels with {TEXT_ENCODER}")
        cond_dim = TEXT_DIM
        label_vectors = embed([label or "" for label in train_lib.labels])
        label_vectors[[not label for label in train_lib.labels]] = 0.0

    skeleton = library.skeleton
    parts = body_parts(skeleton)
    signature = json.dumps(
        {"config": asdict(config), "files": [p.name for p in train_lib.files], "joints": list(skeleton.names)},
        sort_keys=True,
    )

    def build():
        model = MotionModel.create(
            skeleton,
            fps,
            normalizer,
            parts,
            tokenizer=config.tokenizer,
            transformer=config.transformer,
            window=config.window,
            max_frames=config.max_frames,
            cond_dim=cond_dim,
            residual_transformer=config.residual_transformer,
        )
        optimizers = {
            "tokenizer": torch.optim.AdamW(model.tokenizer.parameters(), lr=config.lr, weight_decay=0.0),
            "transformer": torch.optim.AdamW(
                model.transformer.parameters(), lr=config.transformer_lr, weight_decay=0.01
            ),
        }
        if model.residual is not None:
            optimizers["residual"] = torch.optim.AdamW(
                model.residual.parameters(), lr=config.transformer_lr, weight_decay=0.01
            )
        return model, model.modules, optimizers

    try:
        model, modules, optimizers = build()
    except (ValueError, TypeError, AssertionError) as exc:  # sizes the layers refuse, e.g. heads not dividing width
        raise InputError(f"The training config does not make a model: {exc}") from None
    step = 0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        try:
            ckpt = load_checkpoint(ckpt_path, modules, optimizers)
        except InputError:
            ckpt = None  # a checkpoint of another model's shape
        if ckpt is not None and ckpt.extra.get("signature") == signature:
            step = ckpt.step
            rng = np.random.default_rng([config.seed, step])
            torch.manual_seed(config.seed + step)
            progress("resume", 0.0, f"resumed from {ckpt_path} at step {step}")
        else:  # another run's checkpoint: start from scratch (it is overwritten at the next checkpoint)
            model, modules, optimizers = build()
    tok, trans = model.tokenizer, model.transformer
    if step == 0:  # a fresh run: the tokenizer's linear path starts as the PCA of the training windows
        tok.init_linear([torch.from_numpy(c) for c in clips])
    opt_tok, opt_trans = optimizers["tokenizer"], optimizers["transformer"]
    transformer_end = config.tokenizer_steps + config.transformer_steps
    residual_steps = config.residual_steps if model.residual is not None else 0
    total = transformer_end + residual_steps

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, modules, optimizers, step, extra={"signature": signature})

    def sched(opt, i, n, peak):  # linear warm-up, cosine decay
        warm = min(1.0, (i + 1) / 100)
        lr = peak * warm * 0.5 * (1 + np.cos(np.pi * min(i, n) / max(n, 1)))
        for g in opt.param_groups:
            g["lr"] = max(lr, peak * 0.02)

    losses: dict[str, list[float]] = {"tokenizer": [], "transformer": []}
    last = time.perf_counter()

    def token_model_step(stage, module, optimizer, loss, terms, i, n):  # the two token models train alike
        sched(optimizer, i, n, config.transformer_lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        losses.setdefault(stage, []).append(terms["loss"])

    def report(stage, i, n, terms):
        nonlocal last
        now = time.perf_counter()
        progress(
            stage,
            step / total,
            f"step {i + 1}/{n} loss {terms['loss']:.3f} accuracy {terms['accuracy']:.2f} "
            f"({(now - last) / 25 * 1000:.0f} ms/step)",
        )
        last = now

    try:
        # -- stage 1: tokenizer ---------------------------------------------------------------------------
        sample = _windows_sampler(clips, config.window, rng)
        weights = torch.ones(feature_layout(skeleton).dim)
        weights[feature_layout(skeleton).positions] = config.position_weight
        fk_loss = _fk_loss(skeleton, normalizer)
        tok.train()
        last = time.perf_counter()
        while step < config.tokenizer_steps:
            check_cancelled()
            x, _ = sample(config.tokenizer_batch)
            x = torch.from_numpy(x)
            recon, stats = tok(x)
            loss, terms = tok.loss(x, recon, stats, extra_weights=weights)
            if config.fk_weight > 0:
                fk = fk_loss(recon, x)
                loss = loss + config.fk_weight * fk
                terms["loss"] += config.fk_weight * float(fk.detach())
            if config.base_layer_weight > 0 and tok.config.n_quantizers > 1:
                # generated positions may decode from their base code alone: train the decoder for that too
                base = tok.decode(stats["codes"][..., :1], x.shape[1])
                base_loss, _ = tok.loss(x, base, {"commit_loss": torch.zeros(())}, weights)  # commitment counted once
                if config.fk_weight > 0:
                    base_loss = base_loss + config.fk_weight * fk_loss(base, x)
                loss = loss + config.base_layer_weight * base_loss
                terms["loss"] += config.base_layer_weight * float(base_loss.detach())
            sched(opt_tok, step, config.tokenizer_steps, config.lr)
            opt_tok.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
            opt_tok.step()
            losses["tokenizer"].append(terms["loss"])
            step += 1
            if step % 25 == 0 or step == config.tokenizer_steps:
                now = time.perf_counter()
                progress(
                    "tokenizer",
                    step / total,
                    f"step {step}/{config.tokenizer_steps} loss {terms['loss']:.4f} "
                    f"perplexity {float(stats['perplexity']):.0f} ({(now - last) / 25 * 1000:.0f} ms/step)",
                )
                last = now
            if step % config.checkpoint_every == 0:
                checkpoint()

        # -- stage 2: token transformer ---------------------------------------------------------------------
        tok.eval()
        with torch.no_grad():
            all_codes = [tok.encode(torch.from_numpy(c)[None])[0] for c in clips]
            codes = [c[..., 0] if c.ndim == 3 else c for c in all_codes]  # the transformer models the base layer
        d = tok.config.downsample
        span = max(2, config.transformer_window // d)
        code_sample = _windows_sampler([c.numpy() for c in codes], min(span, min(len(c) for c in codes)), rng)
        trans.train()
        generator = torch.Generator().manual_seed(config.seed + step)
        while step < transformer_end:
            check_cancelled()
            batch, picks = code_sample(config.transformer_batch)
            cond = None if label_vectors is None else torch.from_numpy(label_vectors[picks])
            loss, terms = trans.training_loss(torch.from_numpy(batch).long(), cond, generator=generator)
            i = step - config.tokenizer_steps
            token_model_step("transformer", trans, opt_trans, loss, terms, i, config.transformer_steps)
            step += 1
            if i % 25 == 24 or step == transformer_end:
                report("transformer", i, config.transformer_steps, terms)
            if step % config.checkpoint_every == 0:
                checkpoint()

        # -- stage 3: residual transformer (the residual layers of generated positions) ---------------------
        if residual_steps:
            residual = model.residual
            residual_sample = _windows_sampler(
                [c.numpy() for c in all_codes], min(span, min(len(c) for c in all_codes)), rng
            )
            opt_res = optimizers["residual"]
            residual.train()
            while step < total:
                check_cancelled()
                batch, _ = residual_sample(config.transformer_batch)
                loss, terms = residual.training_loss(
                    torch.from_numpy(batch).long(), tok.partial_latents, generator=generator
                )
                i = step - transformer_end
                token_model_step("residual", residual, opt_res, loss, terms, i, residual_steps)
                step += 1
                if i % 25 == 24 or step == total:
                    report("residual", i, residual_steps, terms)
                if step % config.checkpoint_every == 0:
                    checkpoint()
            residual.eval()
    except JobCancelled:
        checkpoint()
        raise

    # -- held-out measurement and saving ---------------------------------------------------------------------
    progress("evaluate", 1.0, f"measuring on {len(held_lib)} held-out clips")
    units = config.units_to_mm or guess_units_to_mm(body_size(skeleton))
    metrics = evaluate_tokenizer(model, held_lib.motions, units)
    model.set_library([c.numpy() for c in all_codes], [len(c) for c in clips])
    model.trained = True
    model.meta.update(
        labels=sorted({label for label in train_lib.labels if label}),
        text_encoder="all-MiniLM-L6-v2" if cond_dim else None,
        units_to_mm=units,
        held_out=[p.name for p in held_lib.files],
        metrics=metrics,
        train_config=asdict(config),
        train_seconds=round(time.perf_counter() - t0, 1),
        **bvh_layout(library),
    )
    model.save_pretrained(out)
    checkpoint()
    return TrainReport(out, len(train_lib), len(held_lib), time.perf_counter() - t0, metrics, losses)


def bvh_layout(library: Library) -> dict:
    """What generated clips need to be written like the training files: the skeleton's End Sites and, when
    every clip shares one, the BVH channel layout (rotation orders, position channels)."""
    layouts = {m.channels for m in library.motions}
    shared = layouts.pop() if len(layouts) == 1 else None
    return {
        "end_sites": {str(j): np.asarray(o, float).tolist() for j, o in library.skeleton.end_sites.items()},
        "channels": None if shared is None else [list(c) for c in shared],
    }


def evaluate_tokenizer(model: MotionModel, motions, units_to_mm: float, layers: int | None = None) -> dict:
    """Reconstruction of whole clips through the tokens, over the body's joints (the motion root and below):
    MPJPE (mm, root-aligned), pose MPJPE (mm, root-aligned
    and heading removed per frame: the body's pose without the drift of the integrated heading), foot skate
    (mm/frame) of the reconstruction and of the source, over the clips at least one window long.
    layers: decode from the first `layers` residual quantizer layers only (all of them by default)."""
    layout = feature_layout(model.skeleton)
    errors, pose_errors, skates, skates_src, frames = [], [], [], [], 0
    feet = list(layout.contact_joints)
    for motion in motions:
        if motion.n_frames < model.window:
            continue
        codes = model.tokenize(motion)
        if layers is not None and codes.ndim == 3:
            codes[..., layers:] = -1  # absent layers add nothing
        recon = model.decode(codes, motion.n_frames, like=motion)
        body = body_joints(model.skeleton)  # a still placement joint above the pelvis is not part of the pose
        pred, true = recon.global_positions()[:, body], motion.global_positions()[:, body]
        errors.append(mpjpe_mm(pred, true, units_to_mm, root_joint=0) * motion.n_frames)
        pose_errors.append(
            mpjpe_mm(_heading_free(recon)[:, body], _heading_free(motion)[:, body], units_to_mm) * motion.n_frames
        )
        if feet:
            pred, true = recon.global_positions(), motion.global_positions()
            threshold = 0.05 * body_size(model.skeleton)
            skates.append(foot_skate(pred, feet, motion.fps, threshold) * units_to_mm * motion.n_frames)
            skates_src.append(foot_skate(true, feet, motion.fps, threshold) * units_to_mm * motion.n_frames)
        frames += motion.n_frames
    if not frames:
        return {}
    return {
        "mpjpe_mm": round(float(sum(errors) / frames), 2),
        "pose_mpjpe_mm": round(float(sum(pose_errors) / frames), 2),
        "foot_skate_mm": round(float(sum(skates) / frames), 3) if skates else None,
        "foot_skate_source_mm": round(float(sum(skates_src) / frames), 3) if skates_src else None,
        "clips": len(errors),
        "frames": frames,
    }


def _heading_free(motion) -> np.ndarray:
    """(T, J, 3) joint positions relative to the motion root, turned so the root faces +Z in every frame."""
    from .rotations import quat_conjugate, quat_rotate, quat_yaw, yaw_quat
    from .skeleton import forward_kinematics

    r = feature_layout(motion.skeleton).root_joint
    pos, rot = forward_kinematics(motion.skeleton, motion.rotations, motion.root_positions, motion.local_translations())
    pos, rot = pos.astype(np.float64), rot.astype(np.float64)
    turn = quat_conjugate(yaw_quat(quat_yaw(rot[:, r])))
    return quat_rotate(turn[:, None], pos - pos[:, r : r + 1])
