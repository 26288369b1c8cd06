"""Motion tokenizer: grid shapes, padding, determinism, learning on synthetic sinusoids, dead-code reset."""

from __future__ import annotations

import pytest
import torch

from backend.motion.tokenizer import EMACodebook, MotionTokenizer, TokenizerConfig

GROUPS = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def tiny_config(**overrides) -> TokenizerConfig:
    sizes = dict(group_width=16, width=32, depth=1, dilations=(1,), codebook_size=32, code_dim=8)
    sizes.update(overrides)
    return TokenizerConfig(feature_dim=10, group_columns=GROUPS, **sizes)


def sinusoids(generator: torch.Generator, batch: int = 16, frames: int = 32) -> torch.Tensor:
    """(B, T, 10): each group moves as one sinusoid (own frequency, phase, amplitude), a phase step per column."""
    t = torch.arange(frames).float()[None, :, None]
    out = torch.zeros(batch, frames, 10)
    for columns in GROUPS:
        freq = 0.1 + 0.3 * torch.rand(batch, 1, 1, generator=generator)
        phase = 6.28 * torch.rand(batch, 1, 1, generator=generator)
        amp = 0.5 + torch.rand(batch, 1, 1, generator=generator)
        out[:, :, columns] = amp * torch.sin(freq * t + phase + torch.arange(len(columns)).float())
    return out


@pytest.mark.parametrize("frames", [1, 13, 16, 31])
def test_any_clip_length_pads_to_the_token_grid_and_crops_back(frames):
    torch.manual_seed(0)
    model = MotionTokenizer(tiny_config()).eval()
    x = torch.randn(2, frames, 10)
    codes = model.encode(x)
    assert codes.shape == (2, -(-frames // 4), 3) and codes.dtype == torch.long
    assert model.decode(codes).shape == (2, codes.shape[1] * 4, 10)
    assert model.decode(codes, n_frames=frames).shape == (2, frames, 10)
    recon, stats = model(x)
    assert recon.shape == x.shape
    assert {"commit_loss", "perplexity", "used_codes_fraction"} <= set(stats)


def test_eval_mode_is_deterministic_and_leaves_the_codebook_alone():
    torch.manual_seed(0)
    model = MotionTokenizer(tiny_config())
    model(torch.randn(4, 16, 10))  # initialise the codebook from a batch
    model.eval()
    codebook = model.quantizers[0].codes.clone()
    x = torch.randn(3, 20, 10)
    assert torch.equal(model.encode(x), model.encode(x))
    assert torch.equal(model.decode(model.encode(x)), model.decode(model.encode(x)))
    assert torch.equal(model(x)[0], model(x)[0])
    assert torch.equal(model.quantizers[0].codes, codebook)


def test_a_group_code_depends_only_on_its_own_columns():
    torch.manual_seed(0)
    model = MotionTokenizer(tiny_config())
    model(torch.randn(8, 16, 10))
    model.eval()
    x = torch.randn(2, 16, 10)
    edited = x.clone()
    edited[:, :, GROUPS[1]] += 3.0
    a, b = model.encode(x), model.encode(edited)
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 2], b[:, :, 2])


def test_training_on_sinusoids_cuts_the_reconstruction_loss():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = MotionTokenizer(tiny_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(100):
        x = sinusoids(generator)
        recon, stats = model(x)
        loss, terms = model.loss(x, recon, stats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(terms["recon"])
    start, end = sum(history[:5]) / 5, sum(history[-10:]) / 10
    assert end < start / 4, (start, end)
    assert 1.0 < float(stats["perplexity"]) <= 32


def test_residual_quantizers_code_shape_and_absent_layers():
    torch.manual_seed(0)
    model = MotionTokenizer(tiny_config(n_quantizers=3))
    model(torch.randn(4, 16, 10))
    model.eval()
    x = torch.randn(2, 16, 10)
    codes = model.encode(x)
    assert codes.shape == (2, 4, 3, 3) and bool((codes >= 0).all())
    base_only = codes.clone()
    base_only[..., 1:] = -1
    # a base-layer grid and a grid whose residual layers are absent decode the same
    assert torch.allclose(model.decode(codes[..., 0]), model.decode(base_only))
    assert not torch.allclose(model.decode(codes), model.decode(base_only))


def test_dead_codes_are_reset_to_encoder_outputs():
    torch.manual_seed(0)
    codebook = EMACodebook(size=16, dim=4, decay=0.9)
    z = torch.randn(64, 4)
    codebook(z)  # initialise from data
    with torch.no_grad():  # push all but one code far away: only code 0 is used
        codebook.codes[1:] = 100.0
        codebook.ema_sum[1:] = 100.0
        codebook.ema_count[1:] = 1.0
    before = codebook.nearest(z).unique().numel()
    for _ in range(3):
        codebook(z)
    after = codebook.nearest(z).unique().numel()
    assert before == 1 and after >= 4
    assert float(codebook.codes.abs().max()) < 10.0


def test_loss_weights_and_velocity_term():
    model = MotionTokenizer(tiny_config())
    x = torch.zeros(1, 8, 10)
    recon = torch.zeros(1, 8, 10)
    recon[:, ::2, 0] = 1.0  # jitter in column 0 only
    stats = {"commit_loss": torch.tensor(0.0)}
    plain, terms = model.loss(x, recon, stats)
    assert terms["velocity"] > 0
    weights = torch.ones(10)
    weights[0] = 0.0
    weighted, _ = model.loss(x, recon, stats, extra_weights=weights)
    assert float(weighted) == 0.0 < float(plain)


def test_linear_path_starts_as_an_exact_principal_component_codec():
    """With code_dim ≥ downsample × a group's columns, the PCA of init_linear is complete, so the continuous
    codec (before quantising) reconstructs any input exactly: it checks the kernel layout, the column order
    and the centring. The deep paths' last layers start at zero, so nothing else contributes yet."""
    torch.manual_seed(0)
    shuffled = [[0, 5, 9, 2], [1, 7, 3], [4, 6, 8]]  # groups that interleave columns test the column order
    sizes = dict(group_width=16, width=32, depth=1, dilations=(1,), codebook_size=32, code_dim=16, linear_path=True)
    model = MotionTokenizer(TokenizerConfig(feature_dim=10, group_columns=shuffled, **sizes))
    model.init_linear([torch.randn(40, 10) * torch.linspace(0.5, 2.0, 10) + 3.0 for _ in range(6)])
    x = torch.randn(3, 24, 10) * 2.0 - 1.0  # other data than the PCA's: a complete basis still holds it
    with torch.no_grad():
        assert torch.allclose(model._decode_latents(model._latents(x)), x, atol=1e-4)
        assert all(float(enc[-1].weight.abs().sum()) == 0.0 for enc in model.encoders)
        assert float(model.decoder[-1].weight.abs().sum()) == 0.0


def test_linear_path_keeps_the_leading_components_and_leaves_other_models_alone():
    """With fewer components than window dims, the codec keeps the windows' main variation: on sinusoids (a
    low-dimensional family) 8 components per group reconstruct unseen clips far better than predicting the
    mean. A tokenizer without linear_path ignores init_linear."""
    generator = torch.Generator().manual_seed(3)
    model = MotionTokenizer(tiny_config(code_dim=8, linear_path=True))
    model.init_linear(list(sinusoids(generator, batch=32, frames=64)))
    x = sinusoids(generator, batch=8, frames=32)
    with torch.no_grad():
        err = (model._decode_latents(model._latents(x)) - x).pow(2).mean()
    assert float(err) < 0.1 * float((x - x.mean(dim=(0, 1))).pow(2).mean())

    plain = MotionTokenizer(tiny_config())
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    plain.init_linear(list(sinusoids(generator, batch=4, frames=64)))
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())
