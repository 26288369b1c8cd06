"""The multi-view video pipeline: text + condition images + cameras → V views × F frames (Animate3D sampling).

Diffusers conventions: a `DiffusionPipeline` over `vae`, `text_encoder`, `tokenizer`, `unet`
(`MultiViewVideoUNet`) and `scheduler` (DDIM with Animate3D's settings), classifier-free guidance, and a step
callback that can stream previews and stop the run.

Conditioning is general: `condition_images (V, F, H, W, 3)` with `condition_mask (V, F)`; the latents of the
masked entries are the clean VAE latents of those images at the start and again after every scheduler step
(Animate3D re-imposes the clean frame 0 this way). "Animate object" sets `mask[:, 0]` (four renders of the
static asset as frame 0); "video to 4D" sets `mask[0, :]` (the user's video is view 0 at every frame).
A model with an IP-Adapter also gets each view's first conditioned image as an image prompt (`image_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.free_init_utils import FreeInitMixin
from diffusers.utils import BaseOutput

from shared.errors import InputError

from .cameras import embedding_input
from .checkpoint import UntrainedModelError

VAE_CHUNK = 16  # images per VAE call: keeps decode memory flat for 4 views × 16 frames
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class MultiViewVideoOutput(BaseOutput):
    """frames: (V, F, H, W, 3) float32 in [0, 1]. trained: False for random test weights (or an unknown folder)."""

    frames: np.ndarray
    trained: bool


class MultiViewVideoPipeline(DiffusionPipeline, FreeInitMixin):
    """Samples multi-view videos with a `MultiViewVideoUNet`. Build it from a model folder with
    `backend.mvdiff.checkpoint.load_pipeline`, which also records whether the weights are trained."""

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _optional_components = ["image_encoder"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, image_encoder=None):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
        )
        if bool(unet.config.ip_adapter_image_dim) != (image_encoder is not None):
            raise InputError(
                "The UNet has an IP-Adapter but no image encoder was given (or the other way round); an IP-Adapter "
                "model folder needs image_encoder/ beside unet/."
            )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.model_info: dict = {}  # the folder's tessera_model.json, set by load_pipeline

    @property
    def trained(self) -> bool:
        return bool(self.model_info.get("trained", False))

    @property
    def num_views(self) -> int:
        return int(self.unet.config.num_views)

    # ---- encoders -------------------------------------------------------------------------------------------

    def _embed_text(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(
            text, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0].to(self.unet.dtype)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, negative_embeds), each (1, seq, dim) in the UNet's dtype."""
        return self._embed_text(prompt), self._embed_text(negative_prompt)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) in [0, 1] → (N, 4, h, w) float32 latents, scaled by the VAE's scaling factor.

        Uses the mean of the VAE posterior (deterministic), as the condition should not change with the seed.
        """
        latents = []
        for chunk in images.split(VAE_CHUNK):
            pixels = chunk.to(self.vae.device, self.vae.dtype).permute(0, 3, 1, 2) * 2.0 - 1.0
            latents.append(self.vae.encode(pixels).latent_dist.mode().float())
        return torch.cat(latents) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, 4, h, w) scaled latents → (N, H, W, 3) float32 images in [0, 1]."""
        images = []
        for chunk in latents.split(VAE_CHUNK):
            chunk = chunk.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor
            pixels = self.vae.decode(chunk).sample.float()
            images.append((pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
        return torch.cat(images)

    @torch.no_grad()
    def encode_image_prompt(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) in [0, 1] → (N, D) float32 CLIP image embeddings for the IP-Adapter (square images are
        resized to the encoder's size and normalised as CLIPImageProcessor does)."""
        size = int(self.image_encoder.config.image_size)
        pixels = images.to(self.image_encoder.device, torch.float32).permute(0, 3, 1, 2)
        pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True)
        mean = pixels.new_tensor(CLIP_MEAN)[None, :, None, None]
        std = pixels.new_tensor(CLIP_STD)[None, :, None, None]
        pixels = ((pixels.clamp(0, 1) - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixels).image_embeds.float()

    def _image_prompt(self, condition_images: np.ndarray, condition_mask: np.ndarray) -> torch.Tensor | None:
        """(V, D) IP-Adapter embeddings: each view's first conditioned frame (Animate3D: the 4 renders), or the
        first conditioned image of any view for views without one; zeros when nothing is conditioned."""
        if self.image_encoder is None:
            return None
        mask = np.asarray(condition_mask)
        if not mask.any():
            return torch.zeros(len(mask), self.unet.config.ip_adapter_image_dim, device=self._execution_device)
        first_any = tuple(np.argwhere(mask)[0])
        picks = [(v, int(np.argmax(mask[v]))) if mask[v].any() else first_any for v in range(len(mask))]
        images = np.stack([np.asarray(condition_images)[v, f] for v, f in picks]).astype(np.float32)
        return self.encode_image_prompt(torch.from_numpy(images)).to(self._execution_device)

    def _video(self, latents: torch.Tensor) -> np.ndarray:
        """(V, 4, F, h, w) latents → (V, F, H, W, 3) float32 numpy images."""
        views, channels, frames, h, w = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(views * frames, channels, h, w)
        images = self.decode_latents(flat)
        return images.reshape(views, frames, *images.shape[1:]).cpu().numpy()

    def prepare_condition(
        self, condition_images: np.ndarray, condition_mask: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents of the conditioned entries: ((V, 4, F, h, w) float32, zero where unmasked; (V, F) bool)."""
        images = np.asarray(condition_images)
        mask = np.asarray(condition_mask)
        if images.ndim != 5 or images.shape[-1] != 3:
            raise InputError(f"condition_images must be (views, frames, H, W, 3) RGB, got shape {images.shape}.")
        if mask.shape != images.shape[:2]:
            raise InputError(f"condition_mask must be (views, frames) = {images.shape[:2]}, got shape {mask.shape}.")
        if mask.dtype != np.bool_:
            raise InputError(f"condition_mask must be a boolean array, got dtype {mask.dtype}.")
        views, frames, height, width, _ = images.shape
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise InputError(f"Image size {width}×{height} must be a multiple of {self.vae_scale_factor}.")
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        latents = torch.zeros(views, 4, frames, h, w)
        picked = images[mask]
        if len(picked):
            if not np.isfinite(picked).all():
                raise InputError("condition_images contain NaN or infinite values where condition_mask is set.")
            if picked.min() < -1e-3 or picked.max() > 1.0 + 1e-3:
                raise InputError(
                    f"condition_images must be float RGB in [0, 1], got values in [{picked.min():.3g}, "
                    f"{picked.max():.3g}] (divide 8-bit images by 255)."
                )
            encoded = self.encode_images(torch.from_numpy(np.clip(picked, 0, 1).astype(np.float32)))
            v_idx, f_idx = np.nonzero(mask)
            latents[v_idx, :, f_idx] = encoded.cpu()
        return latents.to(self._execution_device), torch.from_numpy(mask).to(self._execution_device)

    # ---- denoising ------------------------------------------------------------------------------------------

    def _camera_input(self, cameras) -> torch.Tensor:
        cameras = cameras.detach().cpu().numpy() if isinstance(cameras, torch.Tensor) else np.asarray(cameras)
        if cameras.ndim == 2 and cameras.shape[1] == 16:
            cameras = cameras.reshape(-1, 4, 4)
        return torch.from_numpy(embedding_input(cameras)).to(self._execution_device, self.unet.dtype)

    def _guided_noise(
        self,
        latents: torch.Tensor,
        t,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor],
        camera: torch.Tensor,
        guidance_scale: float,
        image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε for (B·V, 4, F, h, w) latents with classifier-free guidance; camera (V, 16), image_embeds (V, D) or
        None; float32 out. The unconditional half gets the negative prompt and no image prompt (zeros)."""
        positive, negative = prompt_embeds
        rows = latents.shape[0]
        batches = rows // camera.shape[0]
        text = positive.expand(rows, -1, -1)
        cams = camera.repeat(batches, 1)
        images = None if image_embeds is None else image_embeds.repeat(batches, 1)
        model_in = self.scheduler.scale_model_input(latents, t).to(self.unet.dtype)
        if guidance_scale > 1.0:
            text = torch.cat([negative.expand(rows, -1, -1), text])
            cams = torch.cat([cams, cams])
            images = None if images is None else torch.cat([torch.zeros_like(images), images])
            model_in = torch.cat([model_in, model_in])
        eps = self.unet(model_in, t, text, cams, num_views=camera.shape[0], image_embeds=images).sample.float()
        if guidance_scale > 1.0:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    @torch.no_grad()
    def predict_noise(
        self,
        latents: torch.Tensor,
        t,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor],
        cameras,
        guidance_scale: float,
        image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Guided ε for noisy latents (B·V, 4, F, h, w) at timestep t (for 4D-SDS).

        prompt_embeds: `encode_prompt(...)`'s pair; cameras: (V, 4, 4) camera→world (any distance; normalised
        here) shared by the B samples; image_embeds: (V, D) `encode_image_prompt` of the views' condition images
        for a model with an IP-Adapter (None: no image prompt). No gradient flows (SDS stops it at x̂0 anyway).
        Returns float32.
        """
        camera = self._camera_input(cameras)
        if latents.ndim != 5 or latents.shape[0] % camera.shape[0]:
            raise InputError(
                f"latents must be (B·{camera.shape[0]}, 4, F, h, w) for {camera.shape[0]} cameras, "
                f"got shape {tuple(latents.shape)}."
            )
        if image_embeds is not None:
            image_embeds = image_embeds.to(self._execution_device)
        return self._guided_noise(
            latents.to(self._execution_device), t, prompt_embeds, camera, guidance_scale, image_embeds
        )

    def _check_call(self, condition_images, cameras, num_frames: int, num_inference_steps: int) -> None:
        cameras = np.asarray(cameras)
        if cameras.shape != (self.num_views, 4, 4):
            raise InputError(f"cameras must be ({self.num_views}, 4, 4) camera→world matrices, got {cameras.shape}.")
        shape = np.shape(condition_images)
        if len(shape) != 5 or shape[:2] != (self.num_views, num_frames):
            raise InputError(
                f"condition_images must be ({self.num_views} views, {num_frames} frames, H, W, 3), got shape {shape}."
            )
        limit = int(self.unet.config.motion_max_seq_length)
        if not 1 <= num_frames <= limit:
            raise InputError(f"num_frames must be between 1 and {limit} for this model, got {num_frames}.")
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1, got {num_inference_steps}.")
        multiple = self.vae_scale_factor * 2**self.unet.num_upsamplers
        if shape[2] % multiple or shape[3] % multiple:
            raise InputError(f"Image size {shape[3]}×{shape[2]} must be a multiple of {multiple} for this model.")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        condition_images: np.ndarray,
        condition_mask: np.ndarray,
        cameras: np.ndarray,
        *,
        num_frames: int,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        seed: int | None = 0,
        callback: Callable[[int, int, Callable[[], np.ndarray]], None] | None = None,
        allow_untrained: bool = False,
        free_init_iterations: int = 1,
    ) -> MultiViewVideoOutput:
        """Generate (V, F, H, W, 3) frames.

        condition_images (V, F, H, W, 3) float in [0, 1] and condition_mask (V, F) bool: the entries kept clean
        (see the module doc). cameras (V, 4, 4): camera→world of the views (`cameras.mvdream_cameras`).
        callback(step, total, preview) runs after every step; preview() decodes the current estimate of the clean
        video to (V, F, H, W, 3). It may raise (e.g. `JobCancelled`) to stop: the error propagates.
        free_init_iterations > 1 samples that many times with FreeInit (diffusers' `FreeInitMixin`, Butterworth
        filter, as Animate3D's sampler with 3): each pass after the first starts from the previous result
        diffused to t = T, keeping its low spatio-temporal frequencies and drawing the high ones afresh, which
        steadies the motion at the cost of one full sampling per pass. The callback's total counts every pass.
        Raises `UntrainedModelError` for random test weights unless allow_untrained.
        """
        if not (self.trained or allow_untrained):
            raise UntrainedModelError(self.model_info.get("source", "this pipeline"))
        self._check_call(condition_images, cameras, num_frames, num_inference_steps)
        device = self._execution_device
        condition, mask = self.prepare_condition(condition_images, condition_mask)
        keep = mask[:, None, :, None, None]  # broadcasts over (V, 4, F, h, w)
        prompt_embeds = self.encode_prompt(prompt, negative_prompt)
        camera = self._camera_input(cameras)
        image_embeds = self._image_prompt(condition_images, condition_mask)

        generator = torch.Generator("cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        if int(free_init_iterations) < 1:
            raise InputError(f"free_init_iterations must be at least 1 (1: no FreeInit), got {free_init_iterations}.")
        passes = int(free_init_iterations)
        if passes > 1:
            self.enable_free_init(num_iters=passes, method="butterworth")
        else:
            self.disable_free_init()
        latents = torch.randn(condition.shape, generator=generator).to(device) * self.scheduler.init_noise_sigma
        total = passes * num_inference_steps
        for k in range(passes):
            if passes > 1:  # pass 0 records the initial noise; later passes re-noise the previous result
                latents, _ = self._apply_free_init(latents, k, num_inference_steps, device, latents.dtype, generator)
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            latents = torch.where(keep, condition, latents)
            for i, t in enumerate(self.scheduler.timesteps):
                eps = self._guided_noise(latents, t, prompt_embeds, camera, guidance_scale, image_embeds)
                step = self.scheduler.step(eps, t, latents)
                latents = torch.where(keep, condition, step.prev_sample)
                if callback is not None:
                    estimate = getattr(step, "pred_original_sample", None)
                    estimate = latents if estimate is None else torch.where(keep, condition, estimate)
                    done = k * num_inference_steps + i + 1
                    callback(done, total, lambda estimate=estimate: self._video(estimate))
        return MultiViewVideoOutput(frames=self._video(latents), trained=self.trained)
