"""The multi-view video UNet: diffusers' `UNetMotionModel` + Animate3D's camera embedding and view attention.

Animate3D's MV-VDM (anchors-4d §2.1, §5.1) rebuilt on current diffusers parts:

* `UNetMotionModel` (SD1.5 spatial blocks + AnimateDiff motion modules) is the base class, so the model is a
  `ModelMixin` + `ConfigMixin` that saves to and loads from a folder with its config (the config gains
  `num_views`, `camera_dim`, `i2v_attention`, `motion_view_attention`).
* `camera_embedding = TimestepEmbedding(16, time_embed_dim)` (MVDream): the flattened normalised camera→world
  matrix of each view is embedded and added to the time embedding, before the per-frame broadcast.
* Every spatial self-attention (`attn1` of the 2-D transformer blocks) gets `MultiViewSelfAttn`: joint attention
  over the tokens of the V views of one frame (MVDream), plus the image-to-video branch (`to_q_i2v`, zero-initialised
  `to_out_i2v`) that lets every frame attend to frame 0 — the clean condition frame during sampling.
* Every motion-module attention gets `MotionViewAttn` when `motion_view_attention` is on: the stock AnimateDiff
  temporal attention plus a view branch over all V·h·w tokens of one frame (own `to_q_sp/k_sp/v_sp/out_sp`, 2-D
  sine position encoding), merged by `AlphaBlender(alpha=0, "learned")` as in Animate3D's released config. The
  temporal sinusoidal encoding moves from the transformer block (`pos_embed`, set to None) into the processor
  (`time_pos_embed`) because the view branch must see the features without it — Animate3D does the same, so its
  checkpoint keys line up.
* Optional IP-Adapter (Animate3D feeds its 4 condition renders through IP-Adapter SD1.5): with
  `ip_adapter_image_dim` set (1024 for IP-Adapter SD1.5's CLIP ViT-H image encoder), `encoder_hid_proj` projects
  each view's image embedding to `ip_adapter_tokens` extra tokens that every cross-attention (`attn2`) attends to
  through diffusers' `IPAdapterAttnProcessor2_0` — the same module and key names diffusers' IP-Adapter loader uses.

The processors are `nn.Module`s installed in `__init__`, so their weights are part of `state_dict()` under
`…attn1.processor.*` and survive save/load. All attention runs through `F.scaled_dot_product_attention`.

Tensor layout: `sample (B·V, C, F, h, w)`; inside `UNetMotionModel` the batch is flattened in the order (b, v, f).
The processors learn V, F and the latent size from a context the model fills at the start of each forward, so one
model instance must not run two forwards at the same time (jobs that share a cached model run one at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import (
    ImageProjection,
    MultiIPAdapterImageProjection,
    SinusoidalPositionalEmbedding,
    TimestepEmbedding,
)
from diffusers.models.resnet import AlphaBlender
from diffusers.models.unets.unet_motion_model import UNetMotionModel, UNetMotionOutput
from torch import nn


@dataclass
class MultiViewContext:
    """What the processors need to know about the current forward; set by `MultiViewVideoUNet.forward`."""

    views: int = 1
    frames: int = 1
    batch_views: int = 1  # B·V
    height: int = 1  # latent height at the UNet input
    width: int = 1

    def level_size(self, tokens: int) -> tuple[int, int]:
        """(h, w) of the feature map with `tokens` = h·w pixels: the input size halved (rounding up) k times."""
        h, w = self.height, self.width
        while h * w > tokens and (h > 1 or w > 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        if h * w != tokens:
            raise RuntimeError(f"No UNet level of a {self.height}×{self.width} latent has {tokens} pixels.")
        return h, w


def _attention(heads: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head SDPA on projected (N, L, C) tensors → (N, Lq, C)."""
    n, lq, c = query.shape
    d = c // heads
    q = query.view(n, lq, heads, d).transpose(1, 2)
    k = key.view(n, -1, heads, d).transpose(1, 2)
    v = value.view(n, -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n, lq, c).to(query.dtype)


def _finish(attn: Attention, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The tail every diffusers processor shares: residual connection and output rescale."""
    if attn.residual_connection:
        hidden = hidden + residual
    return hidden / attn.rescale_output_factor


def sine_position_2d(height: int, width: int, channels: int, device, dtype) -> torch.Tensor:
    """(h·w, channels) 2-D sine/cosine encoding, DETR style with normalised coordinates (Animate3D's, so the
    released view-attention weights see the encoding they were trained with): channels/2 for y then x."""
    feats = channels // 2
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + 1e-6) * 2 * math.pi
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + 1e-6) * 2 * math.pi
    dim_t = torch.arange(feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)

    def encode(coord: torch.Tensor) -> torch.Tensor:  # (n,) → (n, feats), sin on even and cos on odd channels
        pos = coord[:, None] / dim_t
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).reshape(len(coord), -1)

    pos_y = encode(y)[:, None, :].expand(height, width, feats)
    pos_x = encode(x)[None, :, :].expand(height, width, feats)
    pos = torch.cat((pos_y, pos_x), dim=2).reshape(height * width, 2 * feats)
    if pos.shape[1] < channels:  # odd channel count: leave the last channel unencoded
        pos = F.pad(pos, (0, channels - pos.shape[1]))
    return pos.to(dtype)


class MultiViewSelfAttn(nn.Module):
    """Spatial self-attention over the V views of one frame jointly, plus attention to frame 0 (I2V branch).

    Input tokens (B·V·F, L, C) in the order (b, v, f) are regrouped to (B·F, V·L, C) so each frame's V views
    attend to each other (MVDream). The I2V branch (Animate3D) queries with `to_q_i2v` and attends to the keys and
    values of frame 0 of the same sample; its output goes through the zero-initialised `to_out_i2v` and is added
    before the block's output projection, so a fresh model behaves exactly like one without the branch.
    """

    def __init__(self, attn: Attention, context: MultiViewContext, i2v: bool = True):
        super().__init__()
        self.context = context
        self.i2v = i2v
        if i2v:
            inner = attn.to_q.out_features
            self.to_q_i2v = nn.Linear(attn.to_q.in_features, inner, bias=False)
            self.to_out_i2v = nn.Linear(inner, inner, bias=True)
            with torch.no_grad():
                self.to_q_i2v.weight.copy_(attn.to_q.weight)
                nn.init.zeros_(self.to_out_i2v.weight)
                nn.init.zeros_(self.to_out_i2v.bias)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ctx = self.context
        n, length, channels = hidden_states.shape
        views, frames = ctx.views, ctx.frames
        batch = n // (views * frames)
        residual = hidden_states
        x = hidden_states.view(batch, views, frames, length, channels).transpose(1, 2)
        x = x.reshape(batch * frames, views * length, channels)
        key, value = attn.to_k(x), attn.to_v(x)
        out = _attention(attn.heads, attn.to_q(x), key, value)
        if self.i2v:
            first_key = key.view(batch, frames, *key.shape[1:])[:, :1].expand(-1, frames, -1, -1)
            first_value = value.view(batch, frames, *value.shape[1:])[:, :1].expand(-1, frames, -1, -1)
            i2v = _attention(
                attn.heads, self.to_q_i2v(x), first_key.reshape(key.shape), first_value.reshape(value.shape)
            )
            out = out + self.to_out_i2v(i2v)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.view(batch, frames, views, length, -1).transpose(1, 2).reshape(n, length, -1)
        return _finish(attn, out, residual)


class MotionViewAttn(nn.Module):
    """Motion-module attention: AnimateDiff's temporal attention + a view branch over one frame's V·h·w tokens.

    Input tokens (B·V·h·w, F, C) in the order (b, v, y, x). The temporal branch re-applies the sinusoidal frame
    encoding (`time_pos_embed`) that the transformer block no longer applies; the view branch adds a 2-D sine
    encoding of the pixel position and attends over all views' pixels of the same frame. The two are merged by
    `alpha_blender` (sigmoid of a learned factor, starting at 0.5 as in Animate3D).
    """

    def __init__(self, attn: Attention, context: MultiViewContext, max_frames: int):
        super().__init__()
        self.context = context
        inner = attn.to_q.out_features
        dim = attn.to_q.in_features
        self.to_q_sp = nn.Linear(dim, inner, bias=False)
        self.to_k_sp = nn.Linear(dim, inner, bias=False)
        self.to_v_sp = nn.Linear(dim, inner, bias=False)
        self.to_out_sp = nn.Linear(inner, inner, bias=True)
        self.time_pos_embed = SinusoidalPositionalEmbedding(dim, max_seq_length=max_frames)
        self.alpha_blender = AlphaBlender(alpha=0.0, merge_strategy="learned")

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        ctx = self.context
        n, frames, channels = hidden_states.shape
        views = ctx.views
        batch = ctx.batch_views // views
        pixels = n // ctx.batch_views
        height, width = ctx.level_size(pixels)
        residual = hidden_states

        spatial = hidden_states.view(batch, views, pixels, frames, channels).permute(0, 3, 1, 2, 4)
        spatial = spatial + sine_position_2d(height, width, channels, spatial.device, spatial.dtype)
        spatial = spatial.reshape(batch * frames, views * pixels, channels)
        spatial = _attention(attn.heads, self.to_q_sp(spatial), self.to_k_sp(spatial), self.to_v_sp(spatial))
        spatial = self.to_out_sp(spatial)
        spatial = spatial.view(batch, frames, views, pixels, -1).permute(0, 2, 3, 1, 4).reshape(n, frames, -1)

        temporal = self.time_pos_embed(hidden_states)
        context = temporal if encoder_hidden_states is None else encoder_hidden_states
        temporal = _attention(attn.heads, attn.to_q(temporal), attn.to_k(context), attn.to_v(context))
        temporal = attn.to_out[1](attn.to_out[0](temporal))

        return _finish(attn, self.alpha_blender(spatial, temporal), residual)


class MultiViewVideoUNet(UNetMotionModel):
    """`UNetMotionModel` with a camera embedding and multi-view attention (Animate3D's MV-VDM). See the module doc."""

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "DownBlockMotion",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int | tuple[int] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int | tuple[int] | tuple[tuple] = 1,
        reverse_transformer_layers_per_block: int | tuple[int] | tuple[tuple] | None = None,
        temporal_transformer_layers_per_block: int | tuple[int] | tuple[tuple] = 1,
        reverse_temporal_transformer_layers_per_block: int | tuple[int] | tuple[tuple] | None = None,
        transformer_layers_per_mid_block: int | tuple[int] | None = None,
        temporal_transformer_layers_per_mid_block: int | tuple[int] | None = 1,
        use_linear_projection: bool = False,
        num_attention_heads: int | tuple[int, ...] = 8,
        motion_max_seq_length: int = 32,
        motion_num_attention_heads: int | tuple[int, ...] = 8,
        reverse_motion_num_attention_heads: int | tuple[int, ...] | tuple[tuple[int, ...], ...] | None = None,
        use_motion_mid_block: bool = True,
        mid_block_layers: int = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        projection_class_embeddings_input_dim: int | None = None,
        time_cond_proj_dim: int | None = None,
        num_views: int = 4,
        camera_dim: int = 16,
        i2v_attention: bool = True,
        motion_view_attention: bool = True,
        ip_adapter_image_dim: int | None = None,
        ip_adapter_tokens: int = 4,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            reverse_transformer_layers_per_block=reverse_transformer_layers_per_block,
            temporal_transformer_layers_per_block=temporal_transformer_layers_per_block,
            reverse_temporal_transformer_layers_per_block=reverse_temporal_transformer_layers_per_block,
            transformer_layers_per_mid_block=transformer_layers_per_mid_block,
            temporal_transformer_layers_per_mid_block=temporal_transformer_layers_per_mid_block,
            use_linear_projection=use_linear_projection,
            num_attention_heads=num_attention_heads,
            motion_max_seq_length=motion_max_seq_length,
            motion_num_attention_heads=motion_num_attention_heads,
            reverse_motion_num_attention_heads=reverse_motion_num_attention_heads,
            use_motion_mid_block=use_motion_mid_block,
            mid_block_layers=mid_block_layers,
            encoder_hid_dim=encoder_hid_dim,
            encoder_hid_dim_type="ip_image_proj" if ip_adapter_image_dim else encoder_hid_dim_type,
            addition_embed_type=addition_embed_type,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        self.camera_embedding = TimestepEmbedding(camera_dim, block_out_channels[0] * 4, act_fn=act_fn)
        if ip_adapter_image_dim:  # IP-Adapter SD1.5's image projection, as diffusers' loader builds it
            projection = ImageProjection(ip_adapter_image_dim, cross_attention_dim, ip_adapter_tokens)
            self.encoder_hid_proj = MultiIPAdapterImageProjection([projection])
        self.mv_context = MultiViewContext(views=num_views)
        self._camera: torch.Tensor | None = None
        # The camera is added to the time embedding's output, i.e. before UNetMotionModel repeats it per frame.
        self.time_embedding.register_forward_hook(self._add_camera_embedding)
        self.set_attn_processor(self.multiview_processors())
        if motion_view_attention:  # MotionViewAttn applies the frame encoding itself (time_pos_embed)
            for name, module in self.named_modules():
                if "motion_modules." in name and isinstance(module, BasicTransformerBlock):
                    module.pos_embed = None

    def multiview_processors(self) -> dict[str, Any]:
        """Fresh processors for every attention layer (for `set_attn_processor`): MultiViewSelfAttn on spatial
        attn1, MotionViewAttn on the motion modules (when enabled), IPAdapterAttnProcessor2_0 on the
        cross-attentions of an IP-Adapter model, SDPA elsewhere."""
        modules = dict(self.named_modules())
        processors: dict[str, Any] = {}
        for name in self.attn_processors:
            attn = modules[name.removesuffix(".processor")]
            if "motion_modules." in name:
                if self.config.motion_view_attention:
                    processors[name] = MotionViewAttn(attn, self.mv_context, self.config.motion_max_seq_length)
                else:
                    processors[name] = AttnProcessor2_0()
            elif name.endswith("attn1.processor"):
                processors[name] = MultiViewSelfAttn(attn, self.mv_context, i2v=self.config.i2v_attention)
            elif self.config.ip_adapter_image_dim:
                processors[name] = IPAdapterAttnProcessor2_0(
                    attn.to_q.out_features, attn.to_k.in_features, num_tokens=(self.config.ip_adapter_tokens,)
                )
            else:
                processors[name] = AttnProcessor2_0()
        return processors

    def _add_camera_embedding(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self._camera is None:
            return output
        return output + self.camera_embedding(self._camera.to(output.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        camera: torch.Tensor,
        num_views: int | None = None,
        image_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> UNetMotionOutput | tuple[torch.Tensor]:
        """Predict the noise of `sample`.

        sample: (B·V, C, F, h, w) latents, views of one sample consecutive. timestep: scalar or (B·V,).
        encoder_hidden_states: (B·V, seq, dim) text embeddings (repeated per frame here).
        camera: (B·V, 16) flattened normalised camera→world matrices (`cameras.embedding_input`).
        image_embeds: (B·V, ip_adapter_image_dim) IP-Adapter image embeddings, for models with an IP-Adapter
        (zeros — no image prompt — when omitted, as for the unconditional half of guidance).
        Other keyword arguments go to `UNetMotionModel.forward`. Returns `.sample` (B·V, C, F, h, w).
        """
        views = int(num_views or self.config.num_views)
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B·V, C, F, h, w), got shape {tuple(sample.shape)}.")
        batch_views, _, frames, height, width = sample.shape
        if batch_views % views:
            raise ValueError(f"sample batch {batch_views} is not a multiple of num_views={views}.")
        if camera.shape != (batch_views, self.config.camera_dim):
            raise ValueError(f"camera must be ({batch_views}, {self.config.camera_dim}), got {tuple(camera.shape)}.")
        if encoder_hidden_states.shape[0] != batch_views:
            raise ValueError(
                f"encoder_hidden_states must have one row per view ({batch_views}), got "
                f"{encoder_hidden_states.shape[0]}."
            )
        if frames > self.config.motion_max_seq_length:
            raise ValueError(f"{frames} frames exceed the motion modules' {self.config.motion_max_seq_length}.")
        ip_dim = self.config.ip_adapter_image_dim
        if image_embeds is not None and not ip_dim:
            raise ValueError("image_embeds given, but this model has no IP-Adapter (ip_adapter_image_dim is None).")
        if ip_dim:
            if image_embeds is None:
                image_embeds = sample.new_zeros(batch_views, ip_dim)
            if image_embeds.shape != (batch_views, ip_dim):
                raise ValueError(f"image_embeds must be ({batch_views}, {ip_dim}), got {tuple(image_embeds.shape)}.")
            kwargs["added_cond_kwargs"] = {"image_embeds": [image_embeds[:, None].to(self.dtype)]}
        ctx = self.mv_context
        ctx.views, ctx.frames, ctx.batch_views, ctx.height, ctx.width = views, frames, batch_views, height, width
        self._camera = camera
        try:
            states = encoder_hidden_states.repeat_interleave(frames, dim=0)
            return super().forward(sample, timestep, states, **kwargs)
        finally:
            self._camera = None


def tiny_unet_config(views: int = 4, frames: int = 4) -> dict:
    """A ~2M-parameter config for tests: two levels (32, 64 channels), cross-attention dim 32.

    `frames` only matters above 32: the motion modules' frame encoding covers max(32, frames) frames.
    """
    return {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlockMotion", "DownBlockMotion"),
        "up_block_types": ("UpBlockMotion", "CrossAttnUpBlockMotion"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "cross_attention_dim": 32,
        "num_attention_heads": 2,
        "motion_num_attention_heads": 2,
        "motion_max_seq_length": max(32, int(frames)),
        "use_motion_mid_block": True,
        "num_views": int(views),
    }


def animate3d_unet_config(views: int = 4, ip_adapter: bool = True) -> dict:
    """The published architecture: MVDream's SD1.5 UNet (320/640/1280/1280, cross-attention 768, 8 heads) with
    AnimateDiff v1-5-2 motion modules (8 heads, 32 frame positions, motion mid block), Animate3D's view
    attention and (by default) IP-Adapter SD1.5's image projection (1024-d CLIP ViT-H embeddings, 4 tokens).
    Converted Animate3D weights fit this config; with random weights it is for speed/memory tests."""
    return {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": (
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "CrossAttnDownBlockMotion",
            "DownBlockMotion",
        ),
        "up_block_types": (
            "UpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
            "CrossAttnUpBlockMotion",
        ),
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "cross_attention_dim": 768,
        "num_attention_heads": 8,
        "motion_num_attention_heads": 8,
        "motion_max_seq_length": 32,
        "use_motion_mid_block": True,
        "num_views": int(views),
        "ip_adapter_image_dim": 1024 if ip_adapter else None,
    }


def build_unet(config: dict) -> MultiViewVideoUNet:
    """A randomly initialised `MultiViewVideoUNet` from a config dict (e.g. `tiny_unet_config()`)."""
    return MultiViewVideoUNet.from_config(config)
