"""Fine-tune the motion and view modules of a model folder on rendered multi-view videos (`tessera4d mvdiff train`).

What trains is what Animate3D trains (its configs/training/train.yaml `trainable_modules: ["i2v.", "motion_modules."]`):
every parameter whose name contains `motion_modules.` (AnimateDiff's temporal layers and Animate3D's view branch
inside them) or `i2v` (the image-to-video branch of the spatial self-attention). The SD1.5/MVDream weights, the
VAE and the text encoder stay frozen.

The objective is Animate3D's (its train.py): the clip's VAE latents, frame 0 of every view kept clean (the
condition renders: `condition_mask[:, 0] = True`), the other frames noised at one timestep per sample, and the
mean squared error between the predicted and the true noise over the noised frames only; the caption is dropped
(empty prompt) 10 % of the time so classifier-free guidance keeps working; AdamW (weight decay 1e-2), gradient
norm clipped at 1. Each step's randomness comes from a generator seeded with (seed, step), so a resumed run
continues exactly as an uninterrupted one would.

Data: `dataset.find_clips(DATA)` folders (from `tessera4d dataset render`). With two or more clips the last one
(by name) is held out and its loss — fixed noise and timesteps, so numbers compare — is reported before and
after training; with one clip the same fixed-noise loss is measured on it and labelled as training loss.

Output folder OUT: `checkpoints/latest.safetensors` (the trainable tensors, AdamW state, step, loss history;
written every `save_every` steps and at the end, so `--resume` continues the step count) and, at the end, a full
model folder (the source's VAE, text encoder, tokenizer, scheduler, model_index.json copied; `unet/` with the
trained weights; `tessera_model.json` with kind "fine-tuned" and "trained" copied from the source — a
fine-tuned random model is still a random model) plus `training.json` with the run's numbers.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import InputError

from .cameras import embedding_input
from .dataset import TrainingClip, find_clips, load_clip

TRAINABLE = ("motion_modules.", "i2v")
CHECKPOINT = Path("checkpoints") / "latest.safetensors"
CAPTION_DROPOUT = 0.1
EVAL_DRAWS = 4  # fixed (noise, timestep) draws per evaluated clip


def is_trainable(name: str) -> bool:
    return any(part in name for part in TRAINABLE)


@dataclass
class TrainResult:
    out: Path
    step: int  # steps done in total (across resumes)
    losses: list[float]  # training loss per step, all steps
    eval_before: float  # fixed-noise loss of the evaluated clips before the first step of the run's first start
    eval_after: float
    eval_kind: str  # "held-out" or "training" (one clip only)
    trainable_parameters: int
    seconds: float
    info: dict = field(default_factory=dict)


class _Trainable(nn.Module):
    """The UNet's trainable parameters as one module (the same Parameter objects), so checkpoints hold only them."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.names = [n for n, p in unet.named_parameters() if is_trainable(n)]
        self.params = nn.ParameterList([dict(unet.named_parameters())[n] for n in self.names])


@dataclass
class _Clip:
    name: str
    latents: torch.Tensor  # (V, 4, F, h, w) scaled VAE latents
    text: torch.Tensor  # (seq, dim)
    camera: torch.Tensor  # (V, 16)
    image: torch.Tensor | None  # (V, D) IP-Adapter embeddings of each view's frame 0, for models with one


def train(
    data: Path,
    checkpoint: Path,
    out: Path,
    *,
    steps: int = 1000,
    lr: float = 1e-4,
    batch: int = 1,
    resume: bool = False,
    frames: int | None = None,
    seed: int = 0,
    save_every: int = 200,
    gradient_checkpointing: bool = False,
    device: str | None = None,
    progress: Callable[[str, float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> TrainResult:
    """Fine-tune `checkpoint`'s motion/view modules on the clips under `data` for `steps` steps in total; write
    OUT (see the module docstring). `frames`: frames per training window (default: the model's max_frames, at
    most the clips' length). `gradient_checkpointing`: recompute the UNet blocks' activations in the backward
    pass (less memory for 4 views × 16 frames at 256², slower). Raises InputError for bad data, settings or
    folders."""
    from .checkpoint import load_pipeline, model_info

    started = time.perf_counter()
    if steps < 1 or batch < 1 or not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"--steps and --batch must be ≥ 1 and --lr positive (got {steps}, {batch}, {lr}).")
    if out.resolve() == Path(checkpoint).resolve():
        raise InputError(f"--out {out} is the --checkpoint folder; write the fine-tuned model to a new folder.")
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise InputError(f"--resume: {out} holds no training checkpoint ({CHECKPOINT}); start without --resume.")
    if not resume and ckpt_path.is_file():
        raise InputError(f"{out} already holds a training run; continue it with --resume or choose a new --out.")
    info = model_info(checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(checkpoint, device=device, dtype=torch.float32, allow_untrained=True)
    unet = pipe.unet
    views = int(unet.config.num_views)
    clips = [load_clip(p) for p in find_clips(data)]
    window = _window(clips, frames, int(info.get("max_frames", 16)), views, int(unet.config.motion_max_seq_length))
    if progress is not None:
        progress("encode", 0.0, f"encoding {len(clips)} clips")
    encoded = [_encode(pipe, clip, device) for clip in clips]
    uncond = _text(pipe.encode_prompt("")[0]).to(device)
    train_set, eval_set = (encoded[:-1], encoded[-1:]) if len(encoded) > 1 else (encoded, encoded)
    eval_kind = "held-out" if len(encoded) > 1 else "training"

    unet.requires_grad_(False)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trainable = _Trainable(unet)
    for p in trainable.params:
        p.requires_grad_(True)
    if not trainable.names:
        raise InputError(f"{checkpoint}: the UNet has no motion-module or I2V parameters to fine-tune.")
    optimizer = torch.optim.AdamW(trainable.params, lr=lr, weight_decay=1e-2)
    noise_schedule = _alphas_cumprod(pipe.scheduler).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else _no_autocast()

    start, losses, eval_before = 0, [], None
    if resume:
        from ..motion.pretrained import load_checkpoint

        saved = load_checkpoint(ckpt_path, {"trainable": trainable}, {"adamw": optimizer})
        if saved.extra.get("checkpoint") != str(checkpoint) or saved.extra.get("names") != trainable.names:
            raise InputError(
                f"{ckpt_path} was trained from {saved.extra.get('checkpoint')!r}, not {str(checkpoint)!r}: "
                "resume with the same --checkpoint."
            )
        start, losses, eval_before = saved.step, list(saved.extra.get("losses", [])), saved.extra.get("eval_before")
        for group in optimizer.param_groups:
            group["lr"] = lr
    if eval_before is None:
        eval_before = _fixed_loss(unet, eval_set, uncond, noise_schedule, window, seed, autocast)
    if start >= steps:
        raise InputError(f"{out} is already at step {start}; give --steps above {start} to train further.")

    unet.train()
    for step in range(start, steps):
        if check_cancelled is not None:
            check_cancelled()
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        picks = torch.randint(len(train_set), (batch,), generator=g).tolist()
        latents, noise, t, text, camera, image = _batch(train_set, picks, uncond, noise_schedule, window, g, drop=True)
        noisy = _noised(latents, noise, t, noise_schedule)
        extra = {} if image is None else {"image_embeds": image}
        with autocast:
            pred = unet(noisy.to(device), t.to(device), text, camera, num_views=views, **extra).sample
        loss = F.mse_loss(pred[:, :, 1:].float(), noise[:, :, 1:].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable.params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if progress is not None:
            progress("train", (done - start) / (steps - start), f"step {done}/{steps}, loss {losses[-1]:.4f}")
        if done % save_every == 0 or done == steps:
            _save(ckpt_path, trainable, optimizer, done, losses, eval_before, checkpoint)
    unet.eval()
    eval_after = _fixed_loss(unet, eval_set, uncond, noise_schedule, window, seed, autocast)
    result = TrainResult(
        out=out,
        step=steps,
        losses=losses,
        eval_before=float(eval_before),
        eval_after=float(eval_after),
        eval_kind=eval_kind,
        trainable_parameters=sum(p.numel() for p in trainable.params),
        seconds=time.perf_counter() - started,
    )
    _write_model(out, checkpoint, unet, info, result, data, window)
    return result


def _window(clips: list[TrainingClip], frames: int | None, max_frames: int, views: int, max_seq: int) -> int:
    for clip in clips:
        if clip.views != views:
            raise InputError(f"Clip {clip.name} has {clip.views} views; the model takes {views}.")
        h, w = clip.images.shape[2:4]
        if h % 8 or w % 8:
            raise InputError(f"Clip {clip.name}'s images are {w}×{h}; the VAE needs sizes that are multiples of 8.")
    shortest = min(c.frames for c in clips)
    window = min(frames or max_frames, shortest)
    if window < 2:
        raise InputError(f"Training needs windows of ≥ 2 frames (frame 0 is the condition); got {window}.")
    if window > max_seq:
        raise InputError(f"--frames {window} exceeds the motion modules' {max_seq} frames.")
    return window


def _text(embeds: torch.Tensor) -> torch.Tensor:
    return embeds[0] if embeds.ndim == 3 else embeds


@torch.no_grad()
def _encode(pipe, clip: TrainingClip, device: str) -> _Clip:
    v, f, h, w, _ = clip.images.shape
    images = torch.from_numpy(clip.images.reshape(v * f, h, w, 3)).to(device)
    latents = torch.cat([pipe.encode_images(images[i : i + 16]) for i in range(0, len(images), 16)]).float()
    latents = latents.view(v, f, *latents.shape[1:]).transpose(1, 2).contiguous()  # (V, 4, F, h, w)
    text = _text(pipe.encode_prompt(clip.prompt)[0]).float()
    camera = torch.from_numpy(embedding_input(clip.cameras)).to(device)
    image = None
    if getattr(pipe, "image_encoder", None) is not None:  # Animate3D's image prompt: each view's first frame
        image = pipe.encode_image_prompt(torch.from_numpy(np.ascontiguousarray(clip.images[:, 0]))).to(device)
    return _Clip(clip.name, latents, text, camera, image)


def _alphas_cumprod(scheduler) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config).alphas_cumprod.float()


def _batch(clips: list[_Clip], picks: list[int], uncond, schedule, window: int, g: torch.Generator, drop: bool):
    """(latents (B·V, 4, W, h, w), noise, t (B·V,), text (B·V, seq, dim), camera (B·V, 16), image embeddings
    (B·V, D) or None) for the picked clips, each a random `window`-frame slice; one timestep per clip, shared by
    its views (Animate3D); the image prompt is never dropped (Animate3D drops only the caption)."""
    lat, noise, ts, text, cam, image = [], [], [], [], [], []
    for i in picks:
        clip = clips[i]
        views, frames = clip.latents.shape[0], clip.latents.shape[2]
        first = int(torch.randint(frames - window + 1, (1,), generator=g))
        lat.append(clip.latents[:, :, first : first + window])
        noise.append(torch.randn(lat[-1].shape, generator=g).to(lat[-1].device))
        ts.append(torch.randint(len(schedule), (1,), generator=g).repeat(views))
        caption = uncond if drop and float(torch.rand((), generator=g)) < CAPTION_DROPOUT else clip.text
        text.append(caption.expand(views, *caption.shape))
        cam.append(clip.camera)
        image.append(clip.image)
    images = None if image[0] is None else torch.cat(image)
    return torch.cat(lat), torch.cat(noise), torch.cat(ts), torch.cat(text), torch.cat(cam), images


def _noised(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) for frames 1…; frame 0 stays the clean condition latent."""
    a = schedule[t.to(schedule.device)].view(-1, 1, 1, 1, 1).to(latents.device)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise.to(latents.device)
    noisy[:, :, 0] = latents[:, :, 0]
    return noisy


@torch.no_grad()
def _fixed_loss(unet, clips: list[_Clip], uncond, schedule, window: int, seed: int, autocast) -> float:
    """Mean noise-prediction error on the clips' first `window` frames with fixed noise and timesteps."""
    was_training = unet.training
    unet.eval()
    total = []
    for k, clip in enumerate(clips):
        for d in range(EVAL_DRAWS):
            g = torch.Generator().manual_seed(10_007 * (seed + 1) + 101 * k + d)
            latents = clip.latents[:, :, :window]
            noise = torch.randn(latents.shape, generator=g).to(latents.device)
            # timesteps spread over the schedule, so the number does not hinge on one lucky draw
            t = torch.full((latents.shape[0],), int((d + 0.5) / EVAL_DRAWS * len(schedule)), dtype=torch.long)
            noisy = _noised(latents, noise, t, schedule)
            text = clip.text.expand(latents.shape[0], *clip.text.shape)
            extra = {} if clip.image is None else {"image_embeds": clip.image}
            with autocast:
                pred = unet(noisy, t.to(latents.device), text, clip.camera, num_views=latents.shape[0], **extra).sample
            total.append(float(F.mse_loss(pred[:, :, 1:].float(), noise[:, :, 1:])))
    unet.train(was_training)
    return float(np.mean(total))


class _no_autocast:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _save(path: Path, trainable: _Trainable, optimizer, step: int, losses, eval_before, checkpoint: Path) -> None:
    from ..motion.pretrained import save_checkpoint

    extra = {"losses": losses, "eval_before": eval_before, "checkpoint": str(checkpoint), "names": trainable.names}
    save_checkpoint(path, {"trainable": trainable}, {"adamw": optimizer}, step, extra=extra)


def _write_model(out: Path, source: Path, unet, info: dict, result: TrainResult, data: Path, window: int) -> None:
    """The fine-tuned model folder: the source's other parts copied, the trained UNet, the model info."""
    for entry in source.iterdir():
        if entry.name in ("unet", "tessera_model.json", "training.json", "checkpoints", "conversion.json"):
            continue
        target = out / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    model = {
        **{k: info[k] for k in ("format", "views", "max_frames", "resolution") if k in info},
        "trained": bool(info.get("trained", False)),
        "kind": "fine-tuned",
        "source": str(source),
    }
    (out / "tessera_model.json").write_text(json.dumps(model, indent=2), encoding="utf-8")
    record = {
        "data": str(data),
        "steps": result.step,
        "frames": window,
        "trainable_parameters": result.trainable_parameters,
        "final_loss": result.losses[-1] if result.losses else None,
        f"{result.eval_kind}_loss_before": result.eval_before,
        f"{result.eval_kind}_loss_after": result.eval_after,
        "seconds_this_run": result.seconds,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
