"""MultiViewVideoPipeline end to end on the tiny random model (CPU): shapes, seeds, conditions, callbacks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from backend.mvdiff.cameras import mvdream_cameras
from backend.mvdiff.checkpoint import UntrainedModelError, load_pipeline, write_tiny
from backend.mvdiff.pipeline import MultiViewVideoOutput
from shared.errors import InputError, JobCancelled

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

V, F, S = 4, 4, 32  # views, frames, pixels


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = write_tiny(tmp_path_factory.mktemp("mvdiff") / "tiny", views=V, frames=F, resolution=S)
    return load_pipeline(folder, allow_untrained=True)


def condition(mode: str = "object", seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((V, F, S, S, 3), dtype=np.float32)
    mask = np.zeros((V, F), dtype=bool)
    if mode == "object":
        mask[:, 0] = True  # four renders of the static asset as frame 0
    else:
        mask[0, :] = True  # the user's video as view 0
    return images, mask


def sample(pipe, mode="object", **kw) -> MultiViewVideoOutput:
    images, mask = condition(mode)
    args = {"num_frames": F, "num_inference_steps": 3, "allow_untrained": True, **kw}
    return pipe("a horse gallops", images, mask, mvdream_cameras(V), **args)


def test_output_is_views_by_frames_of_rgb_in_unit_range(pipe):
    out = sample(pipe)
    assert out.frames.shape == (V, F, S, S, 3)
    assert out.frames.dtype == np.float32
    assert 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    assert out.trained is False


def test_same_seed_same_video_other_seed_other_video(pipe):
    a, b, c = sample(pipe, seed=3), sample(pipe, seed=3), sample(pipe, seed=4)
    assert np.array_equal(a.frames, b.frames)
    assert not np.allclose(a.frames, c.frames, atol=1e-4)


@pytest.mark.parametrize("mode", ["object", "video"])
def test_condition_latents_are_restored_exactly_after_every_step(pipe, monkeypatch, mode):
    images, mask = condition(mode)
    clean, _ = pipe.prepare_condition(images, mask)
    seen: list[torch.Tensor] = []
    decode = pipe._video
    monkeypatch.setattr(pipe, "_video", lambda latents: seen.append(latents.clone()) or decode(latents))
    out = pipe(
        "x",
        images,
        mask,
        mvdream_cameras(V),
        num_frames=F,
        num_inference_steps=3,
        allow_untrained=True,
        callback=lambda step, total, preview: preview(),
    )
    assert len(seen) == 4  # three previews and the final video
    v, f = np.nonzero(mask)
    for latents in seen:
        assert torch.equal(latents[v, :, f], clean[v, :, f])
    free = ~mask
    assert not torch.equal(seen[-1][free], clean[free])  # the other entries were generated
    # and the decoded frames of the conditioned entries are the VAE round trip of the condition images
    expected = pipe.decode_latents(pipe.encode_images(torch.from_numpy(images[mask]))).numpy()
    np.testing.assert_allclose(out.frames[mask], expected, atol=1e-5)


def test_callback_streams_previews_and_the_last_preview_is_the_result(pipe):
    calls = []

    def callback(step, total, preview):
        frames = preview()
        assert frames.shape == (V, F, S, S, 3)
        calls.append((step, total, frames))

    out = sample(pipe, callback=callback, num_inference_steps=4)
    assert [(s, t) for s, t, _ in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_allclose(calls[-1][2], out.frames, atol=1e-5)
    assert not np.allclose(calls[0][2], out.frames, atol=1e-3)  # early previews are rough estimates


def test_callback_can_cancel_and_the_error_propagates(pipe):
    steps = []

    def callback(step, total, preview):
        steps.append(step)
        if step == 2:
            raise JobCancelled("cancelled by the user")

    with pytest.raises(JobCancelled):
        sample(pipe, callback=callback, num_inference_steps=5)
    assert steps == [1, 2]


def test_untrained_weights_are_refused_unless_allowed(pipe):
    images, mask = condition()
    with pytest.raises(UntrainedModelError, match="convert-animate3d") as err:
        pipe("x", images, mask, mvdream_cameras(V), num_frames=F, num_inference_steps=1)
    assert isinstance(err.value, InputError)
    assert "random weights" in str(err.value)


def test_guidance_changes_the_result(pipe):
    assert not np.allclose(sample(pipe, guidance_scale=1.0).frames, sample(pipe, guidance_scale=7.5).frames, atol=1e-4)


def test_predict_noise_applies_guidance_per_sample(pipe):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2 * V, 4, F, 8, 8, generator=g)
    embeds = pipe.encode_prompt("a horse", "")
    cams = mvdream_cameras(V) * np.array([1, 1, 1, 2.5, 1, 1, 1, 2.5, 1, 1, 1, 2.5, 1, 1, 1, 1]).reshape(4, 4)
    both = pipe.predict_noise(latents, 500, embeds, cams, guidance_scale=5.0)
    first = pipe.predict_noise(latents[:V], 500, embeds, mvdream_cameras(V), guidance_scale=5.0)
    assert both.shape == latents.shape and both.dtype == torch.float32
    torch.testing.assert_close(both[:V], first, atol=5e-5, rtol=1e-4)  # distance does not matter: normalised
    # guidance 1: the conditional prediction alone
    camera = torch.from_numpy(mvdream_cameras(V).reshape(V, 16))
    with torch.no_grad():
        cond = pipe.unet(latents[:V], 500, embeds[0].expand(V, -1, -1), camera).sample
    torch.testing.assert_close(pipe.predict_noise(latents[:V], 500, embeds, mvdream_cameras(V), 1.0), cond)
    with pytest.raises(InputError, match="latents must be"):
        pipe.predict_noise(latents[:3], 500, embeds, mvdream_cameras(V), 5.0)


def test_encode_decode_shapes(pipe):
    images = torch.rand(5, S, S, 3)
    latents = pipe.encode_images(images)
    assert latents.shape == (5, 4, S // pipe.vae_scale_factor, S // pipe.vae_scale_factor)
    decoded = pipe.decode_latents(latents)
    assert decoded.shape == (5, S, S, 3) and 0 <= decoded.min() and decoded.max() <= 1
    positive, negative = pipe.encode_prompt("a horse", "blurry")
    assert positive.shape == negative.shape == (1, 77, 32)
    assert not torch.equal(positive, negative)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: {**a, "cameras": mvdream_cameras(3)}, "cameras must be"),
        (lambda a: {**a, "condition_images": a["condition_images"][:, :2]}, "condition_images must be"),
        (lambda a: {**a, "condition_mask": a["condition_mask"][:, :2]}, "condition_mask must be"),
        (lambda a: {**a, "condition_mask": a["condition_mask"].astype(int)}, "boolean"),
        (lambda a: {**a, "condition_images": a["condition_images"] * 255}, "divide 8-bit images by 255"),
        (lambda a: {**a, "condition_images": a["condition_images"][:, :, :20, :20]}, "multiple of 8"),
        (lambda a: {**a, "num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_input_is_an_input_error_naming_the_argument(pipe, change, words):
    images, mask = condition()
    args = {
        "condition_images": images,
        "condition_mask": mask,
        "cameras": mvdream_cameras(V),
        "num_inference_steps": 2,
    }
    args = change(args)
    with pytest.raises(InputError, match=words):
        pipe("x", num_frames=F, allow_untrained=True, **args)


def test_too_many_frames_for_the_motion_modules(pipe):
    frames = pipe.unet.config.motion_max_seq_length + 1
    images = np.zeros((V, frames, S, S, 3), np.float32)
    mask = np.zeros((V, frames), bool)
    with pytest.raises(InputError, match="num_frames must be between 1 and"):
        pipe("x", images, mask, mvdream_cameras(V), num_frames=frames, allow_untrained=True)


@pytest.fixture(scope="module")
def ip_pipe(tmp_path_factory):
    folder = write_tiny(tmp_path_factory.mktemp("mvdiff-ip") / "tiny", views=V, frames=F, resolution=S, ip_adapter=True)
    return load_pipeline(folder, allow_untrained=True)


@pytest.mark.parametrize("mode", ["object", "video"])
def test_ip_adapter_prompt_is_each_views_first_condition_image(ip_pipe, mode):
    images, mask = condition(mode)
    picked = images[:, 0] if mode == "object" else np.repeat(images[:1, 0], V, axis=0)
    expected = ip_pipe.encode_image_prompt(torch.from_numpy(picked))
    assert expected.shape == (V, 16)
    torch.testing.assert_close(ip_pipe._image_prompt(images, mask), expected)


def test_ip_adapter_pipeline_samples_and_the_image_prompt_matters(ip_pipe):
    out = sample(ip_pipe)
    assert out.frames.shape == (V, F, S, S, 3)
    latents = torch.randn(V, 4, F, 8, 8, generator=torch.Generator().manual_seed(0))
    embeds = ip_pipe.encode_prompt("a horse", "")
    images, mask = condition()
    image_embeds = ip_pipe._image_prompt(images, mask)
    with_image = ip_pipe.predict_noise(latents, 500, embeds, mvdream_cameras(V), 5.0, image_embeds=image_embeds)
    without = ip_pipe.predict_noise(latents, 500, embeds, mvdream_cameras(V), 5.0)
    assert not torch.allclose(with_image, without, atol=1e-6)


def test_free_init_resamples_from_the_first_pass_keeping_conditions_and_seed(pipe, monkeypatch):
    """FreeInit (Animate3D samples with 3 passes): every pass is a full sampling; the result differs from one
    pass, is reproducible with the seed, and the conditioned entries stay exact through every pass."""
    calls = []
    images, mask = condition("object")
    clean, _ = pipe.prepare_condition(images, mask)
    seen: list[torch.Tensor] = []
    decode = pipe._video
    monkeypatch.setattr(pipe, "_video", lambda latents: seen.append(latents.clone()) or decode(latents))
    one = sample(pipe, seed=5)
    two = sample(pipe, seed=5, free_init_iterations=2, callback=lambda s, t, p: calls.append((s, t)))
    again = sample(pipe, seed=5, free_init_iterations=2)
    assert calls == [(s, 6) for s in range(1, 7)]  # two passes of three steps
    assert np.array_equal(two.frames, again.frames)
    assert not np.allclose(two.frames, one.frames, atol=1e-4)
    v, f = np.nonzero(mask)
    for latents in seen:
        assert torch.equal(latents[v, :, f], clean[v, :, f])
    assert not pipe.free_init_enabled or pipe._free_init_num_iters == 2
    assert np.array_equal(sample(pipe, seed=5).frames, one.frames)  # one pass again: FreeInit switched off
    with pytest.raises(InputError, match="free_init_iterations"):
        sample(pipe, free_init_iterations=0)
