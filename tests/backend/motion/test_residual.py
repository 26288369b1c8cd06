"""Residual token transformer: learns residual layers from partial latents, fills only editable positions."""

from __future__ import annotations

import pytest
import torch

from backend.motion.residual import ResidualTokenTransformer, ResidualTransformerConfig

K, G, T, Q, DIM = 16, 3, 8, 4, 8


def codebooks() -> torch.Tensor:
    return torch.randn(Q, K, DIM, generator=torch.Generator().manual_seed(1))


def partial_latents_of(books: torch.Tensor):
    """The tokenizer's partial_latents for fixed codebooks: summed code vectors of the layers below `layer`."""

    def partial(codes: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*codes.shape[:3], DIM)
        for q in range(Q):
            below = (q < layer)[:, None, None, None]
            out = out + torch.where(below, books[q][codes[..., q].clamp(min=0)], 0.0)
        return out

    return partial


def grids(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T, G, Q) codes whose residual layers follow from the layers below: layer q = (sum below · 3 + q) % K."""
    base = torch.randint(0, K, (batch, T, G), generator=generator)
    layers = [base]
    for q in range(1, Q):
        layers.append((sum(layers) * 3 + q) % K)
    return torch.stack(layers, dim=-1)


def tiny() -> ResidualTokenTransformer:
    config = ResidualTransformerConfig(
        codebook_size=K, n_groups=G, n_quantizers=Q, code_dim=DIM, max_time_tokens=16,
        d_model=32, n_layers=1, n_heads=2, ff=64, dropout=0.0,
    )  # fmt: skip
    return ResidualTokenTransformer(config)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model, books = tiny(), codebooks()
    partial = partial_latents_of(books)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(300):
        loss, terms = model.training_loss(grids(32, generator), partial, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(terms)
    return model.eval(), partial, history


def test_training_learns_the_residual_layers(trained):
    _, _, history = trained
    first = sum(h["loss"] for h in history[:10]) / 10
    last = sum(h["loss"] for h in history[-10:]) / 10
    assert last < 0.3 * first
    assert sum(h["accuracy"] for h in history[-10:]) / 10 > 0.9


def test_fill_predicts_editable_positions_and_leaves_the_others(trained):
    model, partial, _ = trained
    truth = grids(2, torch.Generator().manual_seed(5))
    editable = torch.zeros(2, T, G, dtype=torch.bool)
    editable[:, 2:6, 1:] = True
    given = truth.clone()
    given[..., 1:][editable] = -1  # what MotionModel passes: base layer generated, residual layers absent
    filled = model.fill(given, editable, partial)
    assert torch.equal(filled[~editable], truth[~editable])
    assert torch.equal(filled[..., 0], truth[..., 0])
    assert (filled[editable] >= 0).all()
    assert (filled[editable] == truth[editable]).float().mean() > 0.9


def test_a_single_layer_tokenizer_has_no_residual_model():
    with pytest.raises(ValueError, match="at least 2"):
        ResidualTransformerConfig(codebook_size=K, n_groups=G, n_quantizers=1, code_dim=DIM)


def test_unconfident_codes_stay_absent_from_that_layer_up(trained):
    model, partial, _ = trained
    truth = grids(2, torch.Generator().manual_seed(6))
    editable = torch.ones(2, T, G, dtype=torch.bool)
    given = truth.clone()
    given[..., 1:] = -1
    assert (model.fill(given, editable, partial, min_confidence=1.01)[..., 1:] == -1).all()  # nothing is that sure
    confident = model.fill(given, editable, partial, min_confidence=0.5)
    assert (confident[..., 1:] >= 0).float().mean() > 0.5  # the trained model is sure of most of them
    absent = confident[..., 1:] < 0
    assert (absent[..., 1:] >= absent[..., :-1]).all()  # once absent, the layers above are absent too
