"""Motion tokenizer: normalised motion features → a grid of discrete tokens over (time, body part) and back.

Input clips are normalised float32 features `x` (B, T, D); `group_columns` splits the D columns into G body
parts (root/trajectory columns in group 0). The tokenizer follows T2M-GPT/MoMask's 1D-conv VQ-VAE
(../shared/reference/anchors-motion-rig.md §1.3, §7.4) but keeps one token stream per body part, as 4DMoT
keeps one per joint (§1.5), so a part edit is a mask over one column of the grid:

    x (B,T,D) ─ per-group conv encoders (÷downsample in time) → latents (B,T',G,code_dim)
              ─ EMA codebook (+ optional residual layers) → codes (B,T',G[,Q])
              ─ one joint decoder over the whole grid (×downsample) → (B,T,D)

Choices:
- One encoder per group rather than one shared encoder with a group embedding: the groups have different
  column counts and statistics (root velocities vs. arm rotations), and a group's tokens then depend on its
  own columns only, so editing the arm does not change the codes of the legs. The encoders are small
  (`group_width`); the decoder sees all groups at once so the decoded pose is coherent across parts.
- One codebook shared by all groups: the transformer then has one vocabulary and one output head (the
  group is told by its group embedding), and with the few clips a user has, a shared codebook keeps more
  codes alive than G small ones.
- A linear path beside the deep one (`linear_path`): each group's latent is also a linear map of its
  `downsample`-frame window (a strided conv), and the decoder adds the transposed map back to the group's
  columns. `init_linear` sets both maps to the principal components of the training windows, with the deep
  paths' last layers at zero, so training starts from PCA and the networks learn what PCA misses. Measured on
  Bandai-Namco's held-out clips: the conv VQ-VAE alone fits its training clips to 21 mm but held-out ones to
  42 mm even without quantising (it learns the training poses, not the pose space), while a 32-d PCA of the
  same windows reconstructs held-out clips to 9 mm; starting from PCA keeps that generalisation.
- Residual quantisation (`n_quantizers > 1`, MoMask) is optional; the default is a single layer. The token
  model only models the base layer. Code -1 in a residual layer means "this layer is absent" and adds
  nothing; quantiser dropout trains the decoder to work with residual layers absent, so positions a token
  model generated decode with base codes only (residual -1) while untouched positions keep their source
  residual codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TokenizerConfig:
    """Sizes of a `MotionTokenizer`. `group_columns` partitions range(feature_dim), root columns in group 0."""

    feature_dim: int
    group_columns: list[list[int]]
    downsample: int = 4  # frames per token; a power of two
    group_width: int = 128  # channels of each per-group encoder
    width: int = 256  # channels of the joint decoder
    depth: int = 3  # residual blocks per resolution level
    dilations: tuple[int, ...] = (9, 3, 1)  # one per residual block, cycled if depth is larger
    codebook_size: int = 512
    code_dim: int = 64
    ema_decay: float = 0.99
    commit_weight: float = 0.02
    velocity_weight: float = 0.5
    n_quantizers: int = 1  # >1: residual VQ (MoMask); the token model sees the base layer only
    quantizer_dropout: float = 0.2  # probability of dropping the residual layers after a random one
    groups: list[str] = field(default_factory=list)  # optional group names, for messages and metadata
    linear_path: bool = False  # a linear (PCA-initialised) encoder/decoder beside the convolutional one

    def __post_init__(self) -> None:
        columns = sorted(c for group in self.group_columns for c in group)
        if columns != list(range(self.feature_dim)):
            raise ValueError(f"group_columns must partition range({self.feature_dim}) (every column in one group)")
        if any(len(group) == 0 for group in self.group_columns):
            raise ValueError("every group needs at least one feature column")
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of two, got {self.downsample}")
        if self.groups and len(self.groups) != len(self.group_columns):
            raise ValueError(f"{len(self.groups)} group names for {len(self.group_columns)} groups")
        if self.n_quantizers < 1:
            raise ValueError("n_quantizers must be at least 1")

    @property
    def n_groups(self) -> int:
        return len(self.group_columns)


class _ResBlock(nn.Module):
    """T2M-GPT's ResConv1DBlock: x + conv1x1(relu(dilated conv3(relu(x))))."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.relu(self.conv(F.relu(x))))


def _res_stack(width: int, depth: int, dilations: tuple[int, ...]) -> nn.Sequential:
    return nn.Sequential(*(_ResBlock(width, dilations[i % len(dilations)]) for i in range(depth)))


def _encoder(in_dim: int, width: int, out_dim: int, levels: int, depth: int, dilations: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 3, padding=1), nn.ReLU()]
    for _ in range(levels):
        layers += [nn.Conv1d(width, width, 4, stride=2, padding=1), _res_stack(width, depth, dilations)]
    layers.append(nn.Conv1d(width, out_dim, 3, padding=1))
    return nn.Sequential(*layers)


def _decoder(in_dim: int, width: int, out_dim: int, levels: int, depth: int, dilations: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 3, padding=1), nn.ReLU()]
    for _ in range(levels):
        layers += [
            _res_stack(width, depth, dilations),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv1d(width, width, 3, padding=1),
        ]
    layers += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, out_dim, 3, padding=1)]
    return nn.Sequential(*layers)


class EMACodebook(nn.Module):
    """Vector quantiser with an EMA-updated codebook and dead-code reset (T2M-GPT/MoMask, reference §1.3).

    Initialised from the first training batch; in training mode every call updates the code sums/counts
    with decay `decay` and moves codes whose EMA count fell below 1 to random encoder outputs of the batch
    (dead-code reset).
    Eval mode changes nothing, so it is deterministic.
    """

    def __init__(self, size: int, dim: int, decay: float):
        super().__init__()
        self.size, self.dim, self.decay = size, dim, decay
        self.register_buffer("codes", torch.zeros(size, dim))
        self.register_buffer("ema_sum", torch.zeros(size, dim))
        self.register_buffer("ema_count", torch.zeros(size))
        self.register_buffer("initialised", torch.tensor(False))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(N, dim) → (N,) long, index of the nearest code."""
        distances = (z * z).sum(1, keepdim=True) - 2 * z @ self.codes.T + (self.codes * self.codes).sum(1)
        return distances.argmin(1)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.codes)

    def _tiled(self, z: torch.Tensor) -> torch.Tensor:
        """At least `size` rows drawn from z (tiled with a little noise when z has fewer rows)."""
        if z.shape[0] >= self.size:
            return z[torch.randperm(z.shape[0], device=z.device)[: self.size]]
        repeats = math.ceil(self.size / z.shape[0])
        tiled = z.repeat(repeats, 1) + torch.randn(z.shape[0] * repeats, self.dim, device=z.device) * (
            0.01 / math.sqrt(self.dim)
        )
        return tiled[torch.randperm(tiled.shape[0], device=z.device)[: self.size]]

    @torch.no_grad()
    def _update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        if not bool(self.initialised):
            start = self._tiled(z)
            self.codes.copy_(start)
            self.ema_sum.copy_(start)
            self.ema_count.fill_(1.0)
            self.initialised.fill_(True)
            idx = self.nearest(z)
        onehot = F.one_hot(idx, self.size).type_as(z)  # (N, K)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ z, alpha=1 - self.decay)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        # Dead codes restart at random encoder outputs with the statistics of one sample there; T2M-GPT keeps
        # the stale EMA sum, which drags a revived code back towards where it died once it is used again.
        dead = self.ema_count < 1.0
        restart = self._tiled(z)
        self.ema_sum.copy_(torch.where(dead[:, None], restart, self.ema_sum))
        self.ema_count.copy_(torch.where(dead, 1.0, self.ema_count))
        self.codes.copy_(self.ema_sum / self.ema_count[:, None])

    def forward(self, z: torch.Tensor, update: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, dim) → (straight-through quantised (N, dim), idx (N,), commitment loss).

        Updates the codebook only in training mode and when `update` is true.
        """
        if self.training and update:
            self._update(z.detach(), self.nearest(z.detach()))
        idx = self.nearest(z.detach())
        zq = self.lookup(idx)
        commit = F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), idx, commit


class MotionTokenizer(nn.Module):
    """Grid VQ-VAE over (time, body part). See the module docstring for the architecture and its choices."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        c = config
        self.levels = int(math.log2(c.downsample))
        self.encoders = nn.ModuleList(
            _encoder(len(cols), c.group_width, c.code_dim, self.levels, c.depth, c.dilations)
            for cols in c.group_columns
        )
        self.quantizers = nn.ModuleList(
            EMACodebook(c.codebook_size, c.code_dim, c.ema_decay) for _ in range(c.n_quantizers)
        )
        self.decoder = _decoder(c.n_groups * c.code_dim, c.width, c.feature_dim, self.levels, c.depth, c.dilations)
        if c.linear_path:
            # kernels span the token's frames and half a token either side (zero there at init), so training can
            # blend neighbouring tokens instead of leaving a step at every token boundary
            d = c.downsample
            span, pad = (2 * d, d // 2) if d > 1 else (1, 0)
            self.linear_encoders = nn.ModuleList(
                nn.Conv1d(len(cols), c.code_dim, span, stride=d, padding=pad) for cols in c.group_columns
            )
            self.linear_decoders = nn.ModuleList(
                nn.ConvTranspose1d(c.code_dim, len(cols), span, stride=d, padding=pad) for cols in c.group_columns
            )
            order = torch.tensor([col for cols in c.group_columns for col in cols])
            self.register_buffer("column_order", torch.argsort(order), persistent=False)

    @torch.no_grad()
    def init_linear(self, clips: list[torch.Tensor], max_windows: int = 200_000) -> None:
        """Set the linear path to the principal components of the `downsample`-frame windows of `clips` ((T, D)
        normalised features each), and zero the deep paths' last layers, so the model starts as per-group PCA
        with `code_dim` components. No-op without `linear_path`."""
        if not self.config.linear_path:
            return
        d, k = self.config.downsample, self.config.code_dim
        windows = [c[: len(c) // d * d].reshape(-1, d, c.shape[-1]) for c in clips if len(c) >= d]
        if not windows:
            raise ValueError(f"init_linear needs clips of at least {d} frames")
        all_windows = torch.cat(windows)[:max_windows].double()  # (N, d, D)
        for g, cols in enumerate(self.config.group_columns):
            x = all_windows[:, :, cols].reshape(len(all_windows), -1)  # (N, d·C), frame-major
            mean = x.mean(0)
            _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
            basis = torch.zeros(k, x.shape[1], dtype=x.dtype)
            basis[: min(k, len(vt))] = vt[:k]
            kernel = basis.reshape(k, d, len(cols)).permute(0, 2, 1)  # (k, C, d) = Conv1d weight layout
            enc, dec = self.linear_encoders[g], self.linear_decoders[g]
            # a transposed conv adds one bias per column to every frame, so the components are centred on the
            # per-column mean (the windows' mean differs between their frames only by noise); with code_dim ≥
            # downsample × columns the linear path alone reconstructs any input exactly
            column_mean = mean.reshape(d, len(cols)).mean(0)
            pad = enc.padding[0]  # the token's own frames are taps pad … pad + d - 1
            enc.weight.zero_()
            enc.weight[..., pad : pad + d] = kernel
            enc.bias.copy_(-(basis @ column_mean.repeat(d)))
            dec.weight.zero_()
            dec.weight[..., pad : pad + d] = kernel  # ConvTranspose1d weight: (in=k, out=C, span)
            dec.bias.copy_(column_mean)
        for layer in (*(enc[-1] for enc in self.encoders), self.decoder[-1]):
            layer.weight.zero_()
            layer.bias.zero_()

    # -- helpers -----------------------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame until T is a multiple of `downsample`."""
        extra = -x.shape[1] % self.config.downsample
        if extra:
            x = torch.cat([x, x[:, -1:].expand(-1, extra, -1)], dim=1)
        return x

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) with T a multiple of downsample → (B, T', G, code_dim)."""
        if x.ndim != 3 or x.shape[-1] != self.config.feature_dim:
            raise ValueError(f"expected motion features (B, T, {self.config.feature_dim}), got {tuple(x.shape)}")
        per_group = [
            enc(x[:, :, cols].transpose(1, 2))
            for enc, cols in zip(self.encoders, self.config.group_columns, strict=True)
        ]
        if self.config.linear_path:
            per_group = [
                z + lin(x[:, :, cols].transpose(1, 2))
                for z, lin, cols in zip(per_group, self.linear_encoders, self.config.group_columns, strict=True)
            ]
        return torch.stack(per_group, dim=2).permute(0, 3, 2, 1)  # (B,dim,G,T') → (B,T',G,dim)

    def _quantise(self, z: torch.Tensor, learn: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,T',G,dim) → (quantised sum, codes (B,T',G,Q) with -1 for dropped layers, commitment loss).

        learn: update the codebooks and apply quantiser dropout (training mode only).
        """
        flat = z.reshape(-1, z.shape[-1])
        n_active = len(self.quantizers)
        learn = learn and self.training
        if learn and n_active > 1 and torch.rand(()) < self.config.quantizer_dropout:
            n_active = int(torch.randint(1, n_active + 1, ()))
        residual, total = flat, torch.zeros_like(flat)
        codes = torch.full((flat.shape[0], len(self.quantizers)), -1, dtype=torch.long, device=z.device)
        commits = []
        for q, quantizer in enumerate(self.quantizers[:n_active]):
            zq, idx, commit = quantizer(residual, update=learn)
            residual = residual - zq.detach()
            total = total + zq
            codes[:, q] = idx
            commits.append(commit)
        return total.reshape(z.shape), codes.reshape(*z.shape[:-1], -1), torch.stack(commits).mean()

    def _embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B,T',G) or (B,T',G,Q), -1 = absent layer → summed code vectors (B,T',G,dim)."""
        if codes.ndim == 3:
            codes = codes.unsqueeze(-1)
        if codes.shape[-1] > len(self.quantizers) or codes.shape[2] != self.config.n_groups:
            raise ValueError(
                f"codes of shape {tuple(codes.shape)} do not fit {self.config.n_groups} groups × "
                f"{len(self.quantizers)} quantizer layers"
            )
        total = torch.zeros(*codes.shape[:3], self.config.code_dim, device=codes.device)
        for q in range(codes.shape[-1]):
            idx = codes[..., q]
            present = (idx >= 0).unsqueeze(-1)
            total = total + torch.where(present, self.quantizers[q].lookup(idx.clamp(min=0)), 0.0)
        return total

    def partial_latents(self, codes: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
        """codes (B, T', G, Q), layer (B,) → the summed code vectors of layers 0 … layer-1 (B, T', G, code_dim):
        what the residual transformer sees when it predicts `layer`."""
        below = torch.arange(codes.shape[-1], device=codes.device) < layer.to(codes.device)[:, None, None, None]
        return self._embed_codes(torch.where(below, codes, -1))

    def _decode_latents(self, zq: torch.Tensor) -> torch.Tensor:
        b, t_tokens, g, dim = zq.shape
        out = self.decoder(zq.reshape(b, t_tokens, g * dim).transpose(1, 2))
        if self.config.linear_path:
            linear = torch.cat([dec(zq[:, :, i].transpose(1, 2)) for i, dec in enumerate(self.linear_decoders)], dim=1)
            out = out + linear[:, self.column_order]
        return out.transpose(1, 2)

    # -- public API ---------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) normalised features, any T → codes (B, ceil(T/downsample), G) long, or (..., Q) with RVQ."""
        with torch.no_grad():
            _, codes, _ = self._quantise(self._latents(self._pad(x)), learn=False)
        return codes[..., 0] if len(self.quantizers) == 1 else codes

    def decode(self, codes: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """codes (B, T', G) or (B, T', G, Q) → features (B, T'·downsample, D), cropped to `n_frames` if given.

        With RVQ, (B, T', G) codes are base-layer codes and residual code -1 means "absent" (see module doc).
        """
        out = self._decode_latents(self._embed_codes(codes))
        return out if n_frames is None else out[:, :n_frames]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, D) → (reconstruction (B, T, D), stats).

        stats: `commit_loss` (scalar tensor with grad), `perplexity` and `used_codes_fraction` of the base
        layer's codes in this batch (monitors codebook collapse), `codes` (B, T', G, Q).
        """
        n_frames = x.shape[1]
        zq, codes, commit = self._quantise(self._latents(self._pad(x)), learn=True)
        recon = self._decode_latents(zq)[:, :n_frames]
        base = codes[..., 0].reshape(-1)
        usage = torch.bincount(base, minlength=self.config.codebook_size).float() / base.numel()
        entropy = -(usage * torch.log(usage.clamp(min=1e-10))).sum()
        stats = {
            "commit_loss": commit,
            "perplexity": entropy.exp().detach(),
            "used_codes_fraction": (usage > 0).float().mean(),
            "codes": codes,
        }
        return recon, stats

    def loss(
        self,
        x: torch.Tensor,
        recon: torch.Tensor,
        stats: dict[str, torch.Tensor],
        extra_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """SmoothL1 reconstruction + velocity_weight · SmoothL1 on frame differences + commit_weight · commit.

        extra_weights: optional (D,) per-feature weights on the reconstruction and velocity terms (e.g. to
        weigh rotations over positions); weights are normalised to mean 1. Returns (loss, float terms).
        """
        recon_err = F.smooth_l1_loss(recon, x, reduction="none")
        vel_err = F.smooth_l1_loss(recon[:, 1:] - recon[:, :-1], x[:, 1:] - x[:, :-1], reduction="none")
        if extra_weights is not None:
            w = extra_weights.to(x) / extra_weights.to(x).mean()
            recon_err, vel_err = recon_err * w, vel_err * w
        recon_term = recon_err.mean()
        vel_term = vel_err.mean() if x.shape[1] > 1 else recon_term.new_zeros(())
        total = recon_term + self.config.velocity_weight * vel_term + self.config.commit_weight * stats["commit_loss"]
        terms = {
            "loss": float(total.detach()),
            "recon": float(recon_term.detach()),
            "velocity": float(vel_term.detach()),
            "commit": float(stats["commit_loss"].detach()),
        }
        return total, terms
