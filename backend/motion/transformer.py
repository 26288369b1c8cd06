"""Masked token transformer over a motion token grid (time × body part), trained and decoded as in MoMask.

The grid comes from `MotionTokenizer.encode`: codes (B, T', G) in [0, codebook_size). The model is a
bidirectional transformer encoder over the L = T'·G grid positions, flattened time-major, plus one leading
condition token (a projected condition vector, or a learned "no condition" token when there is none or it is
dropped for classifier-free guidance). Each position embeds token (codebook_size + 1 ids, the last is
[MASK]) + time + group. See ../shared/reference/anchors-motion-rig.md §1.4 and §7.4.

Training (`training_loss`) follows MoMask — cosine mask ratio, of the masked positions 10 % random tokens,
88 % of the rest [MASK], the rest kept, cross-entropy on masked positions — but masks are drawn inside a
random *shape* so the model sees the states that editing produces: the whole grid (free generation), a
contiguous time span (in-betweening, extension), or a subset of groups over a span or the whole clip (part
editing). Within the shape the cosine ratio picks how much is still masked, which covers every step of the
decoding loop.

Decoding (`generate`) is MoMask/MaskGIT confidence decoding restricted to the editable positions:
everything editable starts masked; at step s of S the `cos(π/2 · s/(S-1))` share of editable positions with
the lowest confidence is re-masked and re-predicted; positions not re-masked are fixed from then on.
Non-editable codes are returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MaskedTransformerConfig:
    """Sizes of a `MaskedTokenTransformer`. cond_dim=0: unconditioned."""

    codebook_size: int
    n_groups: int
    max_time_tokens: int = 128  # longest clip in tokens (frames / downsample)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    ff: int = 1024
    dropout: float = 0.1
    cond_dim: int = 0  # e.g. 384 for a text embedding
    cond_drop: float = 0.1  # probability of training without the condition (classifier-free guidance)

    @property
    def mask_id(self) -> int:
        return self.codebook_size


class MaskedTokenTransformer(nn.Module):
    """Bidirectional masked-token model over (B, T', G) code grids. See the module docstring."""

    def __init__(self, config: MaskedTransformerConfig):
        super().__init__()
        c = config
        self.config = c
        self.token_embedding = nn.Embedding(c.codebook_size + 1, c.d_model)
        self.time_embedding = nn.Embedding(c.max_time_tokens, c.d_model)
        self.group_embedding = nn.Embedding(c.n_groups, c.d_model)
        self.null_condition = nn.Parameter(torch.zeros(c.d_model))
        self.condition_projection = nn.Linear(c.cond_dim, c.d_model) if c.cond_dim > 0 else None
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.codebook_size)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.time_embedding.weight, std=0.02)
        nn.init.normal_(self.group_embedding.weight, std=0.02)

    # -- internals ---------------------------------------------------------------------------------------

    def _check(self, codes: torch.Tensor, cond: torch.Tensor | None) -> None:
        c = self.config
        if codes.ndim != 3 or codes.shape[2] != c.n_groups:
            raise ValueError(f"expected codes (B, T', {c.n_groups}), got {tuple(codes.shape)}")
        if codes.shape[1] > c.max_time_tokens:
            raise ValueError(f"{codes.shape[1]} time tokens is over this model's maximum of {c.max_time_tokens}")
        if cond is not None and (c.cond_dim == 0 or cond.shape != (codes.shape[0], c.cond_dim)):
            expected = "no condition" if c.cond_dim == 0 else f"cond ({codes.shape[0]}, {c.cond_dim})"
            raise ValueError(f"this model takes {expected}, got cond of shape {tuple(cond.shape)}")

    def _logits(
        self, tokens: torch.Tensor, cond: torch.Tensor | None, cond_dropped: torch.Tensor | None
    ) -> torch.Tensor:
        """tokens (B,T',G) in [0, codebook_size] (last = MASK) → logits (B,T',G,K)."""
        b, t_tokens, g = tokens.shape
        x = (
            self.token_embedding(tokens)
            + self.time_embedding.weight[:t_tokens, None, :]
            + self.group_embedding.weight[None, :g, :]
        ).reshape(b, t_tokens * g, -1)
        first = self.null_condition.expand(b, -1)
        if cond is not None and self.condition_projection is not None:
            projected = self.condition_projection(cond.to(x.dtype))
            first = projected if cond_dropped is None else torch.where(cond_dropped[:, None], first, projected)
        x = self.encoder(torch.cat([first[:, None, :], x], dim=1))
        return self.head(self.norm(x[:, 1:])).reshape(b, t_tokens, g, -1)

    def _guided_logits(self, tokens: torch.Tensor, cond: torch.Tensor | None, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance: uncond + (cond − uncond)·scale, both halves in one batch."""
        if cond is None or cfg_scale == 1.0:
            return self._logits(tokens, cond, None)
        b = tokens.shape[0]
        dropped = torch.arange(2 * b, device=tokens.device) >= b
        both = self._logits(tokens.repeat(2, 1, 1), cond.repeat(2, 1), dropped)
        conditioned, unconditioned = both[:b], both[b:]
        return unconditioned + (conditioned - unconditioned) * cfg_scale

    def _sample_masks(
        self, shape: tuple[int, int, int], editable: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Training masks (B,T',G) bool: a random shape (all / time span / groups), cosine share of it masked."""
        b, t_tokens, g = shape
        device = self.head.weight.device

        def rand(*size: int) -> torch.Tensor:
            return torch.rand(size, generator=generator, device=device)

        kind = rand(b)  # < 0.4 scattered over the whole grid, < 0.7 time span, else group subset
        longest = max(1, math.ceil(0.9 * t_tokens))
        length = 1 + (rand(b) * longest).long().clamp(max=longest - 1)
        start = (rand(b) * (t_tokens - length + 1)).long()
        steps = torch.arange(t_tokens, device=device)
        span = (steps[None] >= start[:, None]) & (steps[None] < (start + length)[:, None])  # (B, T')
        groups = rand(b, g) < 0.5
        none, pick = groups.sum(1) == 0, (rand(b) * g).long().clamp(max=g - 1)
        groups[none, pick[none]] = True
        group_time = torch.where((rand(b) < 0.5)[:, None], span, torch.ones_like(span))
        region = torch.ones(b, t_tokens, g, dtype=torch.bool, device=device)
        region = torch.where((kind >= 0.4)[:, None, None] & (kind < 0.7)[:, None, None], span[:, :, None], region)
        region = torch.where((kind >= 0.7)[:, None, None], group_time[:, :, None] & groups[:, None, :], region)
        if editable is not None:
            region = region & editable
            empty = region.flatten(1).sum(1) == 0
            region = torch.where(empty[:, None, None], editable, region)

        flat = region.reshape(b, -1)
        n_region = flat.sum(1)
        ratio = torch.cos(math.pi / 2 * rand(b))
        n_mask = torch.where(n_region > 0, (ratio * n_region).round().clamp(min=1), 0)
        scores = torch.where(flat, rand(b, flat.shape[1]), 2.0)  # outside the region: never picked
        ranks = scores.argsort(1).argsort(1)
        return (ranks < n_mask[:, None]).reshape(shape)

    # -- public API ---------------------------------------------------------------------------------------

    def forward(
        self,
        codes: torch.Tensor,
        masked: torch.Tensor,
        cond: torch.Tensor | None = None,
        cond_dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """codes (B,T',G) long, masked (B,T',G) bool (replaced by [MASK]), cond (B,cond_dim) or None,
        cond_dropped (B,) bool or None → logits (B,T',G,codebook_size)."""
        self._check(codes, cond)
        tokens = torch.where(masked, self.config.mask_id, codes)
        return self._logits(tokens, cond, cond_dropped)

    def training_loss(
        self,
        codes: torch.Tensor,
        cond: torch.Tensor | None = None,
        editable: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MoMask masked-token loss on codes (B,T',G) with random mask shapes (see module doc).

        editable: optional (B,T',G) bool, masks are drawn only there (e.g. to leave padding alone).
        generator drives the masks, corruption and condition dropout (dropout layers use torch's global RNG).
        Returns (cross-entropy on masked positions, {"loss", "accuracy", "mask_fraction"}).
        """
        self._check(codes, cond)
        c = self.config
        device = codes.device
        masked = self._sample_masks(tuple(codes.shape), editable, generator)
        u = torch.rand(codes.shape, generator=generator, device=device)
        random_tokens = torch.randint(0, c.codebook_size, codes.shape, generator=generator, device=device)
        corrupt = masked & (u < 0.1)
        to_mask = masked & ~corrupt & (torch.rand(codes.shape, generator=generator, device=device) < 0.88)
        tokens = torch.where(corrupt, random_tokens, codes)
        tokens = torch.where(to_mask, c.mask_id, tokens)
        cond_dropped = None
        if cond is not None:
            cond_dropped = torch.rand(codes.shape[0], generator=generator, device=device) < c.cond_drop
        logits = self._logits(tokens, cond, cond_dropped)
        if not bool(masked.any()):
            zero = logits.sum() * 0.0
            return zero, {"loss": 0.0, "accuracy": 0.0, "mask_fraction": 0.0}
        loss = F.cross_entropy(logits[masked], codes[masked])
        accuracy = (logits[masked].argmax(-1) == codes[masked]).float().mean()
        metrics = {
            "loss": float(loss.detach()),
            "accuracy": float(accuracy),
            "mask_fraction": float(masked.float().mean()),
        }
        return loss, metrics

    @torch.inference_mode()
    def generate(
        self,
        codes: torch.Tensor,
        editable: torch.Tensor,
        cond: torch.Tensor | None = None,
        steps: int = 10,
        temperature: float = 1.0,
        top_k_fraction: float = 0.9,
        cfg_scale: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Fill the editable positions of codes (B,T',G) by confidence decoding; returns new codes (B,T',G).

        editable (B,T',G) bool: positions to generate; all others come back bit-identical (their values
        condition the generation). Values of codes at editable positions are ignored.
        temperature: 0 = argmax (deterministic); > 0 samples (Gumbel-max with `generator`, reproducible).
        top_k_fraction: share of the vocabulary removed before sampling (MoMask's topk_filter_thres; 0.9
        keeps the top 10 %). cfg_scale: classifier-free guidance scale, used only when cond is given.
        Runs in eval mode (dropout off) and restores the previous mode.
        """
        self._check(codes, cond)
        if editable.shape != codes.shape:
            raise ValueError(f"editable {tuple(editable.shape)} must have the shape of codes {tuple(codes.shape)}")
        c = self.config
        was_training = self.training
        self.eval()
        try:
            b, t_tokens, g = codes.shape
            edit = editable.reshape(b, -1)
            ids = torch.where(edit, c.mask_id, codes.reshape(b, -1))
            n_edit = edit.sum(1)
            scores = torch.where(edit, 0.0, math.inf)
            keep = max(1, math.ceil((1.0 - top_k_fraction) * c.codebook_size))
            for t in torch.linspace(0, 1, steps).tolist():
                n_mask = torch.where(n_edit > 0, (math.cos(math.pi / 2 * t) * n_edit).round().clamp(min=1), 0)
                is_mask = scores.argsort(1).argsort(1) < n_mask[:, None]
                ids = torch.where(is_mask, c.mask_id, ids)
                logits = self._guided_logits(ids.reshape(b, t_tokens, g), cond, cfg_scale).reshape(
                    b, -1, c.codebook_size
                )
                threshold = logits.topk(keep, dim=-1).values[..., -1:]
                filtered = logits.masked_fill(logits < threshold, -math.inf)
                if temperature == 0:
                    pred = filtered.argmax(-1)
                else:
                    u = torch.rand(filtered.shape, generator=generator, device=filtered.device).clamp(1e-10, 1 - 1e-7)
                    gumbel = -torch.log(-torch.log(u))
                    pred = (filtered / temperature + gumbel).argmax(-1)
                ids = torch.where(is_mask, pred, ids)
                confidence = logits.softmax(-1).gather(-1, pred[..., None]).squeeze(-1)
                scores = torch.where(is_mask, confidence, math.inf)
            return torch.where(edit, ids, codes.reshape(b, -1)).reshape(b, t_tokens, g)
        finally:
            self.train(was_training)
