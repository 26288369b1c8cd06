"""4D score distillation (4D-SDS): a loss that pulls rendered multi-view videos towards what the multi-view
video model would denoise them into (Animate3D's refinement stage, anchors-4d §5.2).

The x0-reconstruction form (MVDream / Animate3D / 4Diffusion): encode the renders `z` (all V×F images),
noise them at a small t, predict ε with classifier-free guidance, form x̂0 = (z_t − √(1−ᾱ)·ε̂)/√ᾱ, optionally
rescale x̂0's spread towards the unguided prediction's (CFG inflates it), and take ‖z − sg(x̂0)‖². Its
gradient with respect to z is z − x̂0: the model's one-step denoised estimate is the target, and nothing is
back-propagated through the UNet, only through the VAE encoder and the renderer.

Why this form rather than the original ε-difference SDS: with t ∈ [0.02, 0.2] (refinement of an already
reconstructed motion) the target stays close to the renders, so the loss is a small, well-scaled correction;
the original form needs a weighting w(t) and large t to say anything.

The latents are laid out as the UNet takes them: (V, 4, F, h, w), batch order (v, f) inside the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from shared.errors import InputError

#: (z_t (V,4,F,h,w), t (scalar long tensor)) → (ε unconditional, ε conditional), each like z_t
NoisePredictor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def encode_videos(pipe, images: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """(V, F, H, W, 3) images in [0, 1] → (V, 4, F, h, w) scaled VAE latents, differentiable.

    The posterior mean (not a sample): deterministic, and the gradient does not carry the VAE's noise.
    `chunk`: encode this many images at a time (the result is the same).
    """
    v, f, h, w, _ = images.shape
    flat = images.reshape(v * f, h, w, 3)
    step = int(chunk or v * f)
    latents = torch.cat([_encode(pipe, flat[i : i + step]) for i in range(0, v * f, step)])
    return latents.reshape(v, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)


def _encode(pipe, flat: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) in [0, 1] → (N, 4, h, w) scaled latents (posterior mean)."""
    vae = pipe.vae
    x = flat.permute(0, 3, 1, 2).to(dtype=vae.dtype) * 2.0 - 1.0
    return vae.encode(x).latent_dist.mean * float(vae.config.scaling_factor)


class _WithGradient(torch.autograd.Function):
    """A precomputed loss value whose gradient with respect to `images` is also precomputed."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None


def unet_predictor(
    pipe,
    cameras: torch.Tensor,
    prompt_embeds: tuple[torch.Tensor, torch.Tensor],
    image_embeds: torch.Tensor | None = None,
) -> NoisePredictor:
    """The pipeline's UNet as a NoisePredictor: one batched call on [unconditional, conditional].

    cameras: (V, 16) flattened normalised camera→world matrices (the model's camera input).
    prompt_embeds: (conditional (1, seq, dim), unconditional (1, seq, dim)) as `pipe.encode_prompt` returns them.
    image_embeds: (V, D) IP-Adapter image prompt of each view (models with an IP-Adapter), zeros in the
    unconditional half, as the pipeline samples.
    """
    unet = pipe.unet
    cond, uncond = prompt_embeds

    def predict(z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = z_t.shape[0]
        sample = torch.cat([z_t, z_t]).to(unet.dtype)
        text = torch.cat([uncond.expand(v, -1, -1), cond.expand(v, -1, -1)]).to(unet.dtype)
        camera = torch.cat([cameras, cameras]).reshape(2 * v, 16).to(unet.dtype)
        extra = {}
        if image_embeds is not None:
            extra["image_embeds"] = torch.cat([torch.zeros_like(image_embeds), image_embeds]).to(sample.device)
        eps = unet(sample, t, encoder_hidden_states=text, camera=camera, num_views=v, **extra).sample
        eps_uncond, eps_cond = eps.float().chunk(2)
        return eps_uncond, eps_cond

    return predict


def sds_loss(
    pipe,
    images: torch.Tensor,
    cameras: torch.Tensor | None = None,
    prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    t_range: tuple[float, float] = (0.02, 0.2),
    guidance_scale: float = 5.0,
    std_rescale: float = 0.25,
    generator: torch.Generator | None = None,
    predictor: NoisePredictor | None = None,
    resolution: int | None = None,
    chunk: int | None = 8,
    image_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """4D-SDS of rendered multi-view videos: 0.5·‖z − sg(x̂0)‖² summed, divided by the number of views.

    images: (V, F, H, W, 3) float in [0, 1] (renders, differentiable); resized to `resolution`² (the model's)
    when given and different. cameras (V, 16), prompt_embeds and (IP-Adapter models) image_embeds (V, D) drive
    the pipeline's UNet; `predictor`
    replaces it (tests, or another model). t is drawn uniformly in t_range × the scheduler's train steps.
    std_rescale r: x̂0 ← r·x̂0·std(x̂0_cond)/std(x̂0) + (1 − r)·x̂0 (MVDream's recon_std_rescale).
    Returns a scalar whose gradient reaches `images` only through the VAE encoder.

    chunk: the VAE encoder's backward runs `chunk` images at a time (its activations for all V×F images at
    256² are tens of GB); the gradient is computed here, in chunks, and handed to autograd with the value.
    None: one plain autograd graph through the encoder (small inputs).
    """
    if images.ndim != 5 or images.shape[-1] != 3:
        raise InputError(f"4D-SDS needs renders shaped (V, F, H, W, 3), got {tuple(images.shape)}")
    lo, hi = t_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise InputError(f"t_range must satisfy 0 ≤ low ≤ high ≤ 1, got {t_range}")
    if resolution is not None and images.shape[2:4] != (resolution, resolution):
        v, f, h, w, _ = images.shape
        flat = images.reshape(v * f, h, w, 3).permute(0, 3, 1, 2)
        flat = F.interpolate(flat, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        images = flat.permute(0, 2, 3, 1).reshape(v, f, resolution, resolution, 3)
    if predictor is None:
        if cameras is None or prompt_embeds is None:
            raise InputError("4D-SDS with the pipeline's UNet needs cameras and prompt_embeds")
        predictor = unet_predictor(pipe, cameras, prompt_embeds, image_embeds)

    chunked = chunk is not None and images.requires_grad and torch.is_grad_enabled()
    with torch.set_grad_enabled(torch.is_grad_enabled() and not chunked):
        z = encode_videos(pipe, images, chunk).float()
    scheduler = pipe.scheduler
    steps = int(scheduler.config.num_train_timesteps)
    t_lo, t_hi = int(lo * steps), max(int(lo * steps), min(steps - 1, int(hi * steps)))
    t = torch.randint(t_lo, t_hi + 1, (1,), generator=generator, device=generator.device if generator else "cpu")
    t = t.to(z.device)
    noise = torch.randn(z.shape, generator=generator, device=generator.device if generator else "cpu").to(z)
    alpha_bar = scheduler.alphas_cumprod.to(z.device, torch.float32)[t].reshape(())

    with torch.no_grad():
        z_t = alpha_bar.sqrt() * z + (1.0 - alpha_bar).sqrt() * noise
        eps_uncond, eps_cond = predictor(z_t, t.reshape(()))
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x0 = (z_t - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        if std_rescale > 0:
            x0_cond = (z_t - (1.0 - alpha_bar).sqrt() * eps_cond) / alpha_bar.sqrt()
            factor = (x0_cond.std() + 1e-8) / (x0.std() + 1e-8)
            x0 = std_rescale * x0 * factor + (1.0 - std_rescale) * x0
    if not chunked:
        return 0.5 * F.mse_loss(z, x0, reduction="sum") / z.shape[0]
    v, f = images.shape[:2]
    flat = images.detach().reshape(v * f, *images.shape[2:]).requires_grad_(True)
    target = x0.permute(0, 2, 1, 3, 4).reshape(v * f, *x0.shape[1:2], *x0.shape[3:])
    total = torch.zeros((), device=z.device)
    with torch.enable_grad():
        for i in range(0, v * f, chunk):
            part = 0.5 * F.mse_loss(_encode(pipe, flat[i : i + chunk]).float(), target[i : i + chunk], reduction="sum")
            (part / v).backward()
            total = total + part.detach() / v
    return _WithGradient.apply(images, total, flat.grad.reshape(images.shape))
