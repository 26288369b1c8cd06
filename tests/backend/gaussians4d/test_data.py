"""Multi-view video folders (NeRF / D-NeRF transforms.json): write → load round trip, the object's bounds,
and one actionable InputError per kind of bad folder, raised by load_transforms before it returns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.gaussians4d.cameras import Cameras, ring_cameras
from backend.gaussians4d.data import MultiViewVideo, load_transforms, write_transforms
from shared.errors import InputError

SIZE = 16
RADIUS = 0.5  # the sphere at the origin that every view sees


def sphere_video(views: int = 4, times: int = 2, size: int = SIZE, alpha: bool = True) -> MultiViewVideo:
    """A coloured sphere seen by a ring of cameras: alpha is the exact disk, colour varies per pixel."""
    ring = ring_cameras(views, radius=3.0, elevation_deg=20.0, fov_deg=40.0, width=size, height=size)
    idx = np.repeat(np.arange(views), times)
    cams = ring.subset(idx)
    t = np.tile(np.linspace(0.0, 1.0, times, dtype=np.float32), views)
    j, i = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    images = np.empty((len(idx), size, size, 3), np.float32)
    alphas = np.empty((len(idx), size, size), np.float32)
    for f in range(len(idx)):
        k, v = cams.Ks[f].astype(np.float64), cams.viewmats[f].astype(np.float64)
        rays = np.stack([(j - k[0, 2]) / k[0, 0], (i - k[1, 2]) / k[1, 1], np.ones_like(i)], -1)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        centre_cam = v[:3, 3]  # the origin in camera space
        miss = np.linalg.norm(np.cross(rays, centre_cam), axis=-1)  # distance of each ray from the centre
        a = np.round(np.clip((RADIUS - miss) * 40.0 + 0.5, 0.0, 1.0) * 255) / 255  # 8-bit exact
        colour = np.stack([j / size, i / size, np.full_like(i, t[f])], -1)
        alphas[f] = a
        images[f] = colour * a[..., None] + (1.0 - a[..., None])  # over white
    names = [f"v{f}" for f in range(len(idx))]
    return MultiViewVideo(images, alphas if alpha else None, cams, t, names)


@pytest.fixture
def folder(tmp_path) -> Path:
    write_transforms(tmp_path, sphere_video())
    return tmp_path


def edit_json(folder: Path, change) -> None:
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_write_then_load_gives_the_same_video(tmp_path):
    video = sphere_video()
    path = write_transforms(tmp_path, video)
    assert path == tmp_path / "transforms_train.json"
    loaded = load_transforms(tmp_path)
    assert loaded.images.shape == (8, SIZE, SIZE, 3) and loaded.images.dtype == np.float32
    assert np.abs(loaded.images - video.images).max() <= 1 / 255 + 1e-6
    assert np.abs(loaded.alphas - video.alphas).max() <= 1 / 255 + 1e-6
    np.testing.assert_allclose(loaded.cameras.viewmats, video.cameras.viewmats, rtol=0, atol=2e-6)
    np.testing.assert_allclose(loaded.cameras.Ks, video.cameras.Ks, rtol=1e-6)
    np.testing.assert_array_equal(loaded.times, video.times)
    assert loaded.names == [f"./train/r_{i:04d}" for i in range(8)]
    assert loaded.view_count() == 4
    np.testing.assert_array_equal(loaded.time_values(), [0.0, 1.0])
    with Image.open(tmp_path / "train" / "r_0000.png") as im:
        assert im.mode == "RGBA"


def test_bounds_from_alpha_hold_the_sphere_and_are_tighter_than_the_frusta(folder):
    video = load_transforms(folder)
    lo, hi = video.bounds()
    assert (lo <= -RADIUS * 0.9).all() and (hi >= RADIUS * 0.9).all()
    assert (hi - lo).max() < 4 * RADIUS
    frusta_lo, frusta_hi = MultiViewVideo(video.images, None, video.cameras, video.times, video.names).bounds()
    assert np.prod(frusta_hi - frusta_lo) > 2 * np.prod(hi - lo)
    assert (frusta_lo <= lo + 1e-6).all() and (frusta_hi >= hi - 1e-6).all()


def test_rgb_images_load_without_alpha_and_pass_the_checks(tmp_path):
    write_transforms(tmp_path, sphere_video(alpha=False))
    video = load_transforms(tmp_path)
    assert video.alphas is None
    with Image.open(tmp_path / "train" / "r_0000.png") as im:
        assert im.mode == "RGB"


def test_max_size_downscales_images_and_intrinsics(tmp_path):
    video = sphere_video(size=32)
    write_transforms(tmp_path, video)
    small = load_transforms(tmp_path, max_size=16, background=(0.0, 0.0, 0.0))
    assert small.images.shape == (8, 16, 16, 3) and small.cameras.width == 16
    np.testing.assert_allclose(small.cameras.Ks[:, :2], video.cameras.Ks[:, :2] / 2, rtol=1e-6)
    # composited over black: where alpha is 0 the pixel is black
    assert small.images[small.alphas == 0].max() == 0.0


def test_dnerf_layout_with_camera_angle_and_transforms_json_fallback(tmp_path):
    write_transforms(tmp_path, sphere_video())
    meta = json.loads((tmp_path / "transforms_train.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        meta.pop(key)
    (tmp_path / "transforms_train.json").unlink()
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    video = load_transforms(tmp_path)
    fx = 0.5 * SIZE / math.tan(math.radians(20.0))
    np.testing.assert_allclose(video.cameras.Ks[:, 0, 0], fx, rtol=1e-5)
    with pytest.raises(InputError, match="transforms_test.json"):
        load_transforms(tmp_path, "test")


def test_missing_folder_or_json(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_transforms(tmp_path / "nope")
    with pytest.raises(InputError, match="no transforms_train.json"):
        load_transforms(tmp_path)
    (tmp_path / "transforms_train.json").write_text("{ not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_transforms(tmp_path)


def test_missing_image_names_the_first_missing_entry(folder):
    (folder / "train" / "r_0003.png").unlink()
    (folder / "train" / "r_0005.png").unlink()
    with pytest.raises(InputError, match=r"entry 3 \('./train/r_0003'\) is missing"):
        load_transforms(folder)


def test_images_of_different_sizes_name_both(folder):
    Image.new("RGBA", (8, 16)).save(folder / "train" / "r_0002.png")
    with pytest.raises(InputError, match=r"r_0000.png is 16×16 but r_0002.png \(entry 2\) is 8×16"):
        load_transforms(folder)


@pytest.mark.parametrize("time", [1.5, -0.1, "0.5", None])
def test_times_outside_zero_one_are_refused(folder, time):
    edit_json(folder, lambda m: m["frames"][4].update(time=time))
    with pytest.raises(InputError, match=r"entry 4 \('./train/r_0004'\) has time .* must be a number in \[0, 1\]"):
        load_transforms(folder)


def test_missing_time_is_refused_and_a_static_folder_is_recognised(folder):
    edit_json(folder, lambda m: m["frames"][1].pop("time"))
    with pytest.raises(InputError, match=r"entry 1 .* has no 'time'"):
        load_transforms(folder)
    edit_json(folder, lambda m: [f.pop("time", None) for f in m["frames"]])
    with pytest.raises(InputError, match="static NeRF folder"):
        load_transforms(folder)


def test_bad_transform_matrix_or_no_focal_length(folder):
    good = json.loads((folder / "transforms_train.json").read_text())["frames"][2]["transform_matrix"]
    edit_json(folder, lambda m: m["frames"][2].update(transform_matrix=[[1, 0], [0, 1]]))
    with pytest.raises(InputError, match=r"entry 2 .* 'transform_matrix'"):
        load_transforms(folder)
    flat = np.eye(4)
    flat[3] = 0.0  # a bottom row of zeros: not a camera pose (the error used to name no entry)
    edit_json(folder, lambda m: m["frames"][2].update(transform_matrix=good))
    edit_json(folder, lambda m: m["frames"][5].update(transform_matrix=flat.tolist()))
    with pytest.raises(InputError, match=r"entry 5 \('[^']*r_0005'\) has a 'transform_matrix' that is not a camera"):
        load_transforms(folder)
    edit_json(folder, lambda m: m["frames"][5].update(transform_matrix=good))
    edit_json(folder, lambda m: [m.pop(k) for k in ("fl_x", "camera_angle_x")])
    with pytest.raises(InputError, match="no focal length"):
        load_transforms(folder)


def test_a_single_training_view_is_refused_with_how_many_are_needed(tmp_path):
    video = sphere_video(views=1, times=3)
    write_transforms(tmp_path, video)
    with pytest.raises(InputError, match="1 distinct camera pose.*at least 2"):
        load_transforms(tmp_path)
    write_transforms(tmp_path, video, "test")
    assert load_transforms(tmp_path, "test").view_count() == 1  # one held-out view is a valid test split
    with pytest.raises(InputError, match="at least 3"):
        load_transforms(tmp_path, "test", min_views=3)


def test_a_camera_looking_away_is_named(folder):
    def turn_away(meta):
        c2w = np.array(meta["frames"][6]["transform_matrix"])
        c2w[:3, :3] = c2w[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # half a turn about its own up axis
        meta["frames"][6]["transform_matrix"] = c2w.tolist()

    edit_json(folder, turn_away)
    with pytest.raises(InputError, match=r"entry 6 \('./train/r_0006'\) does not see the object.*behind the camera"):
        load_transforms(folder)


def test_cameras_round_trip_per_entry_intrinsics(tmp_path):
    video = sphere_video()
    ks = video.cameras.Ks.copy()
    ks[1::2, 0, 0] *= 1.1
    cams = Cameras(video.cameras.viewmats, ks, SIZE, SIZE)
    write_transforms(tmp_path, MultiViewVideo(video.images, video.alphas, cams, video.times, video.names))
    assert "fl_x" in json.loads((tmp_path / "transforms_train.json").read_text())["frames"][1]
    np.testing.assert_allclose(load_transforms(tmp_path).cameras.Ks, ks, rtol=1e-6)


def test_downscaled_images_with_the_full_size_json_get_scaled_intrinsics(tmp_path):
    """A nerfstudio-style json keeps fl_x/cx/cy/w/h of the full-size images; the folder holds half-size ones."""
    write_transforms(tmp_path, sphere_video(size=2 * SIZE))
    full = load_transforms(tmp_path)
    for png in (tmp_path / "train").glob("*.png"):
        with Image.open(png) as im:
            im.resize((SIZE, SIZE), Image.BOX).save(png)
    half = load_transforms(tmp_path)
    assert half.width == SIZE
    np.testing.assert_allclose(half.cameras.Ks[:, :2], full.cameras.Ks[:, :2] / 2, rtol=1e-6)
    edit_json(tmp_path, lambda m: m.update(w=2 * SIZE, h=SIZE))  # another shape than the images
    with pytest.raises(InputError, match=r"'w' × 'h' is 32×16 but the images are 16×16"):
        load_transforms(tmp_path)


def test_extensionless_paths_find_jpg_images(tmp_path):
    write_transforms(tmp_path, sphere_video(alpha=False))
    for png in (tmp_path / "train").glob("*.png"):
        with Image.open(png) as im:
            im.convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    assert len(load_transforms(tmp_path)) == 8


def test_a_field_of_view_in_degrees_is_named_with_its_value_in_radians(folder):
    edit_json(folder, lambda m: [m.update(camera_angle_x=45.8), [m.pop(k) for k in ("fl_x", "fl_y", "cx", "cy")]])
    with pytest.raises(InputError, match=r"transforms_train.json: entry 0 .* camera_angle_x is 45.8.* write 0.799"):
        load_transforms(folder)


def test_fully_transparent_images_are_refused(tmp_path):
    video = sphere_video()
    clear = np.zeros_like(video.alphas)
    blank = MultiViewVideo(np.ones_like(video.images), clear, video.cameras, video.times, video.names)
    write_transforms(tmp_path, blank)
    with pytest.raises(InputError, match="every image is fully transparent"):
        load_transforms(tmp_path)


def test_a_video_where_nothing_moves_gets_a_warning():
    from dataclasses import replace

    from moving_scenes import cameras, moving_block_video

    video = moving_block_video(cameras(3, 16), [0.0, 0.5, 1.0], 16)
    assert video.still_warning() is None
    first = {tuple(np.round(v, 5).ravel()): i for i, v in reversed(list(enumerate(video.cameras.viewmats)))}
    same = np.stack([video.images[first[tuple(np.round(v, 5).ravel())]] for v in video.cameras.viewmats])
    assert "nothing moves over the captured times" in replace(video, images=same).still_warning()
    one_time = replace(video, images=same, times=np.zeros_like(video.times))
    assert one_time.still_warning() is None  # a single time is a still capture by choice


def test_images_without_the_object_among_others_are_named_in_a_warning():
    from dataclasses import replace

    from moving_scenes import cameras, moving_block_video

    video = moving_block_video(cameras(3, 16), [0.0, 0.5, 1.0], 16)
    assert video.empty_warning() is None
    alphas = video.alphas.copy()
    alphas[4] = 0.0  # a render that came out empty
    note = replace(video, alphas=alphas).empty_warning()
    assert note is not None and note.startswith("1 of 9 images are fully transparent (entry_004)"), note
    assert replace(video, alphas=None).empty_warning() is None


def test_times_a_float_rounding_apart_are_one_time(folder):
    from backend.gaussians4d.data import snap_times

    snapped = snap_times(np.array([0.0, 0.0, 1e-7, 0.5, 0.50000006, 0.50000006, 0.5002, 1.0], np.float32))
    assert snapped.tolist() == np.float32([0.0, 0.0, 0.0, 0.50000006, 0.50000006, 0.50000006, 0.5002, 1.0]).tolist()
    edit_json(
        folder, lambda m: [f.update(time=min(1.0, f["time"] + 1e-7 * (i % 4))) for i, f in enumerate(m["frames"])]
    )
    video = load_transforms(folder)
    assert len(video.time_values()) == 2 and video.describe() == "4 views × 2 times"


def test_a_moving_camera_with_one_image_per_pose_gets_no_still_warning():
    """A monocular video (D-NeRF's scenes: every image from its own pose at its own time) cannot show that nothing
    moves: no camera saw two times."""
    from dataclasses import replace

    video = sphere_video(views=4, times=1)
    mono = replace(video, times=np.linspace(0, 1, 4, dtype=np.float32), images=np.repeat(video.images[:1], 4, 0))
    assert mono.still_warning() is None and mono.describe() == "4 camera poses, 4 times"


def test_images_without_alpha_are_keyed_from_a_plain_background_only():
    from dataclasses import replace

    from backend.gaussians4d.data import key_plain_background

    with_alpha = sphere_video()
    assert key_plain_background(with_alpha) == (with_alpha, None)
    keyed, note = key_plain_background(sphere_video(alpha=False))  # over white
    assert "told from their plain background (RGB 1.00, 1.00, 1.00)" in note
    truth = with_alpha.alphas > 0.5
    iou = ((keyed.alphas > 0.5) & truth).sum() / ((keyed.alphas > 0.5) | truth).sum()
    assert iou > 0.9, iou
    noise = np.random.default_rng(0).uniform(0, 1, with_alpha.images.shape).astype(np.float32)
    busy = replace(sphere_video(alpha=False), images=np.where(truth[..., None], with_alpha.images, noise))
    same, warning = key_plain_background(busy)
    assert same is busy and same.alphas is None and "not one plain colour" in warning


def test_image_paths_as_other_tools_write_them(tmp_path):
    """Windows backslashes, an extension in capitals, a '.png' entry whose file was saved as '.jpg'."""
    write_transforms(tmp_path, sphere_video(alpha=False))
    pngs = sorted((tmp_path / "train").glob("*.png"))
    pngs[0].rename(pngs[0].with_suffix(".PNG"))
    with Image.open(pngs[1]) as im:
        im.save(pngs[1].with_suffix(".jpg"), quality=95)
    pngs[1].unlink()
    edit_json(tmp_path, lambda m: [f.update(file_path=f["file_path"].replace("/", "\\") + ".png") for f in m["frames"]])
    assert len(load_transforms(tmp_path)) == 8


def test_a_json_file_given_for_the_folder_says_to_give_its_folder(folder):
    with pytest.raises(InputError, match="is a file: give the folder that holds it"):
        load_transforms(folder / "transforms_train.json")


def test_a_vertical_field_of_view_alone_is_a_focal_length(folder):
    edit_json(folder, lambda m: [m.pop(k, None) for k in ("camera_angle_x", "fl_x", "fl_y", "cx", "cy")])
    edit_json(folder, lambda m: m.update(camera_angle_y=math.radians(40.0)))
    video = load_transforms(folder)
    assert video.cameras.Ks[0, 0, 0] == pytest.approx(0.5 * SIZE / math.tan(math.radians(20.0)), rel=1e-5)


def test_a_ring_that_follows_the_object_is_a_rig_that_moves():
    """The capture's follow: 6 views at every time, somewhere else each time. The object's box holds it at every
    time (one hull of all the images would carve the travelling cube away), and each time's cameras are checked
    against the cube where it is then (its centre over the whole path is out of most views)."""
    from moving_scenes import SMALL_END, SMALL_HALF, SMALL_START, followed_small_traveller_video, small_traveller_video

    times = np.linspace(0, 1, 4)
    video = followed_small_traveller_video(6, times, 32)
    assert video.fixed_cameras() and video.cameras_move()
    assert video.describe() == "6 moving views × 4 times"
    lo, hi = video.bounds()
    assert np.all(lo <= SMALL_START - 0.8 * SMALL_HALF) and np.all(hi >= SMALL_END + 0.8 * SMALL_HALF)
    assert np.all(hi - lo <= SMALL_END - SMALL_START + 2 * SMALL_HALF + 0.3)
    still = small_traveller_video(ring_cameras(6, radius=3.0, width=32, height=32), times, 32)
    assert still.fixed_cameras() and not still.cameras_move() and still.describe() == "6 views × 4 times"


def test_a_following_ring_loads_and_a_camera_that_loses_the_object_is_still_named(tmp_path):
    from moving_scenes import followed_small_traveller_video

    video = followed_small_traveller_video(6, np.linspace(0, 1, 4), 32)
    write_transforms(tmp_path, video, "train")
    loaded = load_transforms(tmp_path, "train")
    assert loaded.describe() == "6 moving views × 4 times"
    meta = json.loads((tmp_path / "transforms_train.json").read_text())
    frame = meta["frames"][9]  # the second time's fourth view, turned to look away
    m = np.asarray(frame["transform_matrix"])
    m[:3, :3] = m[:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    frame["transform_matrix"] = m.tolist()
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"entry 9 .*does not see the object"):
        load_transforms(tmp_path, "train")


def test_a_json_written_with_a_byte_order_mark_loads(folder):
    path = folder / "transforms_train.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Notepad or PowerShell write UTF-8
    assert len(load_transforms(folder)) == 8


def test_images_without_alpha_among_rgba_ones_are_named(tmp_path):
    # They would claim the object fills their whole image (alpha 1) and swell its hull
    write_transforms(tmp_path, sphere_video())
    for index in (3, 6):
        path = tmp_path / "train" / f"r_{index:04d}.png"
        rgba = Image.open(path)
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        background.save(path)
    pattern = r"entries 3 \('./train/r_0003'\), 6 \('./train/r_0006'\) have no alpha channel \(nor a 'mask_path'\)"
    with pytest.raises(InputError, match=pattern):
        load_transforms(tmp_path)


def masks_beside_rgb_images(folder: Path, video: MultiViewVideo) -> None:
    """Turn the RGBA images written for `video` into RGB ones over white, with the alpha as nerfstudio masks."""
    (folder / "masks").mkdir()
    for f in range(len(video)):
        path = folder / "train" / f"r_{f:04d}.png"
        Image.open(path).convert("RGB").save(path)  # the RGBA was written over white: RGB keeps that look
        mask = np.round(video.alphas[f] * 255).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(folder / "masks" / f"m_{f:04d}.png")
    edit_json(folder, lambda m: [e.update(mask_path=f"masks/m_{f:04d}.png") for f, e in enumerate(m["frames"])])


def test_nerfstudio_masks_give_the_alphas(tmp_path):
    video = sphere_video()
    write_transforms(tmp_path, video)
    masks_beside_rgb_images(tmp_path, video)
    loaded = load_transforms(tmp_path)
    assert loaded.alphas is not None
    assert np.abs(loaded.alphas - video.alphas).max() <= 1 / 255 + 1e-6
    # Masks and alpha channels together: the mask multiplies the image's own alpha
    write_transforms(tmp_path / "both", video)
    half = np.full((SIZE, SIZE), 128, np.uint8)
    Image.fromarray(half, mode="L").save(tmp_path / "both" / "half.png")
    edit_json(tmp_path / "both", lambda m: m["frames"][0].update(mask_path="half.png"))
    both = load_transforms(tmp_path / "both")
    assert np.allclose(both.alphas[0], video.alphas[0] * 128 / 255, atol=2 / 255)
    assert np.allclose(both.alphas[1:], video.alphas[1:], atol=1 / 255 + 1e-6)
    # Masks of 0/1 labels (they look black) mean 0 and 1, not 0 and 1/255
    labels = (video.alphas[0] > 0.5).astype(np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "both" / "half.png")
    assert np.array_equal(load_transforms(tmp_path / "both").alphas[0] > 0.5, labels > 0)


def test_bad_nerfstudio_masks_are_named(tmp_path):
    video = sphere_video()
    write_transforms(tmp_path, video)
    masks_beside_rgb_images(tmp_path, video)
    (tmp_path / "masks" / "m_0002.png").unlink()
    with pytest.raises(InputError, match=r"the mask of entry 2 \('./train/r_0002'\) is missing: no .*m_0002.png"):
        load_transforms(tmp_path)
    Image.new("L", (SIZE * 2, SIZE)).save(tmp_path / "masks" / "m_0002.png")
    with pytest.raises(InputError, match=r"entry 2 .*m_0002.png, is 32×16 but its image is 16×16"):
        load_transforms(tmp_path)
    edit_json(tmp_path, lambda m: m["frames"][2].update(mask_path=7))
    with pytest.raises(InputError, match=r"entry 2 \('./train/r_0002'\) has 'mask_path' 7; it must name a mask"):
        load_transforms(tmp_path)
    # Without a mask, entry 2 alone would say the object fills its whole image: named as an RGB image among masked
    edit_json(tmp_path, lambda m: m["frames"][2].pop("mask_path"))
    with pytest.raises(InputError, match=r"entries 2 \('./train/r_0002'\) have no alpha channel \(nor a 'mask_path'\)"):
        load_transforms(tmp_path)


def test_lens_distortion_is_noted_as_ignored(folder):
    from backend.gaussians4d.data import distortion_note

    assert distortion_note(folder) is None
    edit_json(folder, lambda m: m.update(k1=0.0, p1=0.0, camera_model="PINHOLE"))  # nerfstudio, undistorted
    assert distortion_note(folder) is None
    edit_json(folder, lambda m: [m.update(camera_model="OPENCV_FISHEYE"), m["frames"][1].update(k2=-0.02)])
    note = distortion_note(folder)
    assert "k2 = -0.02, camera_model OPENCV_FISHEYE" in note and "Undistort the images first" in note
    assert len(load_transforms(folder)) == 8  # a note, not an error: the fit still runs
