"""Blender-side state: `window_manager.tessera` (this session: plugin picker and its
parameter values) and `scene.tessera` (settings saved with the file)."""

from __future__ import annotations

import bpy

from .session import SESSION

FOLLOW_MESH_HELP = (  # Capture to 4D's Follow With Mesh, here and on the operator
    "A mesh where the captured object is at the first frame (e.g. its clean retopology, or the object itself): it "
    "comes back moving with the capture, keeping its own vertices, faces, materials and UVs. Empty: a mesh is "
    "extracted from the Gaussians"
)
RING_FOLLOWS_HELP = (  # Capture to 4D's Ring Follows Object, here and on the operator
    "Move the ring with the object, centred on it at every captured frame, so an object that travels (a walk "
    "across the scene) stays large in the views. Off: one ring frames its whole path"
)

# Blender keeps only pointers to enum item strings: keep every list alive here.
_ENUM_CACHE: dict[str, list[tuple[str, str, str]]] = {}


def _plugin_items(self, context):
    client = SESSION.client
    items = [(name, name, spec.summary) for name, spec in sorted((client.plugins if client else {}).items())]
    _ENUM_CACHE["__plugins__"] = items or [("", "(no backend)", "Connect to a backend to list its plugins")]
    return _ENUM_CACHE["__plugins__"]


def _choice_items(self, context):
    key = f"{self.plugin}:{self.name}"
    if key not in _ENUM_CACHE:
        client = SESSION.client
        spec = client.plugins.get(self.plugin) if client else None
        choices = spec.param(self.name).choices if spec else []
        _ENUM_CACHE[key] = [(c, c, "") for c in choices] or [("", "(none)", "")]
    return _ENUM_CACHE[key]


class TesseraParam(bpy.types.PropertyGroup):
    """One plugin parameter, holding a value of the type its schema declares."""

    plugin: bpy.props.StringProperty()
    kind: bpy.props.StringProperty()  # int, float, bool, str, enum, path
    label: bpy.props.StringProperty()
    help: bpy.props.StringProperty()
    int_value: bpy.props.IntProperty(name="Value")
    float_value: bpy.props.FloatProperty(name="Value")
    bool_value: bpy.props.BoolProperty(name="Value")
    string_value: bpy.props.StringProperty(name="Value")
    enum_value: bpy.props.EnumProperty(name="Value", items=_choice_items)

    @property
    def value_property(self) -> str:
        return {"int": "int_value", "float": "float_value", "bool": "bool_value", "enum": "enum_value"}.get(
            self.kind, "string_value"
        )

    def value(self):
        return getattr(self, self.value_property)


def fill_params(runtime: TesseraRuntime, plugin: str) -> None:
    """Rebuild the parameter list from the plugin's schema, values at their defaults."""
    runtime.params.clear()
    client = SESSION.client
    spec = client.plugins.get(plugin) if client else None
    if spec is None:
        return
    for p in spec.params:
        item = runtime.params.add()
        item.name, item.plugin, item.kind, item.label, item.help = p.name, plugin, p.type, p.label, p.help
        if p.default is None:
            continue
        if p.type == "int":
            item.int_value = int(p.default)
        elif p.type == "float":
            item.float_value = float(p.default)
        elif p.type == "bool":
            item.bool_value = bool(p.default)
        elif p.type == "enum":
            item.enum_value = str(p.default)
        else:
            item.string_value = str(p.default)


def _plugin_changed(self, context):
    fill_params(self, self.plugin)


class TesseraRuntime(bpy.types.PropertyGroup):
    plugin: bpy.props.EnumProperty(name="Plugin", items=_plugin_items, update=_plugin_changed)
    params: bpy.props.CollectionProperty(type=TesseraParam)


class TesseraSceneSettings(bpy.types.PropertyGroup):
    mesh_path: bpy.props.StringProperty(
        name="Mesh Sequence", description="npz, OBJ folder or PC2 on the backend's disk", subtype="FILE_PATH"
    )
    y_up: bpy.props.BoolProperty(name="Y Up", description="The source is Y-up: rotate it to Blender's Z-up")
    gaussian_folder: bpy.props.StringProperty(
        name="Splat Folder", description="Folder of 3DGS PLY files on the backend's disk", subtype="DIR_PATH"
    )
    max_gaussians: bpy.props.IntProperty(name="Max Gaussians", description="0 keeps all", min=0)
    rig_bones: bpy.props.IntProperty(name="Bones", default=0, min=0, description="0 picks the count automatically")
    rig_mode: bpy.props.EnumProperty(
        name="Mode",
        items=[
            ("SKELETON", "Skeleton", "A bone hierarchy with joints, for animators"),
            ("FREE", "Free", "Independent rigid bones: lowest error, no hierarchy"),
        ],
        default="SKELETON",
    )
    rig_influences: bpy.props.IntProperty(name="Influences", default=4, min=1, max=8, description="Bones per vertex")
    rig_target: bpy.props.EnumProperty(
        name="Target",
        items=[
            ("COPY", "Copy", "Rig a copy of the mesh; the original keeps its animation"),
            ("REPLACE", "Replace", "Rig the mesh itself; its old animation is muted, not deleted"),
        ],
        default="COPY",
    )
    motion_model: bpy.props.StringProperty(
        name="Motion Model",
        description="Model folder on the backend's disk (set by the last training)",
        subtype="DIR_PATH",
    )
    motion_text: bpy.props.StringProperty(name="Text", description="What to generate, e.g. 'walk, tired'")
    motion_frames: bpy.props.IntProperty(name="Frames", default=120, min=2, description="Length of a generated take")
    motion_seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Another seed, another take")
    motion_train_data: bpy.props.StringProperty(
        name="BVH Folder", description="On the backend's disk; empty: this file's Actions", subtype="DIR_PATH"
    )
    motion_train_out: bpy.props.StringProperty(
        name="Model Folder", description="Where training writes the model", subtype="DIR_PATH"
    )
    motion_train_steps: bpy.props.IntProperty(name="Steps", default=2000, min=1, description="Training steps")
    capture_views: bpy.props.IntProperty(
        name="Views", default=8, min=2, max=64, description="Cameras in the ring around the object"
    )
    capture_frames: bpy.props.IntProperty(
        name="Frames", default=16, min=1, max=256, description="Times captured, evenly over the frame range"
    )
    capture_resolution: bpy.props.IntProperty(
        name="Resolution", default=128, min=16, max=2048, description="Width and height of each view, pixels"
    )
    capture_preset: bpy.props.EnumProperty(
        name="Preset",
        items=[
            ("FAST", "Fast", "Minutes on a CPU (views at most 128 px)"),
            ("QUALITY", "Quality", "For a GPU backend (views up to 512 px, more steps)"),
        ],
        default="FAST",
    )
    capture_iterations: bpy.props.IntProperty(
        name="Iterations", default=0, min=0, description="Optimisation steps; 0 uses the preset's"
    )
    capture_use_selected_cameras: bpy.props.BoolProperty(
        name="Selected Cameras", description="Capture from the selected cameras instead of a ring"
    )
    capture_ring_follows: bpy.props.BoolProperty(
        name="Ring Follows Object",
        description=RING_FOLLOWS_HELP,
    )
    capture_follow_mesh: bpy.props.PointerProperty(
        name="Follow With Mesh",
        type=bpy.types.Object,
        poll=lambda _settings, ob: ob.type == "MESH",
        description=FOLLOW_MESH_HELP,
    )
    gen_checkpoint: bpy.props.StringProperty(
        name="Model Folder",
        description="Multi-view video model folder on the backend's disk; empty: the backend's default",
        subtype="DIR_PATH",
    )
    gen_prompt: bpy.props.StringProperty(name="Prompt", description="What the motion should be")
    gen_frames: bpy.props.IntProperty(name="Frames", default=16, min=2, max=256, description="Frames to generate")
    gen_seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Another seed, another motion")
    gen_steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=500, description="Sampling steps")
    gen_guidance: bpy.props.FloatProperty(name="Guidance", default=7.5, min=1.0, max=30.0, description="CFG scale")
    gen_sds_steps: bpy.props.IntProperty(
        name="SDS Steps", default=0, min=0, max=5000, description="4D-SDS refinement steps after the reconstruction"
    )
    gen_resolution: bpy.props.IntProperty(
        name="Render Size", default=256, min=32, max=1024, description="Size of the object's condition renders"
    )
    video_clip: bpy.props.StringProperty(name="Movie Clip", description="The video to turn into 4D")
    video_image: bpy.props.StringProperty(name="Image", description="Or an image sequence / movie Image")


CLASSES = (TesseraParam, TesseraRuntime, TesseraSceneSettings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.tessera = bpy.props.PointerProperty(type=TesseraRuntime)
    bpy.types.Scene.tessera = bpy.props.PointerProperty(type=TesseraSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.tessera
    del bpy.types.WindowManager.tessera
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    _ENUM_CACHE.clear()
