"""A loaded mesh sequence renders with Cycles after reopen, with the backend switched off."""

import numpy as np
from blender_checks import connect, evaluated_positions, load_and_wait
from blender_rig import HORSE


def test_cycles_renders_a_frame_of_the_sequence_after_reopen_without_backend(blender, backend, tmp_path):
    bpy = blender
    blend = tmp_path / "render.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    connect(bpy, backend)
    load_and_wait(bpy, HORSE)
    bpy.ops.wm.save_mainfile()
    bpy.ops.tessera.disconnect()
    backend.stop()
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
        scene = bpy.context.scene
        ob = bpy.data.objects["horse-gallop"]
        frame = scene.frame_start + 20
        points = evaluated_positions(bpy, ob, frame)
        lo, hi = points.min(0), points.max(0)
        centre, size = (lo + hi) / 2, float((hi - lo).max())

        cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        cam.data.type, cam.data.ortho_scale = "ORTHO", size * 1.3
        cam.location = (centre[0], centre[1] - 3 * size, centre[2])
        cam.rotation_euler = (np.pi / 2, 0, 0)  # looking along +Y
        scene.collection.objects.link(cam)
        scene.camera = cam
        sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
        sun.rotation_euler = (0.6, 0.2, 0.3)
        scene.collection.objects.link(sun)

        scene.render.engine = "CYCLES"
        scene.cycles.device, scene.cycles.samples = "CPU", 4
        scene.render.resolution_x = scene.render.resolution_y = 48
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True
        scene.render.filepath = str(tmp_path / "frame.png")
        scene.frame_set(frame)
        assert bpy.ops.render.render(write_still=True) == {"FINISHED"}

        image = bpy.data.images.load(str(tmp_path / "frame.png"))
        pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
        alpha = pixels.reshape(-1, 4)[:, 3]
        covered = (alpha > 0.5).mean()
        assert 0.02 < covered < 0.95, covered  # the horse is there, and not everywhere
    finally:
        backend.start()
