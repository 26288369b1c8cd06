import math

import pytest
import torch

from backend.gaussians4d import rasterize as rasterize_module
from backend.gaussians4d.cameras import ring_cameras
from backend.gaussians4d.rasterize import composite_dense, project_gaussians, rasterize
from shared.errors import InputError

IDENTITY_QUAT = [1.0, 0.0, 0.0, 0.0]


def facing_camera(size: int, focal: float, dtype=torch.float32):
    """One camera at the origin looking along +Z; the optical axis hits the centre of pixel (size/2, size/2)."""
    c = size / 2 + 0.5
    K = torch.tensor([[[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K


def gaussians(means, scales, opacities, colors, quats=None, dtype=torch.float32):
    means = torch.tensor(means, dtype=dtype)
    n = len(means)
    quats = torch.tensor(quats if quats is not None else [IDENTITY_QUAT] * n, dtype=dtype)
    return (
        means,
        quats,
        torch.tensor(scales, dtype=dtype),
        torch.tensor(opacities, dtype=dtype),
        torch.tensor(colors, dtype=dtype),
    )


def random_scene(n: int, cameras: int, size: int, seed: int, dtype=torch.float32, device="cpu", height=None):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.06 + 0.02
    opacities = torch.rand(n, generator=g) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=g)
    cams = ring_cameras(cameras, radius=2.5, elevation_deg=25, fov_deg=45, width=size, height=height or size)
    viewmats, Ks = torch.from_numpy(cams.viewmats), torch.from_numpy(cams.Ks)
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks]
    return [t.to(dtype=dtype, device=device) for t in tensors]


def test_isotropic_gaussian_facing_the_camera_matches_the_closed_form():
    # s = 0.11 at z = 2 with f = 40: footprint sigma f·s/z = 2.2 px, widened by the 0.3 px² low-pass filter.
    viewmats, Ks = facing_camera(32, 40.0)
    opacity, color, background = 0.9, torch.tensor([1.0, 0.5, 0.25]), torch.tensor([[0.0, 0.2, 1.0]])
    g = gaussians([[0.0, 0.0, 2.0]], [[0.11, 0.11, 0.11]], [opacity], [color.tolist()])
    rgb, alpha, meta = rasterize(*g, viewmats, Ks, 32, 32, backgrounds=background)
    assert rgb.shape == (1, 32, 32, 3) and alpha.shape == (1, 32, 32, 1)
    # Peak pixel: opacity·colour over (1 − opacity)·background.
    torch.testing.assert_close(rgb[0, 16, 16], opacity * color + (1 - opacity) * background[0])
    var = (40.0 * 0.11 / 2.0) ** 2 + 0.3
    # The Gaussian ends where its alpha falls below 1/255, as gsplat's: at 7 px here, past 3σ (6.8 px).
    extent = math.sqrt(2 * math.log(255 * opacity)) * math.sqrt(var)
    assert 3 * math.sqrt(var) < 7 < extent < 8
    for k in range(0, 10):
        expected = opacity * math.exp(-(k**2) / (2 * var)) if k <= extent else 0.0
        assert alpha[0, 16, 16 + k, 0].item() == pytest.approx(expected, abs=1e-6), k
        assert alpha[0, 16 - k, 16, 0].item() == pytest.approx(expected, abs=1e-6), k
    torch.testing.assert_close(rgb[0], alpha[0] * color + (1 - alpha[0]) * background[0])
    torch.testing.assert_close(meta["means2d"][0, 0], torch.tensor([16.5, 16.5]))
    assert meta["depths"][0, 0].item() == pytest.approx(2.0)
    assert meta["radii"][0, 0].item() == math.ceil(extent)


def test_low_pass_filter_width_is_the_callers_choice():
    # s = 0.02 at z = 2 with f = 40: a 0.4 px footprint, so the filter decides much of the profile's width
    viewmats, Ks = facing_camera(32, 40.0)
    g = gaussians([[0.0, 0.0, 2.0]], [[0.02, 0.02, 0.02]], [0.5], [[1.0, 1.0, 1.0]])
    for eps2d in (0.3, 0.03):
        _, alpha, _ = rasterize(*g, viewmats, Ks, 32, 32, eps2d=eps2d)
        var = (40.0 * 0.02 / 2.0) ** 2 + eps2d
        assert alpha[0, 16, 17, 0].item() == pytest.approx(0.5 * math.exp(-1 / (2 * var)), abs=1e-6), eps2d


def test_rotated_anisotropic_gaussian_has_its_long_axis_turned():
    # Scales (0.1, 0.05) rotated 90° about the view axis: 2 px along y, 1 px along x.
    viewmats, Ks = facing_camera(32, 40.0)
    q = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]
    g = gaussians([[0.0, 0.0, 2.0]], [[0.1, 0.05, 0.01]], [0.5], [[1.0, 1.0, 1.0]], quats=[q])
    _, alpha, _ = rasterize(*g, viewmats, Ks, 32, 32)
    var_x, var_y = 1.0**2 + 0.3, 2.0**2 + 0.3
    assert alpha[0, 16, 17, 0].item() == pytest.approx(0.5 * math.exp(-1 / (2 * var_x)), abs=1e-5)
    assert alpha[0, 17, 16, 0].item() == pytest.approx(0.5 * math.exp(-1 / (2 * var_y)), abs=1e-5)


def test_overlapping_gaussians_composite_front_to_back_whatever_their_order():
    viewmats, Ks = facing_camera(16, 20.0)
    red_front = ([0.0, 0.0, 2.0], 0.6, [1.0, 0.0, 0.0])
    green_back = ([0.0, 0.0, 3.0], 0.5, [0.0, 1.0, 0.0])
    expected = torch.tensor([0.6, 0.4 * 0.5, 0.0])
    for order in ([red_front, green_back], [green_back, red_front]):
        g = gaussians([o[0] for o in order], [[0.2, 0.2, 0.2]] * 2, [o[1] for o in order], [o[2] for o in order])
        rgb, alpha, _ = rasterize(*g, viewmats, Ks, 16, 16)
        torch.testing.assert_close(rgb[0, 8, 8], expected)
        assert alpha[0, 8, 8, 0].item() == pytest.approx(1 - 0.4 * 0.5)


def test_opaque_stack_clamps_alpha_and_stops_early():
    viewmats, Ks = facing_camera(16, 20.0)
    colors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    g = gaussians([[0.0, 0.0, 2.0 + i] for i in range(3)], [[0.2] * 3] * 3, [1.0, 0.5, 0.9], colors)
    rgb, alpha, _ = rasterize(*g, viewmats, Ks, 16, 16)
    # Opacity 1 is clamped to 0.999 (T = 1e-3, as gsplat), the green layer leaves T = 5e-4, and the blue one
    # would take T below 1e-4, so the pixel stops before it.
    torch.testing.assert_close(rgb[0, 8, 8], torch.tensor([0.999, 0.001 * 0.5, 0.0]))
    assert alpha[0, 8, 8, 0].item() == pytest.approx(1 - 0.001 * 0.5, abs=1e-6)


def test_gaussian_behind_the_camera_renders_nothing():
    viewmats, Ks = facing_camera(16, 20.0)
    g = gaussians([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005]], [[0.2] * 3] * 2, [0.9, 0.9], [[1.0, 1.0, 1.0]] * 2)
    means = g[0].requires_grad_()
    background = torch.tensor([[0.1, 0.2, 0.3]])
    rgb, alpha, meta = rasterize(*g, viewmats, Ks, 16, 16, backgrounds=background)
    assert alpha.abs().max().item() == 0.0
    torch.testing.assert_close(rgb, background[:, None, None, :].expand(1, 16, 16, 3))
    assert meta["radii"].tolist() == [[0, 0]]
    rgb.sum().backward()  # an empty render still backpropagates (zero gradients), as gsplat's does
    assert means.grad is not None and (means.grad == 0).all()


def test_means2d_and_depths_agree_with_camera_projection():
    means, quats, scales, opacities, colors, viewmats, Ks = random_scene(30, 3, 48, seed=1)
    cams = ring_cameras(3, radius=2.5, elevation_deg=25, fov_deg=45, width=48, height=48)
    _, _, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 48, 48)
    xy, z = cams.project(means.numpy())
    torch.testing.assert_close(meta["means2d"], torch.from_numpy(xy), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(meta["depths"], torch.from_numpy(z), atol=1e-5, rtol=1e-5)
    assert meta["radii"].dtype == torch.int32 and (meta["radii"] > 0).all()


@pytest.mark.parametrize("chunk_elements", [4_000_000, 3_000])
def test_tile_compositor_matches_the_dense_reference_with_gradients(monkeypatch, chunk_elements):
    # An image size that is not a multiple of the tile size, W ≠ H, and (second case) many small tile chunks.
    monkeypatch.setattr(rasterize_module, "MAX_TILE_ELEMENTS", chunk_elements)
    W, H = 34, 26
    scene = random_scene(60, 2, W, seed=2, dtype=torch.float64, height=H)
    scene = [t.requires_grad_(i < 5) for i, t in enumerate(scene)]
    means, quats, scales, opacities, colors, viewmats, Ks = scene
    background = torch.tensor([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0]], dtype=torch.float64)
    weights = torch.rand(2, H, W, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    rgb, alpha, meta = rasterize(*scene, W, H, backgrounds=background)
    loss = (torch.cat([rgb, alpha], -1) * weights).sum()
    grads = torch.autograd.grad(loss, scene[:5])

    m2d, conics, depths, radii, _ = project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    rgb_d, alpha_d = composite_dense(m2d, conics, depths, radii, opacities, colors, background, W, H)
    loss_d = (torch.cat([rgb_d, alpha_d], -1) * weights).sum()
    grads_d = torch.autograd.grad(loss_d, scene[:5])

    assert alpha.max().item() > 0.5  # the scene covers a good part of the images
    torch.testing.assert_close(rgb, rgb_d)
    torch.testing.assert_close(alpha, alpha_d)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors"], grads, grads_d, strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_per_camera_colours_with_any_channel_count():
    means, quats, scales, opacities, _, viewmats, Ks = random_scene(40, 2, 24, seed=6)
    colors = torch.rand(2, 40, 2, generator=torch.Generator().manual_seed(3))
    rgb, alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 24, 24)
    assert rgb.shape == (2, 24, 24, 2)
    for c in range(2):
        one, one_alpha, _ = rasterize(
            means, quats, scales, opacities, colors[c], viewmats[c : c + 1], Ks[c : c + 1], 24, 24
        )
        torch.testing.assert_close(rgb[c], one[0])
        torch.testing.assert_close(alpha[c], one_alpha[0])


def test_gradients_match_finite_differences():
    viewmats = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    viewmats[1, :3, :3] = torch.tensor([[0.96, 0.0, -0.28], [0.0, 1.0, 0.0], [0.28, 0.0, 0.96]], dtype=torch.float64)
    viewmats[1, :3, 3] = torch.tensor([0.5, -0.1, 0.2], dtype=torch.float64)
    Ks = torch.tensor([[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]], dtype=torch.float64).repeat(2, 1, 1)
    means = torch.tensor([[0.1, -0.2, 3.0], [-0.4, 0.3, 3.5], [0.3, 0.2, 4.0]], dtype=torch.float64)
    quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.7, -0.3, 0.4, 0.1], [0.5, 0.5, 0.1, -0.6]], dtype=torch.float64)
    scales = torch.tensor([[1.0, 0.6, 0.8], [0.8, 1.2, 0.4], [1.4, 0.8, 1.0]], dtype=torch.float64)
    opacities = torch.tensor([0.7, 0.5, 0.8], dtype=torch.float64)
    colors = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]], dtype=torch.float64)
    background = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.2, 0.1]], dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (means, quats, scales, opacities, colors)]

    def render(*params):
        rgb, alpha, _ = rasterize(*params, viewmats, Ks, 8, 8, backgrounds=background)
        return rgb, alpha

    rgb, alpha = render(*inputs)
    assert (alpha > 0.3).float().mean().item() > 0.4  # the Gaussians overlap over much of both images
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_means2d_grad_is_filled_for_the_densifier():
    means, quats, scales, opacities, colors, viewmats, Ks = random_scene(20, 2, 32, seed=3)
    means.requires_grad_()
    means[0].data += 50.0  # far outside every view
    rgb, _, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 32, 32)
    rgb.square().sum().backward()
    grad = meta["means2d"].grad
    assert grad is not None and grad.shape == (2, 20, 2)
    visible = meta["radii"] > 0
    assert not visible[:, 0].any() and (grad[:, 0] == 0).all()
    assert (grad[visible].norm(dim=-1) > 0).float().mean().item() > 0.9


def test_bad_shapes_and_backends_are_input_errors():
    means, quats, scales, opacities, colors, viewmats, Ks = random_scene(5, 1, 16, seed=4)
    with pytest.raises(InputError, match="quats"):
        rasterize(means, quats[:4], scales, opacities, colors, viewmats, Ks, 16, 16)
    with pytest.raises(InputError, match="backgrounds"):
        rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 16, 16, backgrounds=torch.zeros(2, 3))
    with pytest.raises(InputError, match="backend"):
        rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 16, 16, backend="cuda")
    with pytest.raises(InputError, match="CUDA"):
        rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 16, 16, backend="gsplat")


def batch_of_two(device="cpu"):
    """Two sets of 40 Gaussians (a scene at two times), each seen by its own 3 cameras: batched inputs."""
    first, second = random_scene(40, 3, 32, seed=6, device=device), random_scene(40, 3, 32, seed=7, device=device)
    second[5] = second[5][[1, 2, 0]]  # the second set's cameras are the first's in another order
    return [torch.stack([a, b]) for a, b in zip(first, second, strict=True)]


def test_a_batch_renders_as_its_items_one_by_one_with_their_gradients():
    batch = batch_of_two()
    background = torch.tensor([[[1.0, 1.0, 1.0]] * 3, [[0.2, 0.4, 0.6]] * 3])
    weights = torch.rand(2, 3, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    means = batch[0].clone().requires_grad_(True)
    rgb, alpha, meta = rasterize(means, *batch[1:], 32, 32, backgrounds=background)
    assert rgb.shape == (2, 3, 32, 32, 3) and alpha.shape == (2, 3, 32, 32, 1)
    assert meta["means2d"].shape == (2, 3, 40, 2) and meta["radii"].shape == (2, 3, 40)
    ((rgb * weights).sum() + alpha.sum()).backward()
    for b in range(2):
        item = batch[0][b].clone().requires_grad_(True)
        rgb_b, alpha_b, meta_b = rasterize(item, *(x[b] for x in batch[1:]), 32, 32, backgrounds=background[b])
        ((rgb_b * weights[b]).sum() + alpha_b.sum()).backward()
        assert alpha_b.mean() > 0.05  # something is drawn
        torch.testing.assert_close(rgb[b], rgb_b)
        torch.testing.assert_close(alpha[b], alpha_b)
        assert torch.equal(meta["radii"][b], meta_b["radii"])
        torch.testing.assert_close(meta["means2d"].grad[b], meta_b["means2d"].grad)  # what densification reads
        torch.testing.assert_close(means.grad[b], item.grad)
    assert not torch.allclose(rgb[0], rgb[1])


def test_a_batch_with_a_missing_or_mismatched_leading_axis_is_an_input_error():
    batch = batch_of_two()
    with pytest.raises(InputError, match="viewmats must have a leading batch axis of 2"):
        rasterize(*batch[:5], batch[5][0], batch[6], 32, 32)
    with pytest.raises(InputError, match="backgrounds must have a leading batch axis"):
        rasterize(*batch, 32, 32, backgrounds=torch.ones(3, 3))
    with pytest.raises(InputError, match="quats"):
        rasterize(batch[0], batch[1][:, :30], *batch[2:], 32, 32)


def _gsplat_cuda() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _gsplat_cuda(), reason="needs CUDA and gsplat")
def test_torch_and_gsplat_renders_and_gradients_agree():
    # Both paths follow gsplat's rules (footprints out to alpha 1/255, alpha clamped at 0.999, the same early
    # stop), so they differ by float rounding only. (With a 3σ cut and a 0.99 clamp the torch path's pixels were
    # up to 0.012 off here on an H200, where a few rims overlapped.)
    scene = random_scene(300, 3, 64, seed=5, device="cuda")
    scene[3] = scene[3] * 0.75
    background = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.3, 0.5, 0.7]], device="cuda")
    weights = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(1)).cuda()
    results = {}
    for backend in ("torch", "gsplat"):
        params = [t.detach().clone().requires_grad_(i < 5) for i, t in enumerate(scene)]
        rgb, alpha, meta = rasterize(*params, 64, 64, backgrounds=background, backend=backend)
        ((rgb * weights).sum() + alpha.sum()).backward()
        results[backend] = (rgb, alpha, meta, [p.grad for p in params[:5]])
    (rgb_t, alpha_t, meta_t, grads_t), (rgb_g, alpha_g, meta_g, grads_g) = results["torch"], results["gsplat"]
    assert alpha_t.mean().item() > 0.2  # the scene covers a good part of the images
    assert (rgb_t - rgb_g).abs().max().item() <= 1e-3
    assert (alpha_t - alpha_g).abs().max().item() <= 1e-3
    assert (rgb_t - rgb_g).abs().mean().item() <= 1e-5
    assert meta_g["radii"].shape == (3, 300) and meta_g["radii"].dtype == torch.int32
    assert (meta_t["radii"] == meta_g["radii"]).float().mean().item() >= 0.99
    both = (meta_t["radii"] > 0) & (meta_g["radii"] > 0)
    torch.testing.assert_close(meta_t["means2d"][both], meta_g["means2d"][both], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(meta_t["depths"][both], meta_g["depths"][both], atol=1e-4, rtol=1e-4)
    grad2d_t, grad2d_g = meta_t["means2d"].grad, meta_g["means2d"].grad
    assert grad2d_g is not None and grad2d_g.shape == (3, 300, 2)
    assert (grad2d_t[both] - grad2d_g[both]).norm().item() <= 0.02 * grad2d_g[both].norm().item()
    names = ["means", "quats", "scales", "opacities", "colors"]
    for name, a, b in zip(names, grads_t, grads_g, strict=True):
        assert (a - b).norm().item() <= 0.02 * b.norm().item(), name


@pytest.mark.skipif(not _gsplat_cuda(), reason="needs CUDA and gsplat")
def test_a_batch_on_gsplat_agrees_with_the_torch_path():
    batch = batch_of_two(device="cuda")
    results = {}
    for backend in ("torch", "gsplat"):
        means = batch[0].clone().requires_grad_(True)
        rgb, alpha, meta = rasterize(means, *batch[1:], 32, 32, backend=backend)
        (rgb.sum() + alpha.sum()).backward()
        results[backend] = (rgb, alpha, meta["radii"], meta["means2d"].grad, means.grad)
    (rgb_t, alpha_t, radii_t, g2d_t, grad_t), (rgb_g, alpha_g, radii_g, g2d_g, grad_g) = results.values()
    assert rgb_g.shape == (2, 3, 32, 32, 3) and radii_g.shape == (2, 3, 40) and g2d_g.shape == (2, 3, 40, 2)
    assert (rgb_t - rgb_g).abs().max().item() <= 1e-3 and (alpha_t - alpha_g).abs().max().item() <= 1e-3
    assert (radii_t == radii_g).float().mean().item() >= 0.99
    assert (grad_t - grad_g).norm().item() <= 0.02 * grad_g.norm().item()


# -- against gsplat's own code, on the CPU ------------------------------------------------------------------------
# gsplat's rasterizer needs CUDA, but its projection and SH have pure-PyTorch references (gsplat.cuda._torch_impl)
# that run anywhere, and its `rasterization` signature can be checked without calling it. gsplat is a test
# dependency for these; the render parity above needs a GPU.


def test_projection_matches_gsplats_reference_with_gradients():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    means, quats, scales, _, _, viewmats, Ks = random_scene(200, 4, 48, seed=11, dtype=torch.float64, height=40)
    means = means * 4  # some far off the images, some behind the near plane of a camera
    results = {}
    for who in ("ours", "gsplat"):
        m, q, s = (t.detach().clone().requires_grad_(True) for t in (means, quats, scales))
        if who == "ours":
            means2d, conics, depths, radii, _ = project_gaussians(m, q, s, viewmats, Ks, 48, 40)
            kept = radii > 0
        else:
            covars, _ = _quat_scale_to_covar_preci(q, s, compute_covar=True, compute_preci=False)
            radii, means2d, depths, conics, _ = _fully_fused_projection(m, covars, viewmats, Ks, 48, 40, eps2d=0.3)
            kept = (radii > 0).all(-1)
        results[who] = (means2d, conics, depths, kept, (m, q, s))
    (m2_o, co_o, d_o, kept_o, leaves_o), (m2_g, co_g, d_g, kept_g, leaves_g) = results["ours"], results["gsplat"]
    # We cut footprints at 3σ, gsplat at 3.33σ: all we draw, gsplat draws, and hardly any more.
    assert kept_o.any() and (~kept_o).any()
    assert not (kept_o & ~kept_g).any()
    extra = kept_g & ~kept_o
    assert extra.sum() <= 0.1 * kept_g.sum()
    off_image = (m2_g[..., 0] < 0) | (m2_g[..., 0] > 48) | (m2_g[..., 1] < 0) | (m2_g[..., 1] > 40)
    assert off_image[extra].all()  # only the rims of Gaussians centred outside the image
    torch.testing.assert_close(m2_o[kept_o], m2_g[kept_o], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(co_o[kept_o], co_g[kept_o], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d_o[kept_o], d_g[kept_o], rtol=1e-12, atol=1e-12)
    # The same weighted outputs give the same gradients for means, rotations and scales.
    w = torch.rand(*m2_o.shape[:2], 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for m2, co, d in ((m2_o, co_o, d_o), (m2_g, co_g, d_g)):
        out = torch.cat([m2, co, d[..., None]], -1) * w * kept_o[..., None]
        out.sum().backward()
    for name, a, b in zip(("means", "quats", "scales"), leaves_o, leaves_g, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_view_dependent_colours_match_gsplats_reference():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    from backend.gaussians4d.sh import coefficient_count, view_colors
    from shared.results import SH_C0

    g = torch.Generator().manual_seed(4)
    viewmats = torch.from_numpy(ring_cameras(3, radius=2.5, elevation_deg=25, fov_deg=45, width=8, height=8).viewmats)
    means = torch.randn(50, 3, generator=g, dtype=torch.float64) * 0.3
    f_dc = torch.randn(50, 3, generator=g, dtype=torch.float64)
    for degree in (1, 2, 3):
        rest = torch.randn(50, coefficient_count(degree), 3, generator=g, dtype=torch.float64) * 0.2
        ours = view_colors(0.5 + SH_C0 * f_dc, rest, means, viewmats.double())
        cams = torch.linalg.inv(viewmats.double())[:, :3, 3]
        dirs = means[None] - cams[:, None]  # gsplat's rasterization: from the camera to the mean
        coeffs = torch.cat([f_dc[:, None], rest], 1)[None].expand(3, -1, -1, -1)
        theirs = _spherical_harmonics(degree, dirs, coeffs) + 0.5  # gsplat adds 0.5 (3DGS's convention)
        # (float32 cameras: their centres come out 1e-8 apart by inverse and by −Rᵀt; a convention differs by ~0.1)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_our_gsplat_call_fits_gsplats_signature(monkeypatch):
    # Checked without CUDA: the arguments we pass bind to gsplat.rasterization's own signature, and its per-axis
    # radii (C, N, 2) come back as ours (C, N) int32.
    import inspect

    import gsplat

    signature = inspect.signature(gsplat.rasterization)
    seen = {}

    def fake_rasterization(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        seen.update(bound.arguments)
        C, N = len(bound.arguments["viewmats"]), len(bound.arguments["means"])
        h, w = bound.arguments["height"], bound.arguments["width"]
        means2d = torch.zeros(C, N, 2, requires_grad=True) * 1.0
        radii = torch.tensor([[[3, 2], [0, 0], [4, 0]]] * C, dtype=torch.int32)
        info = {"means2d": means2d, "radii": radii, "depths": torch.ones(C, N)}
        return torch.zeros(C, h, w, 3), torch.zeros(C, h, w, 1), info

    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    means, quats, scales, opacities, colors, viewmats, Ks = random_scene(3, 2, 16, seed=0, height=12)
    rgb, alpha, meta = rasterize_module._rasterize_gsplat(
        means, quats, scales, opacities, colors, viewmats, Ks, 16, 12, torch.ones(2, 3), 0.01, 1e10, 0.03
    )
    assert (seen["width"], seen["height"], seen["eps2d"], seen["packed"]) == (16, 12, 0.03, False)
    assert seen["backgrounds"].shape == (2, 3) and "sh_degree" not in seen  # colours, not SH coefficients
    assert rgb.shape == (2, 12, 16, 3) and alpha.shape == (2, 12, 16, 1)
    assert meta["radii"].dtype == torch.int32 and meta["radii"].tolist() == [[3, 0, 0]] * 2
