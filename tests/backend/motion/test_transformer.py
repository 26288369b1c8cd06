"""Masked token transformer: logits, MoMask training on toy token grids, confidence decoding and editing."""

from __future__ import annotations

import pytest
import torch

from backend.motion.transformer import MaskedTokenTransformer, MaskedTransformerConfig

K, G, T = 16, 3, 8


def tiny(cond_dim: int = 0, dropout: float = 0.0) -> MaskedTokenTransformer:
    config = MaskedTransformerConfig(
        codebook_size=K, n_groups=G, max_time_tokens=16, d_model=32, n_layers=2, n_heads=2, ff=64,
        dropout=dropout, cond_dim=cond_dim,
    )  # fmt: skip
    return MaskedTokenTransformer(config)


def class_grids(classes: torch.Tensor) -> torch.Tensor:
    """(B,) class ids → (B, T, G) codes: class c walks the codebook with step c+1, each group offset by 5."""
    t = torch.arange(T)[None, :, None]
    g = torch.arange(G)[None, None, :]
    return ((classes[:, None, None] + 1) * t + 5 * g + classes[:, None, None]) % K


def one_hot(classes: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, 4).float()


def trained_conditional_model() -> MaskedTokenTransformer:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = tiny(cond_dim=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.losses = []
    for _ in range(200):
        classes = torch.randint(0, 4, (32,), generator=generator)
        loss, metrics = model.training_loss(class_grids(classes), one_hot(classes), generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.losses.append(metrics["loss"])
    return model.eval()


@pytest.fixture(scope="module")
def conditional_model() -> MaskedTokenTransformer:
    return trained_conditional_model()


def test_logits_shape_and_masked_positions_ignore_their_codes():
    torch.manual_seed(0)
    model = tiny().eval()
    codes = torch.randint(0, K, (2, T, G))
    masked = torch.zeros(2, T, G, dtype=torch.bool)
    masked[:, 2:5, 1] = True
    logits = model(codes, masked)
    assert logits.shape == (2, T, G, K)
    other = codes.clone()
    other[masked] = (other[masked] + 7) % K
    assert torch.equal(model(other, masked), logits)


def test_condition_paths_dropped_equals_none_and_wrong_shapes_are_refused():
    torch.manual_seed(0)
    model = tiny(cond_dim=4).eval()
    codes = torch.randint(0, K, (2, T, G))
    masked = torch.rand(2, T, G) < 0.5
    cond = torch.randn(2, 4)
    unconditioned = model(codes, masked)
    assert torch.equal(model(codes, masked, cond, torch.tensor([True, True])), unconditioned)
    mixed = model(codes, masked, cond, torch.tensor([False, True]))
    assert torch.equal(mixed[1], unconditioned[1])
    assert not torch.allclose(mixed[0], unconditioned[0])
    with pytest.raises(ValueError, match="cond"):
        model(codes, masked, torch.randn(2, 5))
    with pytest.raises(ValueError, match="no condition"):
        tiny()(codes, masked, cond)
    with pytest.raises(ValueError, match="maximum"):
        model(torch.zeros(1, 17, G, dtype=torch.long), torch.zeros(1, 17, G, dtype=torch.bool))


def test_training_loss_falls_and_the_model_learns_class_patterns(conditional_model):
    losses = conditional_model.losses
    assert sum(losses[-20:]) / 20 < sum(losses[:5]) / 5 / 3
    classes = torch.arange(4)
    everything = torch.ones(4, T, G, dtype=torch.bool)
    garbage = torch.zeros(4, T, G, dtype=torch.long)
    out = conditional_model.generate(garbage, everything, one_hot(classes), temperature=0.0, cfg_scale=2.0)
    assert (out == class_grids(classes)).float().mean() > 0.8


def test_training_masks_stay_inside_editable():
    torch.manual_seed(0)
    model = tiny()
    editable = torch.zeros(4, T, G, dtype=torch.bool)
    editable[:, 3:6] = True
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        masked = model._sample_masks((4, T, G), editable, generator)
        assert bool(masked.any(dim=(1, 2)).all()) and not bool((masked & ~editable).any())
    loss, metrics = model.training_loss(torch.randint(0, K, (4, T, G)), editable=editable, generator=generator)
    assert loss.requires_grad and 0 <= metrics["accuracy"] <= 1


def test_generate_leaves_non_editable_codes_bit_identical(conditional_model):
    classes = torch.tensor([0, 1, 2, 3])
    codes = class_grids(classes)
    editable = torch.zeros(4, T, G, dtype=torch.bool)
    editable[0, 3:5] = True  # in-between
    editable[1, :, 2] = True  # part edit
    editable[2] = torch.rand(T, G, generator=torch.Generator().manual_seed(0)) < 0.3
    # sample 3: nothing editable
    generator = torch.Generator().manual_seed(1)
    out = conditional_model.generate(codes, editable, one_hot(classes), temperature=1.0, generator=generator)
    assert torch.equal(out[~editable], codes[~editable])
    assert out.dtype == torch.long and bool(((out >= 0) & (out < K)).all())
    # with the context intact, greedy decoding fills the in-between span with the class pattern
    greedy = conditional_model.generate(codes, editable, one_hot(classes), temperature=0.0, cfg_scale=2.0)
    assert torch.equal(greedy[~editable], codes[~editable])
    assert (greedy[0, 3:5] == codes[0, 3:5]).float().mean() > 0.8


def test_generate_is_reproducible_argmax_and_seeded(conditional_model):
    codes = torch.zeros(2, T, G, dtype=torch.long)
    editable = torch.ones(2, T, G, dtype=torch.bool)
    cond = one_hot(torch.tensor([1, 2]))
    greedy = [conditional_model.generate(codes, editable, cond, temperature=0.0) for _ in range(2)]
    assert torch.equal(greedy[0], greedy[1])
    sampled = [
        conditional_model.generate(
            codes, editable, cond, temperature=2.0, top_k_fraction=0.0, generator=torch.Generator().manual_seed(s)
        )
        for s in (5, 5, 6)
    ]
    assert torch.equal(sampled[0], sampled[1])
    assert not torch.equal(sampled[0], sampled[2])


def test_classifier_free_guidance_and_unconditioned_generation(conditional_model):
    codes = torch.zeros(2, T, G, dtype=torch.long)
    editable = torch.ones(2, T, G, dtype=torch.bool)
    cond = one_hot(torch.tensor([0, 3]))
    masked = torch.ones(2, T, G, dtype=torch.bool)
    with torch.inference_mode():
        conditioned = conditional_model(codes, masked, cond)
        unconditioned = conditional_model(codes, masked)
        guided = conditional_model._guided_logits(torch.full_like(codes, K), cond, 3.0)
        assert torch.allclose(guided, unconditioned + 3.0 * (conditioned - unconditioned), atol=1e-4)
        assert torch.allclose(conditional_model._guided_logits(torch.full_like(codes, K), cond, 1.0), conditioned)
    free = conditional_model.generate(codes, editable, None, temperature=0.0)
    assert free.shape == codes.shape


def test_generate_restores_training_mode():
    model = tiny(dropout=0.1).train()
    model.generate(torch.zeros(1, T, G, dtype=torch.long), torch.ones(1, T, G, dtype=torch.bool), steps=3)
    assert model.training
