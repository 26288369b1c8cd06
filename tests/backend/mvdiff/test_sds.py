"""4D-SDS (x0-reconstruction form): gradients reach the renders and are finite; a predictor that knows the
true noise gives zero loss; a predictor whose x̂0 is a target video pulls the renders' latents to it; std
rescale and guidance act as written. Tiny random VAE from a config (no weights), and the tiny multi-view
pipeline end to end."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from backend.mvdiff.sds import encode_videos, sds_loss
from shared.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.timeout(60)

V, F, H = 2, 3, 16


@pytest.fixture(scope="module")
def pipe():
    """What sds_loss uses of a pipeline: a VAE and a scheduler (tiny, random VAE weights)."""
    from diffusers import AutoencoderKL, DDIMScheduler

    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    ).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False)
    return SimpleNamespace(vae=vae, scheduler=scheduler)


def renders(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((V, F, H, H, 3), generator=g).requires_grad_(True)


def alpha_bar(pipe, t):
    return pipe.scheduler.alphas_cumprod[t].reshape(())


def test_latents_are_laid_out_for_the_unet_and_follow_the_images(pipe):
    images = renders()
    z = encode_videos(pipe, images)
    assert z.shape == (V, 4, F, H // 2, H // 2)
    single = encode_videos(pipe, images[1:2, 2:3])
    torch.testing.assert_close(z[1:2, :, 2:3], single, atol=1e-5, rtol=1e-4)


def test_a_predictor_that_knows_the_noise_gives_zero_loss_and_zero_gradient(pipe):
    """ε̂ = the noise actually added → x̂0 = z exactly, whatever the guidance and rescale."""
    images = renders()
    z = encode_videos(pipe, images).detach()

    def oracle(z_t, t):
        a = alpha_bar(pipe, t)
        eps = (z_t - a.sqrt() * z) / (1 - a).sqrt()
        return eps, eps

    loss = sds_loss(pipe, images, predictor=oracle, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert float(loss.detach()) < 1e-6
    assert images.grad.abs().max() < 1e-4


def test_gradient_reaches_the_renders_and_descending_it_moves_the_latents_to_the_target(pipe):
    """A predictor whose x̂0 is a target video: the loss is ½‖z − z*‖²/V and a few steps on the images lower it."""
    target = encode_videos(pipe, renders(seed=5)).detach()

    def towards_target(z_t, t):
        a = alpha_bar(pipe, t)
        eps = (z_t - a.sqrt() * target) / (1 - a).sqrt()
        return eps, eps

    images = renders().detach().requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=2e-2)
    losses = []
    for step in range(8):
        loss = sds_loss(pipe, images, predictor=towards_target, generator=torch.Generator().manual_seed(step))
        expected = 0.5 * ((encode_videos(pipe, images) - target) ** 2).sum() / V
        torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-3)
        optimizer.zero_grad()
        loss.backward()
        assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses


def test_the_chunked_gradient_is_the_plain_one(pipe):
    """The encoder's backward in chunks of 2 images (bounded memory) gives the one-graph value and gradient,
    also through a resize to the model's resolution."""
    target = encode_videos(pipe, renders(seed=3)).detach()

    def towards_target(z_t, t):
        a = alpha_bar(pipe, t)
        eps = (z_t - a.sqrt() * target) / (1 - a).sqrt()
        return eps, eps * 1.1

    got = {}
    for chunk in (None, 2):
        images = torch.rand((V, F, 24, 24, 3), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        loss = sds_loss(pipe, images, predictor=towards_target, generator=torch.Generator().manual_seed(4),
                        resolution=H, chunk=chunk)  # fmt: skip
        (3.0 * loss).backward()
        got[chunk] = (loss.detach(), images.grad)
    torch.testing.assert_close(got[2][0], got[None][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[2][1], got[None][1], rtol=1e-4, atol=1e-6)
    assert got[2][1].abs().sum() > 0


def test_guidance_and_std_rescale_act_as_written(pipe):
    images = renders()
    z = encode_videos(pipe, images).detach()
    g = torch.Generator().manual_seed(0)
    off = torch.zeros_like(z)

    def split(z_t, t):  # unconditional says "x̂0 = z", conditional says "x̂0 = z + 1"
        a = alpha_bar(pipe, t)
        eps_u = (z_t - a.sqrt() * z) / (1 - a).sqrt()
        eps_c = (z_t - a.sqrt() * (z + 1 + off)) / (1 - a).sqrt()
        return eps_u, eps_c

    n = z.numel() / V
    # CFG: x̂0 = z + g·1, so the loss is ½·g²·n with no rescale
    loss = sds_loss(pipe, images, predictor=split, guidance_scale=3.0, std_rescale=0.0, generator=g)
    assert float(loss.detach()) == pytest.approx(0.5 * 9.0 * n, rel=1e-3)
    # both x̂0 have z's spread (a constant shift): the rescale factor is 1, nothing changes
    loss = sds_loss(pipe, images, predictor=split, guidance_scale=3.0, std_rescale=0.25, generator=g)
    assert float(loss.detach()) == pytest.approx(0.5 * 9.0 * n, rel=1e-3)

    def doubled(z_t, t):  # unconditional x̂0 = z, conditional x̂0 = 2z: CFG 3 gives 4z, spread 2× the conditional's
        a = alpha_bar(pipe, t)
        return (z_t - a.sqrt() * z) / (1 - a).sqrt(), (z_t - a.sqrt() * 2 * z) / (1 - a).sqrt()

    squared = float((z**2).sum()) / V
    loss = sds_loss(pipe, images, predictor=doubled, guidance_scale=3.0, std_rescale=0.0, generator=g)
    assert float(loss.detach()) == pytest.approx(0.5 * 9.0 * squared, rel=1e-3)  # x̂0 = 4z
    loss = sds_loss(pipe, images, predictor=doubled, guidance_scale=3.0, std_rescale=0.25, generator=g)
    assert float(loss.detach()) == pytest.approx(0.5 * 2.5**2 * squared, rel=1e-3)  # 0.25·2z + 0.75·4z = 3.5z


def test_bad_renders_and_t_range_are_input_errors(pipe):
    with pytest.raises(InputError, match=r"\(V, F, H, W, 3\)"):
        sds_loss(pipe, torch.rand(2, 16, 16, 3), predictor=lambda z, t: (z, z))
    with pytest.raises(InputError, match="t_range"):
        sds_loss(pipe, renders(), predictor=lambda z, t: (z, z), t_range=(0.5, 0.2))
    with pytest.raises(InputError, match="cameras and prompt_embeds"):
        sds_loss(pipe, renders())


@pytest.mark.parametrize("ip_adapter", [False, True])
def test_with_the_tiny_multiview_model_the_gradient_reaches_the_renders_and_cfg_matches_the_pipeline(
    tmp_path, ip_adapter
):
    from backend.mvdiff.cameras import mvdream_cameras
    from backend.mvdiff.checkpoint import load_pipeline, write_tiny
    from backend.mvdiff.sds import unet_predictor

    folder = write_tiny(tmp_path / "tiny", views=4, frames=4, resolution=32, ip_adapter=ip_adapter)
    pipe = load_pipeline(folder, allow_untrained=True)
    pipe.vae.requires_grad_(False)
    embeds = pipe.encode_prompt("a horse galloping", "")
    image_embeds = None
    if ip_adapter:  # the image prompt: each view's condition render
        with torch.no_grad():
            image_embeds = pipe.encode_image_prompt(torch.rand((4, 32, 32, 3), generator=torch.Generator()))
    cameras = torch.as_tensor(mvdream_cameras(4).reshape(4, 16))
    images = torch.rand((4, 4, 32, 32, 3), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = sds_loss(
        pipe, images, cameras, embeds, generator=torch.Generator().manual_seed(0), image_embeds=image_embeds
    )
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # the predictor's guided ε is the pipeline's own predict_noise
    z_t = torch.randn((4, 4, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor(100)
    eps_u, eps_c = unet_predictor(pipe, cameras, embeds, image_embeds)(z_t, t)
    guided = pipe.predict_noise(z_t, t, embeds, mvdream_cameras(4), 5.0, image_embeds)
    torch.testing.assert_close(eps_u + 5.0 * (eps_c - eps_u), guided, atol=1e-4, rtol=1e-4)
    if ip_adapter:  # and the image prompt matters
        eps_u0, eps_c0 = unet_predictor(pipe, cameras, embeds)(z_t, t)
        assert not torch.allclose(eps_c0, eps_c, atol=1e-6)
