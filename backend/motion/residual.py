"""Residual token transformer: the residual quantiser layers of generated grid positions (MoMask's second model).

The tokenizer quantises each grid latent with Q residual layers (`MotionTokenizer`, `n_quantizers`); the
masked transformer (`transformer.py`) generates the base layer only. Decoding base codes alone is coarse
(measured on held-out Bandai-Namco clips with 12 layers: 30-frame in-betweens decoded from the true base
codes score 0.98× interpolation's L2P, from the true codes of all layers 0.33×), so generated positions need their
residual layers too. As in MoMask (../shared/reference/anchors-motion-rig.md §1.4) one bidirectional
transformer predicts layer j of every position from the partial latents of layers 0…j-1, for j = 1…Q-1 in
turn. Its input is the tokenizer's own partial latent (the sum of the code vectors of the layers so far,
`MotionTokenizer.partial_latents`) projected to the model width, plus embeddings of the layer being
predicted, the time step and the body part; so kept positions around a gap, whose codes are all known,
tell the model what their residual looked like at the layers below.

Training (`training_loss`) draws one layer j per window and scores every position (nothing is masked: the
partial latent already hides layers ≥ j). Filling (`fill`) predicts layers 1…Q-1 greedily at the editable
positions only; the other positions keep their codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ResidualTransformerConfig:
    """Sizes of a `ResidualTokenTransformer`; the first four follow the tokenizer."""

    codebook_size: int
    n_groups: int
    n_quantizers: int
    code_dim: int
    max_time_tokens: int = 128
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    ff: int = 512
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_quantizers < 2:
            raise ValueError("a residual transformer needs a tokenizer with at least 2 quantizer layers")


class ResidualTokenTransformer(nn.Module):
    """Predicts residual layer j of a (B, T', G) grid from its partial latents; see the module docstring."""

    def __init__(self, config: ResidualTransformerConfig):
        super().__init__()
        c = config
        self.config = c
        self.latent_projection = nn.Linear(c.code_dim, c.d_model)
        self.layer_embedding = nn.Embedding(c.n_quantizers, c.d_model)
        self.time_embedding = nn.Embedding(c.max_time_tokens, c.d_model)
        self.group_embedding = nn.Embedding(c.n_groups, c.d_model)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.codebook_size)
        for emb in (self.layer_embedding, self.time_embedding, self.group_embedding):
            nn.init.normal_(emb.weight, std=0.02)

    def logits(self, partial: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
        """partial (B, T', G, code_dim) latents of the layers below `layer` (B,) → logits (B, T', G, K)."""
        c = self.config
        b, t_tokens, g, dim = partial.shape
        if g != c.n_groups or dim != c.code_dim:
            raise ValueError(
                f"expected partial latents (B, T', {c.n_groups}, {c.code_dim}), got {tuple(partial.shape)}"
            )
        if t_tokens > c.max_time_tokens:
            raise ValueError(f"{t_tokens} time tokens is over this model's maximum of {c.max_time_tokens}")
        x = (
            self.latent_projection(partial)
            + self.layer_embedding(layer)[:, None, None, :]
            + self.time_embedding.weight[:t_tokens, None, :]
            + self.group_embedding.weight[None, :g, :]
        )
        x = self.encoder(x.reshape(b, t_tokens * g, -1))
        return self.head(self.norm(x)).reshape(b, t_tokens, g, -1)

    def training_loss(
        self, codes: torch.Tensor, partial_latents, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """codes (B, T', G, Q) of training windows; `partial_latents(codes, layer)` → (B, T', G, code_dim) latents
        of the layers below `layer` (B,) (the tokenizer's `partial_latents`). One random layer j ≥ 1 per
        window; cross-entropy on all positions. Returns (loss, {"loss", "accuracy"})."""
        b, q = codes.shape[0], codes.shape[-1]
        layer = torch.randint(1, q, (b,), generator=generator)
        with torch.no_grad():
            partial = partial_latents(codes, layer)
        target = codes.gather(-1, layer[:, None, None, None].expand(*codes.shape[:3], 1))[..., 0]
        logits = self.logits(partial, layer)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    @torch.no_grad()
    def fill(
        self, codes: torch.Tensor, editable: torch.Tensor, partial_latents, min_confidence: float = 0.0
    ) -> torch.Tensor:
        """codes (B, T', G, Q) with the base layer set; layers 1…Q-1 predicted greedily, in turn, at the `editable`
        (B, T', G) positions. Other positions are returned unchanged.

        min_confidence: a position whose predicted code has a lower probability keeps that layer and the ones
        above it absent (-1): a wrong fine code adds an error of its own, an absent one adds nothing."""
        out = codes.clone()
        b, q = codes.shape[0], codes.shape[-1]
        open_ = editable.clone()
        for j in range(1, q):
            layer = torch.full((b,), j, dtype=torch.long)
            probs = self.logits(partial_latents(out, layer), layer).softmax(-1)
            confidence, predicted = probs.max(-1)
            open_ &= confidence >= min_confidence
            out[..., j] = torch.where(open_, predicted, torch.where(editable, -1, out[..., j]))
            if not open_.any():
                out[..., j + 1 :][editable] = -1
                break
        return out
