"""Multi-view capture in real Blender: Workbench renders of an animated object from a ring of cameras
(or the user's cameras), with cameras in the NeRF convention, silhouettes in alpha, evenly spaced times,
and the user's scene exactly as it was afterwards."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from blender_rig import ADDON_MODULE

from backend.gaussians4d.cameras import cameras_from_nerf, nerf_c2w, ring_cameras

RES = 32


def mc():
    return importlib.import_module(f"{ADDON_MODULE}.collectors.multiview_capture")


def moving_cube(bpy, colour=(0.8, 0.2, 0.1, 1.0)):
    """A 1 m cube keyed from x = -0.5 (frame 1) to x = +0.5 (frame 11), with a flat material colour
    (Bézier keys: x = 0 at frame 6 by symmetry)."""
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-0.5, 0.0, 0.0))
    cube = bpy.context.active_object
    mat = bpy.data.materials.new("cube colour")
    mat.diffuse_color = colour
    cube.data.materials.append(mat)
    cube.keyframe_insert("location", frame=1)
    cube.location.x = 0.5
    cube.keyframe_insert("location", frame=11)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 11
    return cube


def test_ring_matches_the_backend_ring_cameras(installed_extension):
    c2w = mc().ring_c2w(6, (0.1, 0.2, 0.3), 4.0, elevation_deg=25.0, start_deg=10.0)
    backend = nerf_c2w(
        ring_cameras(6, center=(0.1, 0.2, 0.3), radius=4.0, elevation_deg=25.0, start_deg=10.0, width=8, height=8)
    )
    np.testing.assert_allclose(c2w, backend, atol=1e-5)


def test_capture_renders_the_moving_object_from_a_ring_and_restores_the_scene(blender):
    bpy = blender
    scene = bpy.context.scene
    cube = moving_cube(bpy)
    other = bpy.data.objects.new("user cam", bpy.data.cameras.new("user cam"))
    scene.collection.objects.link(other)
    scene.camera = other
    scene.frame_set(4)
    before = (
        scene.render.engine,
        scene.render.resolution_x,
        scene.render.film_transparent,
        scene.render.filepath,
        scene.view_settings.view_transform,
        scene.display.shading.light,
        len(bpy.data.objects),
        len(bpy.data.cameras),
        len(bpy.data.collections),
        sorted(i.name for i in bpy.data.images if i.type != "RENDER_RESULT"),  # Blender adds "Render Result"
    )

    out = mc().capture(bpy.context, cube, views=4, frames=3, resolution=RES)

    assert out.images.shape == (12, RES, RES, 3) and out.images.dtype == np.float32
    assert out.alphas.shape == (12, RES, RES) and out.c2w.shape == (12, 4, 4)
    np.testing.assert_allclose(out.times, np.tile([0.0, 0.5, 1.0], 4))
    np.testing.assert_allclose(out.scene_frames, np.tile([1.0, 6.0, 11.0], 4))
    assert out.fov_x == pytest.approx(math.radians(40.0))
    # The user's scene is as it was.
    assert scene.camera == other and scene.frame_current == 4
    after = (
        scene.render.engine,
        scene.render.resolution_x,
        scene.render.film_transparent,
        scene.render.filepath,
        scene.view_settings.view_transform,
        scene.display.shading.light,
        len(bpy.data.objects),
        len(bpy.data.cameras),
        len(bpy.data.collections),
        sorted(i.name for i in bpy.data.images if i.type != "RENDER_RESULT"),  # Blender adds "Render Result"
    )
    assert after == before

    # Silhouettes: the cube covers part of each image; its flat colour is the material's (sRGB-encoded).
    covered = out.alphas > 0.99
    assert ((covered.mean(axis=(1, 2)) > 0.03) & (covered.mean(axis=(1, 2)) < 0.6)).all()
    np.testing.assert_allclose(out.images[covered].mean(axis=0), srgb((0.8, 0.2, 0.1)), atol=0.02)

    # Each silhouette sits where the NeRF cameras project the cube's centre at that time.
    cams = cameras_from_nerf(out.c2w, RES, RES, camera_angle_x=out.fov_x)
    for e in range(len(out.times)):
        centre = np.array([-0.5 + out.times[e], 0.0, 0.0], np.float32)
        xy, depth = cams.subset(e).project(centre[None])
        rows, cols = np.nonzero(out.alphas[e] > 0.5)
        assert depth[0, 0] > 0
        np.testing.assert_allclose([cols.mean() + 0.5, rows.mean() + 0.5], xy[0, 0], atol=1.5)


def test_a_ring_that_follows_keeps_a_travelling_object_centred_and_larger(blender):
    """follow: the ring moves with the cube (1 m, travelling 1 m), centred on it at every time, so the cube stays
    where it is in every view and is larger there than in a ring framing its whole path; the ring's cameras are
    gone afterwards."""
    bpy = blender
    cube = moving_cube(bpy)
    cameras_before = len(bpy.data.cameras)
    still = mc().capture(bpy.context, cube, views=4, frames=3, resolution=RES)
    follow = mc().capture(bpy.context, cube, views=4, frames=3, resolution=RES, follow=True)

    for v in range(4):  # each camera moves with the cube (x −0.5 → 0.5), turning not at all
        c2w = follow.c2w[v * 3 : v * 3 + 3]
        np.testing.assert_allclose(c2w[:, :3, 3] - c2w[0, :3, 3], [[0, 0, 0], [0.5, 0, 0], [1, 0, 0]], atol=1e-4)
        np.testing.assert_allclose(c2w[:, :3, :3], np.broadcast_to(c2w[0, :3, :3], (3, 3, 3)), atol=1e-5)
    moved = {}  # how far the cube's silhouette moves in each view over the three times (pixels)
    for name, out in (("still", still), ("follow", follow)):
        centroids = np.array([[c.mean() for c in np.nonzero(alpha > 0.5)] for alpha in out.alphas]).reshape(4, 3, 2)
        moved[name] = np.linalg.norm(centroids - centroids[:, :1], axis=-1).max()
    assert moved["follow"] < 0.1 and moved["still"] > 3.0
    assert follow.alphas.sum() > 1.5 * still.alphas.sum()
    # the cube travels 1.4× its size (box diagonals √6 against √3): one ring suggests following it
    assert "travels 1.4× its own size" in still.note and "Ring Follows Object" in still.note
    assert follow.note is None

    cube.location.x = -0.3  # now it travels 1.1× its size: no advice
    cube.keyframe_insert("location", frame=11)
    assert mc().capture(bpy.context, cube, views=2, frames=2, resolution=8).note is None
    assert len(bpy.data.cameras) == cameras_before and not any(
        o.name.startswith("Tessera capture") for o in bpy.data.objects
    )


def test_the_selected_objects_and_the_active_ones_children_are_captured_and_nothing_else(blender):
    """A car body with a wheel parented to it, a selected second object and an unselected one: the capture
    renders the body, its wheel and the selected object; a camera clicked last (active) is not a subject."""
    bpy = blender
    scene = bpy.context.scene
    m = mc()
    body = moving_cube(bpy)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.3, location=(0.0, 0.0, 0.8))
    wheel = bpy.context.active_object
    wheel.parent = body
    wheel.matrix_parent_inverse = body.matrix_world.inverted()
    bpy.ops.mesh.primitive_cube_add(size=0.4, location=(0.0, 1.5, 0.0))
    passenger = bpy.context.active_object
    bpy.ops.mesh.primitive_cube_add(size=0.4, location=(0.0, -1.5, 0.0))
    bystander = bpy.context.active_object
    cam = bpy.data.objects.new("user cam", bpy.data.cameras.new("user cam"))
    scene.collection.objects.link(cam)

    bpy.ops.object.select_all(action="DESELECT")
    for ob in (body, passenger, cam):
        ob.select_set(True)
    bpy.context.view_layer.objects.active = cam
    subjects = m.capture_subjects(bpy.context)
    assert set(subjects) == {body, passenger} and m.subjects_label(subjects).endswith("and 1 more")
    bpy.context.view_layer.objects.active = body
    subjects = m.capture_subjects(bpy.context)
    assert subjects == [body, passenger] and m.subjects_label(subjects) == "'Cube' and 1 more"
    assert m.capture_subjects(bpy.context, follow_mesh=passenger.name) == [body]  # selected to follow with
    assert m.capture_subjects(bpy.context, follow_mesh=body.name) == [body, passenger]  # active: captured
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = None
    assert m.capture_subjects(bpy.context) == [] and m.subjects_label([]) == "the whole scene"
    group = bpy.data.objects.new("Group", None)  # an empty: it stands for what is parented to it
    scene.collection.objects.link(group)
    bpy.context.view_layer.objects.active = group
    assert m.capture_subjects(bpy.context) == []  # nothing under it yet
    passenger.parent = group
    assert m.capture_subjects(bpy.context) == [group] and m._targets(scene, [group]) == [passenger]
    passenger.hide_render = True
    with pytest.raises(m.InputError, match="Empty 'Group' has no visible object parented to it"):
        m._targets(scene, [group])
    passenger.hide_render, passenger.parent = False, None

    from mathutils import Matrix

    fixed = []  # cameras that stay put (a ring would frame each capture's own subjects)
    for i, c2w in enumerate(m.ring_c2w(4, (0.0, 0.0, 0.0), 7.0, elevation_deg=20.0, start_deg=30.0)):
        data = bpy.data.cameras.new(f"fixed {i}")
        data.sensor_fit, data.angle = "HORIZONTAL", math.radians(40.0)
        fixed.append(bpy.data.objects.new(f"fixed {i}", data))
        scene.collection.objects.link(fixed[-1])
        fixed[-1].matrix_world = Matrix(c2w.tolist())

    def capture(subjects):
        return m.capture(bpy.context, subjects, views=4, frames=3, resolution=RES, cameras=fixed)

    def covered(subjects) -> float:
        return float(capture(subjects).alphas.sum())

    both = capture([body, passenger])
    assert not bystander.hide_render and not wheel.hide_render  # the scene is put back
    body_alone = covered(body)
    assert covered([body, passenger]) > body_alone + 1.0  # the selected object is rendered too
    wheel.hide_render = True
    assert covered(body) < body_alone - 1.0  # and so was the wheel parented to the body
    wheel.hide_render = False
    bpy.data.objects.remove(bystander)  # it was never rendered: without it, the same pixels
    np.testing.assert_array_equal(capture([body, passenger]).alphas, both.alphas)


def test_a_collection_instance_is_captured_where_its_instances_are(blender):
    """A linked asset as studios bring it in: an empty instancing a collection that is not in the scene, keyed
    from x = -0.5 to 0.5. Its instances are framed and seen where they are, alone or as the whole scene."""
    bpy = blender
    scene = bpy.context.scene
    m = mc()
    cube = moving_cube(bpy)  # only for its mesh and material: moved into the asset, out of the scene
    cube.animation_data_clear()
    cube.location = (0.0, 0.0, 0.0)
    asset = bpy.data.collections.new("Asset")
    asset.objects.link(cube)
    scene.collection.objects.unlink(cube)
    instance = bpy.data.objects.new("Asset instance", None)
    instance.instance_type, instance.instance_collection = "COLLECTION", asset
    scene.collection.objects.link(instance)
    instance.location.x = -0.5
    instance.keyframe_insert("location", frame=1)
    instance.location.x = 0.5
    instance.keyframe_insert("location", frame=11)
    bpy.ops.mesh.primitive_cube_add(size=0.3, location=(0.0, 3.0, 0.0))  # a bystander, not selected below
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = instance
    assert m.capture_subjects(bpy.context) == [instance] and m.subjects_label([instance]) == "'Asset instance'"

    out = m.capture(bpy.context, instance, views=4, frames=3, resolution=RES)
    cams = cameras_from_nerf(out.c2w, RES, RES, camera_angle_x=out.fov_x)
    for e in range(len(out.times)):  # each silhouette where the instance is at that time
        xy, _ = cams.subset(e).project(np.array([[-0.5 + out.times[e], 0.0, 0.0]], np.float32))
        rows, cols = np.nonzero(out.alphas[e] > 0.5)
        np.testing.assert_allclose([cols.mean() + 0.5, rows.mean() + 0.5], xy[0, 0], atol=1.5)
    bpy.context.view_layer.objects.active = None  # the whole scene: framed with the instance in it
    whole = m.capture(bpy.context, None, views=4, frames=3, resolution=RES)
    assert whole.alphas.sum() < out.alphas.sum()  # a wider ring (the bystander too), the instance still in view
    assert (whole.alphas > 0.5).any(axis=(1, 2)).all()
    asset.objects.unlink(cube)  # an instance of an empty collection renders nothing
    with pytest.raises(m.InputError, match="collection instances hold nothing that renders"):
        m.capture(bpy.context, instance, views=4, frames=2, resolution=16)


def test_capture_from_the_users_cameras_and_errors(blender):
    bpy = blender
    scene = bpy.context.scene
    cube = moving_cube(bpy)
    from mathutils import Matrix

    m = mc()  # its InputError is the extension's vendored copy of shared.errors.InputError
    user = []
    for i, c2w in enumerate(m.ring_c2w(2, (0, 0, 0), 5.0, elevation_deg=30.0)):
        data = bpy.data.cameras.new(f"cam {i}")
        data.lens = 35.0
        cam = bpy.data.objects.new(f"cam {i}", data)
        scene.collection.objects.link(cam)
        cam.matrix_world = Matrix(c2w.tolist())
        user.append(cam)
    out = m.capture(bpy.context, None, views=99, frames=2, resolution=16, cameras=user)
    assert out.images.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(out.c2w[0], m.ring_c2w(2, (0, 0, 0), 5.0, elevation_deg=30.0)[0], atol=1e-5)
    assert out.fov_x == pytest.approx(2 * math.atan(0.5 * 36.0 / 35.0))
    assert (out.alphas > 0.5).any(axis=(1, 2)).all()

    user[1].data.lens = 50.0
    with pytest.raises(m.InputError, match="different focal lengths"):
        m.capture(bpy.context, cube, 2, 2, 16, cameras=user)
    with pytest.raises(m.InputError, match="at least 2 views"):
        m.capture(bpy.context, cube, 1, 2, 16)
    with pytest.raises(m.InputError, match="is a camera object"):
        m.capture(bpy.context, user[0], 4, 2, 16)
    # a character's rig active: the meshes it moves are captured (the cube, parented to it), alone
    rig = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    scene.collection.objects.link(rig)
    cube.parent = rig
    other = bpy.data.objects.new("Floor", bpy.data.meshes.new("Floor"))
    scene.collection.objects.link(other)
    assert m._targets(scene, [rig]) == [cube]
    cube.parent = None
    with pytest.raises(m.InputError, match="Armature 'Rig' moves no visible mesh to capture"):
        m.capture(bpy.context, rig, 4, 2, 16)
    cube.hide_render = True
    with pytest.raises(m.InputError, match="disabled in renders"):
        m.capture(bpy.context, cube, 4, 2, 16)


def srgb(rgb):
    return [12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055 for c in rgb]


def test_production_scene_settings_do_not_change_what_is_captured(blender):
    """Habits of a studio scene that once emptied or tinted the capture: a character's rig active (its meshes
    were hidden with everything else), a second view layer that excludes the character (the PNG came from the
    first layer), and an output colour override or colour curve (the colours were the look's, not the
    material's). Each is captured as the user sees the object, and the settings are theirs again after."""
    bpy = blender
    scene = bpy.context.scene
    cube = moving_cube(bpy)
    characters = bpy.data.collections.new("Characters")
    scene.collection.children.link(characters)
    for c in list(cube.users_collection):
        c.objects.unlink(cube)
    characters.objects.link(cube)
    rig = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    scene.collection.objects.link(rig)
    cube.parent = rig
    background = scene.view_layers[0]
    background.name = "BG"
    foreground = scene.view_layers.new("FG")
    background.layer_collection.children["Characters"].exclude = True
    bpy.context.window.view_layer = foreground  # the animator works in FG
    image = scene.render.image_settings
    image.color_management = "OVERRIDE"
    image.view_settings.view_transform, image.view_settings.look = "AgX", "AgX - Punchy"
    scene.view_settings.use_curve_mapping = True
    scene.view_settings.curve_mapping.curves[3].points[0].location = (0.0, 0.5)
    scene.view_settings.curve_mapping.update()

    out = mc().capture(bpy.context, rig, views=4, frames=1, resolution=RES)

    covered = out.alphas > 0.99
    assert covered.any(axis=(1, 2)).all()
    np.testing.assert_allclose(out.images[covered].mean(axis=0), srgb((0.8, 0.2, 0.1)), atol=0.02)
    assert background.use and foreground.use and image.color_management == "OVERRIDE"
    assert scene.view_settings.use_curve_mapping and not cube.hide_render


def test_an_object_that_renders_nothing_is_refused_before_anything_is_sent(blender):
    bpy = blender
    scene = bpy.context.scene
    cube = moving_cube(bpy)
    m = mc()
    props = bpy.data.collections.new("Props")
    scene.collection.children.link(props)
    for c in list(cube.users_collection):
        c.objects.unlink(cube)
    props.objects.link(cube)
    props.hide_render = True
    with pytest.raises(m.InputError, match="in collection 'Props', which is disabled in renders"):
        m.capture(bpy.context, cube, 4, 2, 16)
    props.hide_render = False
    bpy.context.view_layer.layer_collection.children["Props"].exclude = True  # not in this view layer
    with pytest.raises(m.InputError, match="'Cube' did not appear in any captured view"):
        m.capture(bpy.context, cube, 4, 2, 16)
    assert not any(o.name.startswith("Tessera capture") for o in bpy.data.objects)


def test_a_capture_stopped_midway_leaves_the_scene_as_it_was(blender):
    bpy = blender
    scene = bpy.context.scene
    cube = moving_cube(bpy)
    scene.frame_set(7)
    engine, objects, collections = scene.render.engine, len(bpy.data.objects), len(bpy.data.collections)

    def stop_after_two(done, total):
        assert total == 6
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mc().capture(bpy.context, cube, views=3, frames=2, resolution=16, progress=stop_after_two)
    assert scene.render.engine == engine and scene.frame_current == 7 and scene.camera is None
    assert len(bpy.data.objects) == objects and len(bpy.data.collections) == collections
    assert not cube.hide_render and scene.render.film_transparent is False


def test_render_views_writes_a_dnerf_folder_whose_cameras_line_up_with_the_sequence(blender, tmp_path):
    import importlib.util

    from blender_rig import DATA, REPO

    from backend.gaussians4d.data import load_transforms

    bpy = blender
    spec = importlib.util.spec_from_file_location("render_views", REPO / "benchmarks" / "render_views.py")
    rv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rv)
    objects, scenes = len(bpy.data.objects), len(bpy.data.scenes)
    cat = DATA / "mesh-sequences" / "cat-poses.npz"
    out = rv.render_sequence_views(cat, tmp_path, views=3, frames=2, size=64, test_views=1)
    assert (len(bpy.data.objects), len(bpy.data.scenes)) == (objects, scenes)  # the scratch scene is gone

    train, test = load_transforms(out), load_transforms(out, "test")
    assert train.images.shape == (6, 64, 64, 3) and test.images.shape == (2, 64, 64, 3)
    assert train.view_count() == 3 and test.view_count() == 1
    with np.load(cat) as data:
        frames = data["frames"][rv.frame_indices(len(data["frames"]), 2)]
    # The npz's own (Y-up) vertices project into each silhouette (a few on thin parts fall on soft edges).
    for video in (train, test):
        for e in range(len(video)):
            xy, _ = video.cameras.subset(e).project(frames[int(round(video.times[e]))])
            col, row = np.clip(np.floor(xy[0]).astype(int), 0, 63).T
            assert (video.alphas[e][row, col] > 0.1).mean() > 0.97


def test_render_views_studio_lighting_shades_the_same_silhouettes(blender, tmp_path):
    """--lighting studio (the benchmark's lit capture): the same masks, other colours, and the add-on's own
    capture settings untouched afterwards."""
    import importlib.util

    from blender_rig import DATA, REPO

    from backend.gaussians4d.data import load_transforms

    spec = importlib.util.spec_from_file_location("render_views", REPO / "benchmarks" / "render_views.py")
    rv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rv)
    capture = rv.addon_module("collectors.multiview_capture")
    settings = capture._render_settings
    cat = DATA / "mesh-sequences" / "cat-poses.npz"
    flat = load_transforms(rv.render_sequence_views(cat, tmp_path / "flat", views=2, frames=2, size=32, test_views=0))
    lit = rv.render_sequence_views(cat, tmp_path / "lit", views=2, frames=2, size=32, test_views=0, lighting="studio")
    lit = load_transforms(lit)
    assert capture._render_settings is settings
    assert np.abs(flat.alphas - lit.alphas).max() < 0.02
    inside = flat.alphas > 0.99
    assert np.abs(flat.images - lit.images)[inside].mean() > 0.05  # shaded
    with pytest.raises(ValueError, match="lighting"):
        rv.render_sequence_views(cat, tmp_path / "x", views=2, frames=2, size=32, lighting="sun")
