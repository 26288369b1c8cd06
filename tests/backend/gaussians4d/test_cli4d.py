"""`tessera4d fit4d / render4d / export4d` on a tiny synthetic D-NeRF folder (a few steps: plumbing, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from typer.testing import CliRunner

from backend.cli import app
from backend.gaussians4d.cameras import Cameras, ring_cameras
from backend.gaussians4d.data import MultiViewVideo, write_transforms
from backend.gaussians4d.rasterize import rasterize

pytestmark = pytest.mark.timeout(90)
SIZE = 24
TIMES = (0.0, 0.5, 1.0)


def block_video(views: int, times, start_deg: float = 0.0) -> MultiViewVideo:
    """A block of 150 coloured Gaussians sliding along +x, over white, from a ring of cameras."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (150, 3)) * np.array([0.5, 0.3, 0.25])
    colors = np.clip(0.5 + 0.5 * np.tanh(3 * points), 0, 1)
    cams = ring_cameras(views, radius=3.0, elevation_deg=20, fov_deg=40, width=SIZE, height=SIZE, start_deg=start_deg)
    images, alphas, entry_times = [], [], []
    for t in times:
        with torch.no_grad():
            rgb, alpha, _ = rasterize(
                torch.as_tensor(points + [0.3 * t, 0, 0], dtype=torch.float32),
                torch.tensor([[1.0, 0, 0, 0]]).repeat(150, 1),
                torch.full((150, 3), 0.08),
                torch.full((150,), 0.9),
                torch.as_tensor(colors, dtype=torch.float32),
                torch.as_tensor(cams.viewmats),
                torch.as_tensor(cams.Ks),
                SIZE,
                SIZE,
                backgrounds=torch.ones(views, 3),
            )
        images.append(rgb.clamp(0, 1).numpy())
        alphas.append(alpha[..., 0].numpy())
        entry_times += [t] * views
    n = len(entry_times)
    return MultiViewVideo(
        np.concatenate(images),
        np.concatenate(alphas),
        Cameras(np.tile(cams.viewmats, (len(times), 1, 1)), np.tile(cams.Ks, (len(times), 1, 1)), SIZE, SIZE),
        np.asarray(entry_times, np.float32),
        [f"e{i}" for i in range(n)],
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dnerf")
    write_transforms(folder, block_video(4, TIMES), "train")
    write_transforms(folder, block_video(1, (0.0, 1.0), start_deg=45.0), "test")
    return folder


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def model_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    code, text = cli("fit4d", data_dir, "--out", out, "--iterations", 3, "--device", "cpu")
    assert code == 0, text
    assert "held-out (2 images): PSNR" in text and "SSIM" in text
    return out


def test_fit4d_writes_a_model_folder_with_its_times(model_dir) -> None:
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert json.loads((model_dir / "times.json").read_text())["times"] == list(TIMES)
    meta = json.loads((model_dir / "config.json").read_text())["meta"]
    assert meta["iterations"] == 3 and meta["preset"] == "fast"
    assert meta["captured_times"] == [0.0, 1.0]


def test_render4d_writes_one_png_per_entry_named_after_it(model_dir, data_dir, tmp_path) -> None:
    code, text = cli("render4d", model_dir, "--cameras", data_dir / "transforms_test.json", "--out", tmp_path / "r")
    assert code == 0, text
    names = [e["file_path"] for e in json.loads((data_dir / "transforms_test.json").read_text())["frames"]]
    for name in names:
        image = Image.open(tmp_path / "r" / Path(name).with_suffix(".png"))
        assert image.size == (SIZE, SIZE) and image.mode == "RGBA"
        assert np.asarray(image)[..., 3].max() > 0  # the model is seen
    assert f"{len(names)} renders" in text
    assert "warning" not in text  # every entry is within the captured times


def test_render4d_warns_of_entries_outside_the_captured_times(data_dir, tmp_path) -> None:
    folder = tmp_path / "first-half"
    write_transforms(folder, block_video(4, (0.0, 0.25, 0.5)), "train")
    code, text = cli("fit4d", folder, "--out", tmp_path / "m", "--iterations", 1, "--device", "cpu")
    assert code == 0, text
    test_json = data_dir / "transforms_test.json"
    code, text = cli("render4d", tmp_path / "m", "--cameras", test_json, "--out", tmp_path / "r")
    assert code == 0, text
    assert "warning: entries 1 ('./test/r_0001', time 1) are outside the times the model was fitted on (0 to" in text
    assert len(list((tmp_path / "r").rglob("*.png"))) == 2  # a warning: both are still rendered


def test_export4d_writes_ply_frames_mesh_sequence_and_obj(model_dir, tmp_path) -> None:
    code, text = cli(
        "export4d", model_dir, "--ply", tmp_path / "ply", "--mesh", tmp_path / "seq.npz",
        "--rest-mesh", tmp_path / "rest.obj", "--frames", 4, "--mesh-resolution", 24,
    )  # fmt: skip
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "ply").iterdir()) == [f"frame_000{i}.ply" for i in range(1, 5)]
    seq = np.load(tmp_path / "seq.npz")
    assert seq["frames"].shape == (4, *seq["rest"].shape) and seq["faces"].shape[1] == 3
    obj = trimesh.load(tmp_path / "rest.obj", process=False)
    assert len(obj.vertices) == len(seq["rest"]) and "marching cubes" in text


def test_fit4d_with_view_dependent_colour_and_colour_motion_writes_them(data_dir, tmp_path) -> None:
    from plyfile import PlyData

    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--iterations", 2, "--sh-degree", 1, "--color-motion")
    assert code == 0, text
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert '"color_motion": true' in json.dumps(config) and '"sh_degree": 1' in json.dumps(config), config
    code, text = cli("export4d", tmp_path / "m", "--ply", tmp_path / "ply", "--frames", 2)
    assert code == 0, text
    names = PlyData.read(str(tmp_path / "ply" / "frame_0001.ply"))["vertex"].data.dtype.names
    assert [n for n in names if n.startswith("f_rest_")] == [f"f_rest_{i}" for i in range(9)]  # 3 bands × RGB
    code, text = cli(
        "render4d", tmp_path / "m", "--cameras", data_dir / "transforms_test.json", "--out", tmp_path / "r"
    )
    assert code == 0, text
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m4", "--sh-degree", 4)
    assert (
        code == 2 and "--sh-degree" in text and "less than or equal to 3" in text and not (tmp_path / "m4").exists()
    ), text


def test_fit4d_with_a_rest_mesh_exports_that_mesh_moving(data_dir, tmp_path) -> None:
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.5))
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.25)
    trimesh.Trimesh(vertices, faces, process=False).export(tmp_path / "box.obj")
    out = tmp_path / "m"
    code, text = cli("fit4d", data_dir, "--out", out, "--iterations", 2, "--rest-mesh", tmp_path / "box.obj")
    assert code == 0, text
    code, text = cli("export4d", out, "--mesh", tmp_path / "seq.npz")
    assert code == 0, text
    seq = np.load(tmp_path / "seq.npz")
    assert seq["frames"].shape == (len(TIMES), len(vertices), 3) and len(seq["faces"]) == len(faces)
    assert "rest mesh" in text


QUAD_CUBE_OBJ = """v -0.5 -0.3 -0.25
v 0.5 -0.3 -0.25
v 0.5 0.3 -0.25
v -0.5 0.3 -0.25
v -0.5 -0.3 0.25
v 0.5 -0.3 0.25
v 0.5 0.3 0.25
v -0.5 0.3 0.25
vt 0 0
vt 1 0
vt 1 1
vt 0 1
f 1/1 4/4 3/3 2/2
f 5/1 6/2 7/3 8/4
f 1/1 2/2 6/3 5/4
f 2/1 3/2 7/3 6/4
f 3/1 4/2 8/3 7/4
f 4/1 1/2 5/3 8/4
"""


def test_export4d_pc2_moves_the_users_own_quad_mesh_vertex_for_vertex(data_dir, tmp_path) -> None:
    from backend.formats.mesh_sequence import open_pc2

    (tmp_path / "cube.obj").write_text(QUAD_CUBE_OBJ)  # quads with UVs: what a rigger's mesh looks like
    out = tmp_path / "m"
    code, text = cli("fit4d", data_dir, "--out", out, "--iterations", 2, "--rest-mesh", tmp_path / "cube.obj")
    assert code == 0, text
    code, text = cli("export4d", out, "--pc2", tmp_path / "anim", "--mesh", tmp_path / "seq.npz")
    assert code == 0, text
    assert "anim.pc2" in text  # the suffix is added
    cache = open_pc2(tmp_path / "anim.pc2", tmp_path / "cube.obj")  # read back against the user's own mesh
    seq = np.load(tmp_path / "seq.npz")
    assert cache.frame_count == len(TIMES) and len(cache.rest) == 8
    np.testing.assert_allclose(cache.read_frames(0, len(TIMES)), seq["frames"], atol=1e-6)

    # --pc2 makes its folder as the other outputs do; --rest-mesh writes, so the user's own OBJ is never replaced
    code, text = cli("export4d", out, "--pc2", tmp_path / "new" / "anim.pc2")
    assert code == 0 and (tmp_path / "new" / "anim.pc2").is_file(), text
    code, text = cli("export4d", out, "--mesh", tmp_path / "later" / "seq.npz", "--rest-mesh", tmp_path / "cube.obj")
    assert code == 1 and "holds UVs or faces of four or more corners" in " ".join(text.split()), text
    assert (tmp_path / "cube.obj").read_text() == QUAD_CUBE_OBJ
    assert not (tmp_path / "later" / "seq.npz").exists()  # refused before anything was written
    code, text = cli("export4d", out, "--rest-mesh", tmp_path / "rest.obj")  # a new name is fine, and so is again
    code, text = cli("export4d", out, "--rest-mesh", tmp_path / "rest.obj")
    assert code == 0 and len(trimesh.load(tmp_path / "rest.obj", process=False).faces) == 12, text


def test_fit4d_that_fails_on_its_rest_mesh_leaves_no_empty_model_folder(data_dir, tmp_path) -> None:
    (tmp_path / "cm.obj").write_text(
        "\n".join(line if not line.startswith("v ") else "v " + " ".join(str(100 * float(x)) for x in line.split()[1:])
                  for line in QUAD_CUBE_OBJ.splitlines())
    )  # fmt: skip
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", tmp_path / "cm.obj")
    assert code == 1 and "100× too big" in text and not (tmp_path / "m").exists(), text
    (tmp_path / "mm.obj").write_text(
        "\n".join(line if not line.startswith("v ") else "v " + " ".join(str(float(x) / 1000) for x in line.split()[1:])
                  for line in QUAD_CUBE_OBJ.splitlines())
    )  # fmt: skip
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", tmp_path / "mm.obj")
    assert code == 1 and "100× too small" in " ".join(text.split()), text
    (tmp_path / "char.fbx").write_bytes(b"Kaydara FBX Binary  \x00")
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", tmp_path / "char.fbx")
    assert code == 1 and "export FBX, Alembic or .blend meshes as OBJ or glTF first" in " ".join(text.split()), text


def test_fit4d_warns_when_the_rest_mesh_looks_turned_against_the_capture(data_dir, tmp_path) -> None:
    box = trimesh.creation.box(extents=(0.5, 0.6, 1.0))  # the block is 1.0 × 0.6 × 0.5: this one is x↔z turned
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.25)
    trimesh.Trimesh(vertices, faces, process=False).export(tmp_path / "turned.obj")
    turned = tmp_path / "turned.obj"
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--iterations", 1, "--rest-mesh", turned)
    assert code == 0, text
    assert "warning: The rest mesh looks turned against the capture" in " ".join(text.split()), text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("fit4d", "{tmp}/nowhere", "--out", "{tmp}/m"), "does not exist"),
        (("fit4d", "{data}", "--out", "{tmp}/m", "--preset", "slow"), "--preset must be one of fast, quality"),
        (("fit4d", "{data}", "--out", "{tmp}/m", "--rest-mesh", "{tmp}/none.obj"), "Rest mesh"),
        (("render4d", "{tmp}/nomodel", "--cameras", "{data}/transforms_test.json", "--out", "{tmp}/r"), "fit4d"),
        (("export4d", "{tmp}/nomodel", "--ply", "{tmp}/p"), "does not exist"),
        (("export4d", "{tmp}/nomodel"), "Nothing to export"),
    ],
)
def test_bad_input_is_one_clear_error_line(args, words, data_dir, tmp_path) -> None:
    code, text = cli(*(a.format(tmp=tmp_path, data=data_dir) for a in args))
    assert code == 1 and "error:" in text and words in text, text
    assert "Traceback" not in text


def test_render4d_refuses_a_camera_file_without_cameras(model_dir, tmp_path) -> None:
    bad = tmp_path / "transforms_test.json"
    bad.write_text(json.dumps({"camera_angle_x": 0.7, "frames": [{"file_path": "a", "time": 0.2}]}))
    code, text = cli("render4d", model_dir, "--cameras", bad, "--out", tmp_path / "r", "--size", "8x8")
    assert code == 1 and "transform_matrix" in text, text


@pytest.mark.parametrize(
    ("device", "words"),
    [("gpu0", "Unknown device 'gpu0': use cpu, cuda or cuda:N"), ("cuda:7", "cuda:7")],
)
def test_a_device_this_machine_lacks_is_one_error_line(device, words, data_dir, tmp_path) -> None:
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--iterations", 1, "--device", device)
    assert code == 1 and words in text and "Traceback" not in text, text
    assert not (tmp_path / "m").exists()


def test_an_output_that_cannot_be_a_folder_fails_before_the_fit(data_dir, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "afile" / "m", "--iterations", 1)
    assert code == 1 and "afile" in text and "Traceback" not in text, text
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "afile", "--iterations", 1)
    assert code == 1 and "is a file, not a folder" in text, text


def test_a_test_split_without_times_is_a_warning_and_the_fit_goes_on(data_dir, tmp_path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for item in data_dir.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "transforms_test.json").unlink()
    meta = json.loads((data_dir / "transforms_test.json").read_text())
    [f.pop("time") for f in meta["frames"]]
    (folder / "transforms_test.json").write_text(json.dumps(meta))
    code, text = cli("fit4d", folder, "--out", tmp_path / "m", "--iterations", 1)
    assert code == 0, text
    assert "warning: no held-out score: transforms_test.json cannot be used" in text and "has no 'time'" in text
    code, text = cli("render4d", tmp_path / "m", "--cameras", folder / "transforms_test.json", "--out", tmp_path / "r")
    assert code == 1 and "give --time T" in text, text
    code, text = cli(
        "render4d", tmp_path / "m", "--cameras", folder / "transforms_test.json", "--out", tmp_path / "r", "--time", 0.5
    )
    assert code == 0 and "2 renders" in text, text


def _camera_json(data_dir: Path, path: Path, names: list[str], **top) -> Path:
    meta = json.loads((data_dir / "transforms_test.json").read_text())
    frames = [dict(meta["frames"][i % len(meta["frames"])], file_path=n) for i, n in enumerate(names)]
    path.write_text(json.dumps({**{k: v for k, v in meta.items() if k != "frames"}, **top, "frames": frames}))
    return path


def test_render4d_keeps_dotted_names_and_refuses_two_entries_on_one_file(model_dir, data_dir, tmp_path) -> None:
    names = ["./test/cam0.t0.0", "./test/cam0.t0.5", "./test/frame.001", "./test/shot.jpg"]
    cams = _camera_json(data_dir, tmp_path / "dots.json", names)
    code, text = cli("render4d", model_dir, "--cameras", cams, "--out", tmp_path / "r")
    assert code == 0, text
    written = sorted(p.name for p in (tmp_path / "r" / "test").iterdir())
    assert written == ["cam0.t0.0.png", "cam0.t0.5.png", "frame.001.png", "shot.png"]
    cams = _camera_json(data_dir, tmp_path / "same.json", ["./test/a.png", "./test/a.jpg"])
    code, text = cli("render4d", model_dir, "--cameras", cams, "--out", tmp_path / "r2")
    assert code == 1 and "entries 0 and 1 would both be written" in text, text
    assert not (tmp_path / "r2").exists()


def test_render4d_scales_pixel_intrinsics_to_its_size(model_dir, data_dir, tmp_path) -> None:
    """Pixel intrinsics of a SIZE² json rendered at 2·SIZE: the same picture, twice as large."""
    meta = json.loads((data_dir / "transforms_test.json").read_text())
    cams = _camera_json(data_dir, tmp_path / "c.json", ["./a"], w=SIZE, h=SIZE, fl_x=meta["fl_x"], cx=meta["cx"])
    renders = []
    for size in (SIZE, 2 * SIZE):
        out = tmp_path / f"r{size}"
        code, text = cli("render4d", model_dir, "--cameras", cams, "--out", out, "--size", f"{size}x{size}")
        assert code == 0, text
        renders.append(np.asarray(Image.open(tmp_path / f"r{size}" / "a.png"), np.float32)[..., 3])
    small, large = renders
    halved = large.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3))
    assert np.abs(halved - small).mean() < 0.05 * 255, np.abs(halved - small).mean()
    code, text = cli("render4d", model_dir, "--cameras", cams, "--out", tmp_path / "r3", "--size", f"{SIZE}x{2 * SIZE}")
    assert code == 1 and "another shape" in text, text


def test_export4d_replaces_earlier_frames_and_names_what_it_wrote(model_dir, tmp_path) -> None:
    (tmp_path / "ply").mkdir()
    for i in range(1, 9):
        (tmp_path / "ply" / f"frame_{i:04d}.ply").write_text("old")
    (tmp_path / "ply" / "notes.txt").write_text("mine")
    code, text = cli(
        "export4d", model_dir, "--ply", tmp_path / "ply", "--mesh", tmp_path / "new" / "anim",
        "--rest-mesh", tmp_path / "rest.ply", "--frames", 3, "--mesh-resolution", 24,
    )  # fmt: skip
    assert code == 0, text
    names = sorted(p.name for p in (tmp_path / "ply").iterdir())
    assert names == ["frame_0001.ply", "frame_0002.ply", "frame_0003.ply", "notes.txt"]
    assert str(tmp_path / "new" / "anim.npz") in text.replace("\n", "")
    assert np.load(tmp_path / "new" / "anim.npz")["frames"].shape[0] == 3
    assert len(trimesh.load(tmp_path / "rest.ply", process=False).vertices) > 0  # a real PLY, not OBJ text
    code, text = cli("export4d", model_dir, "--rest-mesh", tmp_path / "rest.fbx")
    assert code == 1 and ".obj, .ply" in text, text


def test_a_rest_mesh_in_other_units_is_refused_before_the_fit(data_dir, tmp_path) -> None:
    box = trimesh.creation.box(extents=(100.0, 60.0, 50.0))  # centimetres in a capture in metres
    box.export(tmp_path / "big.obj")
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", tmp_path / "big.obj")
    assert code == 1 and "the size of the captured object" in text and "units" in text, text
    points = tmp_path / "points.obj"
    points.write_text("".join(f"v {i} 0 0\n" for i in range(4)))
    code, text = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", points)
    assert code == 1 and "has no faces" in text, text


def test_a_loose_vertex_far_from_the_rest_mesh_is_named_not_taken_for_its_size(data_dir, tmp_path) -> None:
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.25))
    text = box.export(file_type="obj")
    (tmp_path / "loose.obj").write_text(text + "v 5 5 5\n")
    code, out = cli("fit4d", data_dir, "--out", tmp_path / "m", "--rest-mesh", tmp_path / "loose.obj")
    assert code == 1 and "1 loose vertex(es)" in out and "vertex 8 at [5.0, 5.0, 5.0]" in out, out
    assert "the size of the captured object" not in out


def test_images_without_alpha_on_a_plain_background_are_keyed_and_scored_on_it(tmp_path) -> None:
    """Black-background RGB images: the object is told from the background (a note says so), the fit's renders
    are composited over black, and the held-out score is taken over black too (it was scored over white: 0.5 dB)."""
    for split, video in (("train", block_video(4, TIMES)), ("test", block_video(1, (0.0, 1.0), start_deg=45.0))):
        a = video.alphas[..., None]
        black = np.clip(video.images - (1.0 - a), 0.0, 1.0)  # un-composite from white, composite over black
        write_transforms(tmp_path / "rgb", MultiViewVideo(black, None, video.cameras, video.times, video.names), split)
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.5))
    box.export(tmp_path / "box.obj")
    code, out = cli("fit4d", tmp_path / "rgb", "--out", tmp_path / "m", "--iterations", 3, "--rest-mesh",
                    tmp_path / "box.obj")  # fmt: skip
    assert code == 0, out
    flat = " ".join(out.split())
    assert "the object was told from their plain background (RGB 0.00, 0.00, 0.00)" in flat, flat
    assert float(flat.split("PSNR ")[1].split(" dB")[0]) > 15.0, flat


def test_render4d_takes_per_entry_sizes_and_keeps_the_folders_of_absolute_paths(model_dir, data_dir, tmp_path) -> None:
    meta = json.loads((data_dir / "transforms_test.json").read_text())
    frames = [
        dict(meta["frames"][0], file_path=str(tmp_path / "shot" / cam / "0000.png"), w=2 * SIZE, h=2 * SIZE)
        for cam in ("cam00", "cam01")
    ]  # nerfstudio style: pixel intrinsics and size in every entry, no images next to the json
    top = {k: v for k, v in meta.items() if k in ("camera_angle_x",)}
    (tmp_path / "abs.json").write_text(json.dumps({**top, "frames": frames}))
    code, out = cli("render4d", model_dir, "--cameras", tmp_path / "abs.json", "--out", tmp_path / "r")
    assert code == 0, out
    assert sorted(p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("*.png")) == [
        "cam00/0000.png",
        "cam01/0000.png",
    ]
    assert Image.open(tmp_path / "r" / "cam00" / "0000.png").size == (2 * SIZE, 2 * SIZE)


def test_a_validation_split_scores_the_fit_when_there_is_no_test_split(data_dir, tmp_path) -> None:
    import shutil

    folder = tmp_path / "val"
    shutil.copytree(data_dir, folder)
    (folder / "transforms_test.json").rename(folder / "transforms_val.json")
    code, text = cli("fit4d", folder, "--out", tmp_path / "m", "--iterations", 2)
    assert code == 0 and "held-out (2 images): PSNR" in text, text


def test_render4d_refuses_to_replace_the_captures_own_images(model_dir, data_dir, tmp_path) -> None:
    test_json = data_dir / "transforms_test.json"
    sources = sorted(data_dir.rglob("*.png"))
    before = [p.read_bytes() for p in sources]
    code, text = cli("render4d", model_dir, "--cameras", test_json, "--out", data_dir)
    assert code == 1 and "would replace the capture's own image" in text and "another --out" in text, text
    assert [p.read_bytes() for p in sources] == before
    code, text = cli("render4d", model_dir, "--cameras", data_dir, "--out", tmp_path / "r")
    assert code == 1 and "is a folder; give the json itself" in text, text


def test_render4d_names_windows_absolute_paths_like_posix_ones(model_dir, data_dir, tmp_path) -> None:
    names = ["C:\\Users\\me\\shot\\cam00\\0000.png", "C:\\Users\\me\\shot\\cam01\\0000.png"]
    cams = _camera_json(data_dir, tmp_path / "win.json", names)
    code, text = cli("render4d", model_dir, "--cameras", cams, "--out", tmp_path / "r", "--size", f"{SIZE}x{SIZE}")
    assert code == 0, text
    assert sorted(p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("*.png")) == [
        "cam00/0000.png",
        "cam01/0000.png",
    ]


def test_fit4d_says_lens_distortion_is_ignored(data_dir, tmp_path) -> None:
    import shutil

    folder = tmp_path / "fisheye"
    shutil.copytree(data_dir, folder)
    meta = json.loads((folder / "transforms_train.json").read_text())
    (folder / "transforms_train.json").write_text(json.dumps({**meta, "k1": 0.1, "camera_model": "OPENCV"}))
    code, text = cli("fit4d", folder, "--out", tmp_path / "m", "--iterations", 1, "--device", "cpu")
    assert code == 0, text
    assert "warning: transforms_train.json gives lens distortion (k1 = 0.1, camera_model OPENCV)" in text
