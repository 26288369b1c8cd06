"""The sidebar panels' draw code, run against a recording layout (bpy as a module has no UI
regions). The recorder checks what Blender would: icons, properties and operator
properties exist; labels are what the user reads."""

from types import SimpleNamespace

import bpy
from blender_checks import connect
from blender_rig import addon

ICONS = {i.identifier for i in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items}


class OperatorProps:
    def __init__(self, idname):
        module, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()
        object.__setattr__(self, "_names", {p.identifier for p in rna.properties})

    def __setattr__(self, key, value):
        assert key in self._names, f"operator has no property {key!r}"


class Recorder:
    def __init__(self, lines):
        self.lines = lines

    def _child(self, *args, **kwargs):
        return Recorder(self.lines)

    row = column = box = split = _child

    def separator(self, **kwargs):
        pass

    def label(self, text="", icon="NONE"):
        assert icon in ICONS, icon
        self.lines.append(text)

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, name
        self.lines.append(f"[{name}]")

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties, name
        assert hasattr(search_data, search_name), search_name
        self.lines.append(f"[{name} in {search_name}]")

    def template_icon(self, icon_value=0, scale=1.0):
        assert isinstance(icon_value, int)
        self.lines.append(f"icon {icon_value}")

    def operator(self, idname, text="", icon="NONE"):
        assert icon in ICONS, icon
        self.lines.append(f"<{idname}>")
        return OperatorProps(idname)

    def progress(self, factor=0.0, text="", type="BAR"):
        assert 0.0 <= factor <= 1.0
        self.lines.append(f"progress {text}")


def draw_all(context) -> list[str]:
    lines = []
    for cls in addon().panels.CLASSES:
        cls.draw(SimpleNamespace(layout=Recorder(lines)), context)
    return lines


def test_panels_show_state_jobs_plugins_and_lost_backend(blender, backend):
    context = blender.context
    text = "\n".join(draw_all(context))
    assert "Disconnected" in text and "<tessera.connect>" in text
    assert "Captures the whole scene" in text  # nothing active or selected
    blender.ops.mesh.primitive_cube_add()
    blender.ops.mesh.primitive_uv_sphere_add()  # active; the cube deselected
    context.active_object.select_set(False)  # active, not selected: still the object captured
    context.view_layer.objects["Cube"].select_set(True)
    assert "Captures 'Sphere' and 1 more" in "\n".join(draw_all(context))

    connect(blender, backend)
    context.window_manager.tessera.plugin = "sequence.load_mesh"
    assert blender.ops.tessera.load_mesh_sequence(filepath="/nowhere.npz") == {"FINISHED"}
    text = "\n".join(draw_all(context))
    assert "Connected" in text and "Device: cpu" in text
    assert "progress" in text and "<tessera.cancel_job>" in text and "<tessera.release_gpu>" in text
    assert "[string_value]" in text and "[int_value]" in text and "<tessera.run_plugin>" in text
    assert "<tessera.animate_object>" in text and "<tessera.video_to_4d>" in text  # the Generate 4D panel
    assert "[video_clip in movieclips]" in text and "[gen_prompt]" in text
    job = next(iter(addon().session.SESSION.client.jobs.values()))
    job.warnings = ["Dense rest mesh: slow on the CPU."]  # as Progress.warning leaves it (tests/.../test_client.py)
    assert "Dense rest mesh: slow on the CPU." in draw_all(context)

    backend.kill9()
    try:
        client = addon().session.SESSION.client
        while client.state.value != "lost":
            addon().pump.pump(None)
        text = "\n".join(draw_all(context))
        assert "Backend lost" in text and "<tessera.connect>" in text  # the Reconnect button
    finally:
        backend.start()
