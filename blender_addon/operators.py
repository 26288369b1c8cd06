"""Operators: the add-on's public interface (their idnames are what scripts call)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import bpy
import numpy as np

from . import preferences
from .appliers.motion import MotionOptions
from .appliers.rig import RigOptions
from .client import BackendClient, ClientError, ConnectionState
from .collectors import armature_motion, object_kind
from .collectors.mesh_motion import MotionError, evaluated_motion, without_final_hold
from .local_backend import LocalBackend, LocalBackendError
from .properties import FOLLOW_MESH_HELP, RING_FOLLOWS_HELP
from .pump import pump
from .session import SESSION

HANDSHAKE_TIMEOUT_LOCAL = 60.0  # a local backend needs time to import before it answers


def _client_name() -> str:
    return f"blender {bpy.app.version_string} / tessera4d add-on"


def _need_client() -> BackendClient:
    client = SESSION.client
    if client is None or client.state != ConnectionState.CONNECTED:
        state = client.state_message if client else "not connected"
        raise ClientError(f"No backend connection ({state}). Run Connect in the Tessera tab first.")
    return client


def has_ui(context) -> bool:
    """True where modal timers run (not --background, not bpy as a module, which still has a window)."""
    return not bpy.app.background and getattr(context, "window", None) is not None


def _start_pump(context) -> None:
    if has_ui(context) and not SESSION.pump_running:
        bpy.ops.tessera.pump("INVOKE_DEFAULT")


class TESSERA_OT_connect(bpy.types.Operator):
    """Connect to the Tessera 4D backend (empty address: the preferences' backend)"""

    bl_idname = "tessera.connect"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    address: bpy.props.StringProperty(
        name="Address", description="Empty: the address or local backend set in the preferences"
    )
    timeout: bpy.props.FloatProperty(
        name="Timeout", default=30.0, min=0.1, description="Seconds to wait for the handshake when there is no window"
    )

    def execute(self, context):
        try:
            client = self._make_client(context)
        except (ClientError, LocalBackendError, PermissionError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not has_ui(context):
            # Scripts and tests: no timers, so finish the handshake here.
            # The client itself gives up after its handshake timeout; the margin only guards that.
            deadline = time.monotonic() + client.handshake_timeout + 1.0
            while client.state == ConnectionState.CONNECTING and time.monotonic() < deadline:
                pump(context)
                time.sleep(0.005)
            if client.state != ConnectionState.CONNECTED:
                self.report({"ERROR"}, f"Could not connect to {client.address}: {client.state_message}")
                return {"CANCELLED"}
            self.report({"INFO"}, client.state_message)
        _start_pump(context)
        return {"FINISHED"}

    def _make_client(self, context) -> BackendClient:
        prefs = preferences.get(context)
        address = self.address.strip()
        old = SESSION.client
        if not address and prefs.mode == "LOCAL":
            local = SESSION.local
            if local is None or local.python != prefs.python_executable:
                if local is not None:
                    local.stop()
                local = SESSION.local = LocalBackend(
                    prefs.python_executable, preferences.jobs_folder(prefs), preferences.log_path()
                )
            if not local.running:
                local.start()  # same address and jobs folder as before: unfinished jobs resume
            address, handshake = SESSION.local.address, HANDSHAKE_TIMEOUT_LOCAL
        else:
            address = address or prefs.address
            preferences.check_online_access(address)
            handshake = 2.0 if has_ui(context) else self.timeout
        keys = bpy.path.abspath(prefs.keys_folder) if prefs.keys_folder else None
        SESSION.pending = None  # a half-written chunk is fetched again and finished without doubling
        if old is not None and old.address == address:
            # Same backend: same session and job table, so unfinished jobs resume from where they were.
            old.keys_folder = Path(keys) if keys else None
            old.handshake_timeout = handshake
            old.reconnect()
            return old
        if old is not None:
            old.close()
        SESSION.targets.clear()
        SESSION.client = BackendClient(
            address, client_name=_client_name(), keys_folder=keys, handshake_timeout=handshake
        )
        SESSION.client.connect()
        return SESSION.client


class TESSERA_OT_disconnect(bpy.types.Operator):
    """Close the connection (and stop a local backend this add-on started)"""

    bl_idname = "tessera.disconnect"
    bl_label = "Disconnect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        SESSION.shut_down()
        return {"FINISHED"}


def _refuse_relative_paths(client, plugin: str, params: dict) -> None:
    """ClientError for a path parameter that is still relative once '//' is resolved (an unsaved .blend has no
    folder for '//'): the backend would read or write it wherever it happens to run."""
    spec = client.plugins.get(plugin)
    if spec is None:
        return
    declared = {p.name: p.type for p in spec.params}
    for name, value in params.items():
        if declared.get(name) == "path" and isinstance(value, str) and value and not os.path.isabs(value):
            raise ClientError(
                f"The path '{value}' ({name}) is relative: the backend would resolve it wherever it runs. Save the "
                ".blend first for '//' paths (they are relative to it), or give an absolute path."
            )


BLEND_RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"}  # '//' paths in operator properties, without Blender's warning


class _Submitting:
    def submit(self, context, plugin: str, params: dict, options: dict | None = None, arrays: dict | None = None):
        options = dict(options or {})
        # Results go where the user was working when they asked, whatever is shown when they arrive: this scene,
        # from its first frame as it is now, in the active collection.
        scene = context.scene
        options.setdefault("scene", scene.name)
        options.setdefault("scene_uid", scene.session_uid)
        options.setdefault("frame_start", scene.frame_start)
        collection = getattr(context, "collection", None)
        if collection is not None and collection != context.scene.collection:
            options.setdefault("collection", [collection.name, collection.session_uid])
        try:
            client = _need_client()
            _refuse_relative_paths(client, plugin, params)
            job = client.submit(plugin, params, arrays=arrays, options=options)
        except ClientError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Job {job.id} ({plugin}) submitted.")
        _start_pump(context)
        return {"FINISHED"}


class TESSERA_OT_load_mesh_sequence(_Submitting, bpy.types.Operator):
    """Stream a mesh sequence (npz, OBJ folder, PC2) from the backend's disk into a cached mesh object"""

    bl_idname = "tessera.load_mesh_sequence"
    bl_label = "Load Mesh Sequence"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(
        name="File", subtype="FILE_PATH", options=BLEND_RELATIVE, description="Mesh sequence on the backend's disk"
    )
    y_up: bpy.props.BoolProperty(name="Y Up", description="The source is Y-up: rotate it to Blender's Z-up")

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "Choose a mesh sequence file (npz, OBJ folder or PC2).")
            return {"CANCELLED"}
        path = bpy.path.abspath(self.filepath)
        return self.submit(context, "sequence.load_mesh", {"path": path}, {"y_up": self.y_up})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class TESSERA_OT_load_gaussian_sequence(_Submitting, bpy.types.Operator):
    """Stream a folder of 3DGS PLY files (one per frame) from the backend's disk as a splat sequence"""

    bl_idname = "tessera.load_gaussian_sequence"
    bl_label = "Load Gaussian Sequence"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(name="Folder", subtype="DIR_PATH", options=BLEND_RELATIVE)
    max_gaussians: bpy.props.IntProperty(name="Max Gaussians", min=0, description="0 keeps all")

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder of 3DGS .ply files.")
            return {"CANCELLED"}
        params = {"directory": bpy.path.abspath(self.directory).rstrip("/\\") or "/"}
        if self.max_gaussians:
            params["max_gaussians"] = self.max_gaussians
        return self.submit(context, "sequence.load_gaussians", params)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class TESSERA_OT_run_plugin(_Submitting, bpy.types.Operator):
    """Run a backend plugin with the parameter values shown in the Tessera panel"""

    bl_idname = "tessera.run_plugin"
    bl_label = "Run"
    bl_options = {"REGISTER", "UNDO"}

    plugin: bpy.props.StringProperty(name="Plugin", description="Empty: the plugin picked in the panel")

    def execute(self, context):
        runtime = context.window_manager.tessera
        plugin = self.plugin or runtime.plugin
        if not plugin:
            self.report({"ERROR"}, "Pick a plugin first (connect to a backend to list them).")
            return {"CANCELLED"}
        params = {}
        for item in runtime.params:
            if item.plugin != plugin:
                continue  # values held for another plugin: the backend fills in defaults
            value = item.value()
            if item.kind == "path" and value:
                value = bpy.path.abspath(value)
            if item.kind in ("str", "path") and value == "":
                continue
            params[item.name] = value
        return self.submit(context, plugin, params)


def _active_mesh(cls, context) -> bool:
    """Poll of the operators that work on the active mesh; the greyed-out button's tooltip says why."""
    ob = context.active_object
    if ob is None:
        cls.poll_message_set("Select the mesh to work on (no object is active).")
        return False
    if ob.type != "MESH":
        cls.poll_message_set(f"'{ob.name}' is {object_kind(ob)}: make the mesh the active object.")
        return False
    return True


class TESSERA_OT_rig_from_motion(_Submitting, bpy.types.Operator):
    """Rig the active mesh from its animation over the scene's frame range: an armature with bones,
    skin weights and a keyed action that moves the mesh the same way"""

    bl_idname = "tessera.rig_from_motion"
    bl_label = "Rig from Motion"
    bl_options = {"REGISTER", "UNDO"}

    bones: bpy.props.IntProperty(name="Bones", default=0, min=0, description="0 picks the count from the tolerance")
    mode: bpy.props.EnumProperty(
        name="Mode",
        items=[
            ("SKELETON", "Skeleton", "A bone hierarchy with joints and constant bone lengths, for animators"),
            ("FREE", "Free", "Independent rigid bones (the Dem Bones setting): lowest error, no hierarchy"),
        ],
        default="SKELETON",
    )
    max_influences: bpy.props.IntProperty(name="Influences", default=4, min=1, max=8, description="Bones per vertex")
    iterations: bpy.props.IntProperty(name="Iterations", default=30, min=1, description="Solver iterations")
    tolerance: bpy.props.FloatProperty(
        name="Tolerance",
        default=0.0,
        min=0.0,
        description="E_RMS target when Bones is 0; 0 uses the backend's default",
    )
    target: bpy.props.EnumProperty(
        name="Target",
        items=[
            ("COPY", "Copy", "Put the rig on a copy of the mesh; the original keeps its animation"),
            ("REPLACE", "Replace", "Put the rig on the mesh itself; its old animation is muted, not deleted"),
        ],
        default="COPY",
    )

    @classmethod
    def poll(cls, context):
        return _active_mesh(cls, context)

    def execute(self, context):
        ob = context.active_object
        scene = context.scene
        try:
            if ob.mode == "EDIT":
                raise MotionError(
                    f"'{ob.name}' is in Edit Mode: switch to Object Mode (Tab) so the rig sees the mesh as it "
                    "animates, then Rig from Motion."
                )
            _need_client()
            motion = evaluated_motion(context, ob, scene.frame_start, scene.frame_end)
            if motion.object_moves and self.target == "REPLACE" and (ob.parent is not None or ob.constraints):
                raise MotionError(
                    f"'{ob.name}' moves with its parent or constraints, which Replace cannot switch off: "
                    "rig into a copy (Target: Copy)."
                )
        except (ClientError, MotionError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        rest, frames, faces = motion.rest, without_final_hold(motion.frames), motion.faces
        if len(frames) < len(motion.frames):
            self.report(
                {"INFO"},
                f"Frames {scene.frame_start + len(frames)}–{scene.frame_end} only hold the last pose: rigged "
                f"{scene.frame_start}–{scene.frame_start + len(frames) - 1} (the rig holds its last pose after).",
            )
        params = {
            "bones": self.bones,
            "mode": self.mode.lower(),
            "max_influences": self.max_influences,
            "iterations": self.iterations,
            "name": f"{ob.name} Rig",
        }
        if self.tolerance > 0:
            params["tolerance"] = self.tolerance
        options = RigOptions(
            source=ob.name,
            frame_start=scene.frame_start,
            target=self.target,
            object_matrix=tuple(motion.object_matrix.ravel().tolist()),
            object_moves=motion.object_moves,
            source_uid=ob.session_uid,
        ).as_job_options()
        arrays = {"rest": rest, "frames": frames}
        if len(faces):
            arrays["faces"] = faces
        return self.submit(context, "rig.from_motion", params, options, arrays)


# -- 4D Gaussians: capture the animated object from many views and fit it on the backend -----------


class TESSERA_OT_capture_to_4d(_Submitting, bpy.types.Operator):
    """Render the active and selected objects (with their children; none: the scene) from a ring of cameras,
    or the selected cameras, over the scene's frame range, and fit 4D Gaussians to them on the backend: splat
    frames and an animated mesh stream into the timeline"""

    bl_idname = "tessera.capture_to_4d"
    bl_label = "Capture to 4D"
    bl_options = {"REGISTER", "UNDO"}

    views: bpy.props.IntProperty(name="Views", default=8, min=2, max=64, description="Cameras in the ring")
    frames: bpy.props.IntProperty(
        name="Frames", default=16, min=1, max=256, description="Times captured, evenly over the frame range"
    )
    resolution: bpy.props.IntProperty(
        name="Resolution", default=128, min=16, max=2048, description="Width and height of each view, pixels"
    )
    preset: bpy.props.EnumProperty(
        name="Preset",
        items=[
            ("FAST", "Fast", "Minutes on a CPU (views at most 128 px)"),
            ("QUALITY", "Quality", "For a GPU backend (views up to 512 px, more steps)"),
        ],
        default="FAST",
    )
    iterations: bpy.props.IntProperty(
        name="Iterations", default=0, min=0, description="Optimisation steps; 0 uses the preset's"
    )
    use_selected_cameras: bpy.props.BoolProperty(
        name="Selected Cameras", description="Capture from the selected cameras instead of a ring"
    )
    ring_follows: bpy.props.BoolProperty(name="Ring Follows Object", description=RING_FOLLOWS_HELP)
    follow_mesh: bpy.props.StringProperty(
        name="Follow With Mesh",
        description=FOLLOW_MESH_HELP,
    )

    def _follow_surface(self, context, captured):
        """The follow mesh's surface (world space, first frame), or None without one; ClientError/InputError."""
        from .collectors.static_object import world_surface

        if not self.follow_mesh:
            return None
        follow = bpy.data.objects.get(self.follow_mesh)
        if follow is None:
            raise ClientError(f"No object '{self.follow_mesh}' to follow the capture with: pick another, or clear it.")
        if follow.type != "MESH":
            raise ClientError(f"'{follow.name}' is {object_kind(follow)}: Follow With Mesh takes a mesh.")
        if not captured and not follow.hide_render:
            raise ClientError(
                f"Capturing the whole scene would render '{follow.name}' too: make the object to capture active, "
                f"or switch off '{follow.name}' in renders."
            )
        return world_surface(context, follow)

    def execute(self, context):
        from .collectors.multiview_capture import capture, capture_subjects
        from .shared.errors import TesseraError

        scene = context.scene
        subjects = capture_subjects(context, self.follow_mesh)  # not the cameras clicked to capture from
        try:
            _need_client()
            surface = self._follow_surface(context, subjects)
            cameras = None
            if self.use_selected_cameras:
                cameras = [c for c in context.selected_objects if c.type == "CAMERA"]
                if len(cameras) < 2:
                    raise ClientError(
                        f"Select at least 2 cameras to capture from ({len(cameras)} selected), "
                        "or switch off Selected Cameras to use a ring."
                    )
            wm = context.window_manager
            total = len(cameras) * self.frames if cameras else self.views * self.frames
            wm.progress_begin(0, total)
            try:
                views = capture(
                    context,
                    subjects,
                    self.views,
                    self.frames,
                    self.resolution,
                    cameras,
                    follow=self.ring_follows,
                    progress=lambda done, _total: wm.progress_update(done),
                )
            finally:
                wm.progress_end()
        except (ClientError, TesseraError) as exc:
            self.report({"ERROR"}, getattr(exc, "message", None) or str(exc))
            return {"CANCELLED"}
        if views.note:
            self.report({"WARNING"}, views.note)
        name = f"{subjects[0].name if subjects else scene.name} 4D"
        params = {
            "fov_x": float(views.fov_x),
            "preset": self.preset.lower(),
            "iterations": self.iterations,
            "frames_out": min(max(scene.frame_end - scene.frame_start + 1, 1), 10000),
            "name": name,
        }
        arrays = {"images": views.images, "alphas": views.alphas, "c2w": views.c2w, "times": views.times}
        options = {"capture_source": name}
        if surface is not None:  # mesh path 1: this mesh follows the motion, dressed like its object
            arrays |= {"rest_vertices": surface.vertices, "rest_faces": surface.faces}
            options |= {"dress_from": self.follow_mesh, "dress_materials": surface.materials, "dress_uvs": surface.uvs}
        return self.submit(context, "gaussians4d.fit", params, options, arrays)


# -- generated motion: a static object or a video → 4D with the multi-view video model --------------

MODEL_VIEWS = 4  # the model's camera ring (Animate3D's): 4 views at 15° elevation, fovy 40°, the first on +X
MODEL_ELEVATION = 15.0
MODEL_FOV = 40.0
MODEL_AZIMUTH_START = 0.0  # the capture ring's azimuth 0 is on +X, as Animate3D's


class _GenerateSettings:
    """Parameters both generation operators share (the Generate 4D panel fills them from the scene)."""

    prompt: bpy.props.StringProperty(name="Prompt", description="What the motion should be, e.g. 'a horse galloping'")
    frames: bpy.props.IntProperty(name="Frames", default=16, min=2, max=256, description="Frames to generate")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Another seed, another motion")
    steps: bpy.props.IntProperty(name="Steps", default=25, min=1, max=500, description="Sampling steps")
    guidance: bpy.props.FloatProperty(name="Guidance", default=7.5, min=1.0, max=30.0, description="CFG scale")
    sds_steps: bpy.props.IntProperty(
        name="SDS Steps", default=0, min=0, max=5000, description="4D-SDS refinement steps after the reconstruction"
    )
    checkpoint: bpy.props.StringProperty(
        name="Model Folder",
        subtype="DIR_PATH",
        options=BLEND_RELATIVE,
        description="Multi-view video model folder on the backend's disk; empty: the backend's default",
    )
    fit_iterations: bpy.props.IntProperty(
        name="Fit Steps", default=0, min=0, description="4D fit steps; 0 uses the backend's preset"
    )

    def model_params(self) -> dict:
        params = {
            "prompt": self.prompt.strip(),
            "frames": self.frames,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "sds_steps": self.sds_steps,
            "fit_iterations": self.fit_iterations,
        }
        if self.checkpoint.strip():
            params["checkpoint"] = bpy.path.abspath(self.checkpoint.strip()).rstrip("/\\")
        return params


class TESSERA_OT_animate_object(_GenerateSettings, _Submitting, bpy.types.Operator):
    """Animate the active static mesh from a text prompt: 4 renders of it condition the multi-view video model,
    and the motion it generates moves the object's own mesh — a new animated take (mesh cache); the object's
    data is never changed"""

    bl_idname = "tessera.animate_object"
    bl_label = "Animate Object"
    bl_options = {"REGISTER", "UNDO"}

    resolution: bpy.props.IntProperty(
        name="Resolution", default=256, min=32, max=1024, description="Size of the condition renders, pixels"
    )

    @classmethod
    def poll(cls, context):
        return _active_mesh(cls, context)

    def execute(self, context):
        from .collectors.multiview_capture import capture
        from .collectors.static_object import world_surface
        from .shared.errors import TesseraError

        ob = context.active_object
        try:
            _need_client()
            if not self.prompt.strip():
                raise ClientError("Type what the motion should be (Prompt), e.g. 'a horse galloping'.")
            surface = world_surface(context, ob)
            views = capture(
                context,
                ob,
                MODEL_VIEWS,
                1,
                self.resolution,
                elevation_deg=MODEL_ELEVATION,
                fov_deg=MODEL_FOV,
                azimuth_start_deg=MODEL_AZIMUTH_START,
            )
        except (ClientError, TesseraError) as exc:
            self.report({"ERROR"}, getattr(exc, "message", None) or str(exc))
            return {"CANCELLED"}
        name = f"{ob.name} animated"
        params = self.model_params() | {"fov_x": float(views.fov_x), "name": name}
        arrays = {
            "images": views.images,
            "alphas": views.alphas,
            "c2w": views.c2w,
            "rest_vertices": surface.vertices,
            "rest_faces": surface.faces,
        }
        options = {
            "dress_from": ob.name,
            "dress_materials": surface.materials,
            "dress_uvs": surface.uvs,
            "hide_source": True,
            "preview_image": f"{ob.name} generated views",
        }
        return self.submit(context, "pipeline.animate_object", params, options, arrays)


class TESSERA_OT_video_to_4d(_GenerateSettings, _Submitting, bpy.types.Operator):
    """Turn a video of an object (a Movie Clip, or an image sequence / movie Image) into 4D: the multi-view
    video model generates the other views, then 4D Gaussians and an animated mesh stream into the timeline"""

    bl_idname = "tessera.video_to_4d"
    bl_label = "Video to 4D"
    bl_options = {"REGISTER", "UNDO"}

    clip: bpy.props.StringProperty(name="Movie Clip", description="Empty: the Clip editor's or the scene's clip")
    image: bpy.props.StringProperty(name="Image", description="An image sequence or movie Image (instead of a clip)")
    max_size: bpy.props.IntProperty(
        name="Max Size", default=512, min=64, max=4096, description="Frames are scaled to at most this, pixels"
    )

    def execute(self, context):
        from .collectors.video_frames import find_source, read_frames
        from .shared.errors import TesseraError

        try:
            _need_client()
            source = find_source(context, self.clip.strip(), self.image.strip())
            video = read_frames(context, source, self.frames, self.max_size)
        except (ClientError, TesseraError) as exc:
            self.report({"ERROR"}, getattr(exc, "message", None) or str(exc))
            return {"CANCELLED"}
        name = f"{video.name} 4D"
        params = self.model_params() | {"frames": len(video.images), "name": name}
        arrays = {"images": video.images}
        if video.alphas is not None:
            arrays["alphas"] = video.alphas
        options = {"capture_source": name, "preview_image": f"{video.name} generated views"}
        return self.submit(context, "pipeline.video_to_4d", params, options, arrays)


# -- motion tokens: in-between, edit, generate, train on an armature ------------------------------

MOTION_NO_MODEL = "Choose a motion model: set the model path in the Tessera sidebar's Motion box, or train one (Train)."


def _fps(scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


def _active_armature(context):
    ob = context.active_object
    if ob is None or ob.type != "ARMATURE":
        what = f"'{ob.name}' is {object_kind(ob)}" if ob is not None else "No object is active"
        raise armature_motion.MotionError(f"{what}: select the armature to animate.")
    return ob


class _MotionSubmitting(_Submitting):
    def model_path(self, context) -> str:
        model = self.model.strip() or context.scene.tessera.motion_model.strip()
        if not model:
            raise armature_motion.MotionError(MOTION_NO_MODEL)
        return bpy.path.abspath(model)

    def clip_request(self, context, arm_ob, model: str) -> tuple[dict, dict]:
        """The params and arrays every clip-editing request carries: the action over the scene range."""
        scene = context.scene
        clip = armature_motion.armature_clip(context, arm_ob, scene.frame_start, scene.frame_end)
        params = {"model": model, "joints": "\n".join(clip.names), "fps": _fps(scene)}
        arrays = {
            "parents": clip.parents,
            "offsets": clip.offsets,
            "rotations": clip.rotations,
            "root_positions": clip.root_positions,
        }
        return params, arrays


class TESSERA_OT_motion_inbetween(_MotionSubmitting, bpy.types.Operator):
    """Fill in the motion between the keyed poses of the active armature (over the scene's frame range)
    with a motion model: a new take; the keyed frames stay exactly as keyed"""

    bl_idname = "tessera.motion_inbetween"
    bl_label = "In-between"
    bl_options = {"REGISTER", "UNDO"}

    model: bpy.props.StringProperty(name="Model", description="Empty: the scene's motion model")
    method: bpy.props.EnumProperty(
        name="Method",
        items=[
            ("auto", "Auto", "Library match when the model keeps its training clips, else the token model"),
            ("match", "Library Match", "Blend the model's training-clip segments that fit each gap best"),
            ("tokens", "Token Model", "Fill the gaps' tokens with the masked token model"),
        ],
        default="auto",
    )
    use_mirror: bpy.props.BoolProperty(
        name="Use Mirror Images",
        default=True,
        description="Library match may also use the training clips' left-right mirror images; turn off to keep "
        "handed moves on the side your library has them",
    )

    def execute(self, context):
        scene = context.scene
        try:
            arm_ob = _active_armature(context)
            model = self.model_path(context)
            keyed = [f for f in armature_motion.keyed_frames(arm_ob) if scene.frame_start <= f <= scene.frame_end]
            if not keyed and armature_motion.keyed_frames(arm_ob):
                raise armature_motion.MotionError(
                    f"Armature '{arm_ob.name}' has no keyframes in the frame range {scene.frame_start}.."
                    f"{scene.frame_end}: key poses there, or set the frame range to the keyed poses."
                )
            params, arrays = self.clip_request(context, arm_ob, model)
        except armature_motion.MotionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        kept = armature_motion.frame_ranges([f - scene.frame_start for f in keyed])
        params["keep"] = armature_motion.ranges_text(kept)
        params["method"] = self.method
        params["mirror"] = self.use_mirror
        options = MotionOptions(arm_ob.name, scene.frame_start, "inbetween", kept, arm_ob.session_uid).as_job_options()
        return self.submit(context, "motion.inbetween", params, options, arrays)


class TESSERA_OT_motion_edit(_MotionSubmitting, bpy.types.Operator):
    """Regenerate the motion of the selected pose bones over the preview range (else the scene's frame
    range) with a motion model: a new take; everything outside the range stays as it is"""

    bl_idname = "tessera.motion_edit"
    bl_label = "Edit Selected"
    bl_options = {"REGISTER", "UNDO"}

    model: bpy.props.StringProperty(name="Model", description="Empty: the scene's motion model")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Another seed, another variation")

    def execute(self, context):
        scene = context.scene
        try:
            arm_ob = _active_armature(context)
            model = self.model_path(context)
            bones = [pb.name for pb in arm_ob.pose.bones if _selected(pb)]
            if not bones:
                raise armature_motion.MotionError(
                    f"No bones of '{arm_ob.name}' are selected: select the pose bones to regenerate (Pose Mode)."
                )
            first, last = (
                (scene.frame_preview_start, scene.frame_preview_end)
                if scene.use_preview_range
                else (scene.frame_start, scene.frame_end)
            )
            first, last = max(first, scene.frame_start), min(last, scene.frame_end)
            if first > last:
                raise armature_motion.MotionError(
                    f"The preview range lies outside the frame range {scene.frame_start}..{scene.frame_end}: "
                    "set the preview range to the frames to regenerate."
                )
            params, arrays = self.clip_request(context, arm_ob, model)
        except armature_motion.MotionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        a, b = first - scene.frame_start, last - scene.frame_start
        count = scene.frame_end - scene.frame_start + 1
        kept = [r for r in ((0, a - 1), (b + 1, count - 1)) if r[0] <= r[1]]
        params.update(frames=f"{a}-{b}", bones="\n".join(bones), seed=self.seed)
        options = MotionOptions(arm_ob.name, scene.frame_start, "edit", kept, arm_ob.session_uid).as_job_options()
        return self.submit(context, "motion.edit", params, options, arrays)


def _selected(pb) -> bool:
    select = getattr(pb, "select", None)  # PoseBone.select from Blender 5.0; Bone.select before
    return bool(pb.bone.select if select is None else select)


class TESSERA_OT_motion_generate(_MotionSubmitting, bpy.types.Operator):
    """Generate a new take for the active armature from a text prompt with a motion model"""

    bl_idname = "tessera.motion_generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    text: bpy.props.StringProperty(name="Text", description="What the motion should be, e.g. 'walk, tired'")
    frames: bpy.props.IntProperty(name="Frames", default=120, min=2, description="Length of the take")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Another seed, another take")
    model: bpy.props.StringProperty(name="Model", description="Empty: the scene's motion model")

    def execute(self, context):
        scene = context.scene
        try:
            arm_ob = _active_armature(context)
            model = self.model_path(context)
            if not self.text.strip():
                raise armature_motion.MotionError("Type what the motion should be (e.g. 'walk, tired').")
            skeleton = armature_motion.armature_skeleton(context, arm_ob)
        except armature_motion.MotionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        params = {
            "model": model,
            "joints": "\n".join(skeleton.names),
            "fps": _fps(scene),
            "text": self.text.strip(),
            "frames": self.frames,
            "seed": self.seed,
        }
        arrays = {"parents": skeleton.parents, "offsets": skeleton.offsets}
        options = MotionOptions(arm_ob.name, scene.frame_start, "generate", [], arm_ob.session_uid).as_job_options()
        return self.submit(context, "motion.generate", params, options, arrays)


class TESSERA_OT_motion_train(_Submitting, bpy.types.Operator):
    """Train a motion model on a folder of BVH files on the backend's disk, or (no folder) on the active
    armature's Actions in this file; the scene's motion model becomes the trained one when it finishes"""

    bl_idname = "tessera.motion_train"
    bl_label = "Train Motion Model"
    bl_options = {"REGISTER", "UNDO"}

    data: bpy.props.StringProperty(
        name="BVH Folder",
        subtype="DIR_PATH",
        options=BLEND_RELATIVE,
        description="On the backend's disk; empty: this file's Actions",
    )
    out: bpy.props.StringProperty(
        name="Model Folder",
        subtype="DIR_PATH",
        options=BLEND_RELATIVE,
        description="Where the backend writes the trained model",
    )
    steps: bpy.props.IntProperty(name="Steps", default=2000, min=1, description="Training steps")
    labels_from_filenames: bpy.props.BoolProperty(
        name="Labels from File Names", default=True, description="Text labels from the BVH file names"
    )

    def execute(self, context):
        out = self.out.strip()
        data = self.data.strip()
        arrays = None
        params = {
            "data": bpy.path.abspath(data).rstrip("/\\") if data else "",
            "out": bpy.path.abspath(out).rstrip("/\\") if out else "",
            "labels_from_filenames": self.labels_from_filenames,
            "steps": self.steps,
        }
        try:
            if not out:
                raise armature_motion.MotionError("Choose a folder for the trained model (Model Folder).")
            if not data:
                arm_ob = _active_armature(context)
                clip, lengths, labels = armature_motion.action_clips(context, arm_ob)
                arrays = {
                    "parents": clip.parents,
                    "offsets": clip.offsets,
                    "rotations": clip.rotations,
                    "root_positions": clip.root_positions,
                    "clip_lengths": np.array(lengths, np.int32),
                }
                params["labels"] = "\n".join(labels)
                params["joints"] = "\n".join(clip.names)  # so the model's skeleton carries the bone names
                params["fps"] = _fps(context.scene)
        except armature_motion.MotionError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self.submit(context, "motion.train", params, {"motion_train_out": params["out"]}, arrays)


def _unwritable(path: str) -> str:
    """Why `path` cannot be written (its folder made if missing), or "" when it can: checked before an
    exporter runs, so a bad path is one line, not the exporter's traceback."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"its folder cannot be made ({exc.strerror or exc})"
    if os.path.isdir(path):
        return "it is a folder"
    target = path if os.path.exists(path) else folder
    if not os.access(target, os.W_OK):
        return "no permission to write there" if os.path.exists(path) else "its folder is not writable"
    return ""


class TESSERA_OT_export_gltf(bpy.types.Operator):
    """Export the selected armature and the meshes it deforms as GLB, with skins and animation"""

    bl_idname = "tessera.export_gltf"
    bl_label = "Export Rig (GLB)"
    bl_options = {"REGISTER"}

    filepath: bpy.props.StringProperty(
        name="File", subtype="FILE_PATH", options=BLEND_RELATIVE, description="The .glb file to write"
    )
    filter_glob: bpy.props.StringProperty(default="*.glb", options={"HIDDEN"})

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "Choose a .glb file to write.")
            return {"CANCELLED"}
        problem = _unwritable(bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".glb"))
        if problem:
            self.report({"ERROR"}, f"Cannot write {self.filepath}: {problem}.")
            return {"CANCELLED"}
        armatures = [ob for ob in context.selected_objects if ob.type == "ARMATURE"]
        active = context.active_object
        if not armatures and active is not None and active.type == "ARMATURE":
            armatures = [active]
        if not armatures:
            self.report({"ERROR"}, "Select the rig's armature (its rigged meshes are exported with it).")
            return {"CANCELLED"}
        meshes = [
            ob
            for ob in context.view_layer.objects
            if ob.type == "MESH"
            and any(mod.type == "ARMATURE" and mod.object in armatures and mod.show_render for mod in ob.modifiers)
        ]
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".glb")
        selection = [ob for ob in context.view_layer.objects if ob.select_get()]
        try:
            for ob in selection:
                ob.select_set(False)
            for ob in armatures + meshes:
                ob.select_set(True)
            result = bpy.ops.export_scene.gltf(
                filepath=path,
                export_format="GLB",
                use_selection=True,
                export_animations=True,
                export_animation_mode="ACTIVE_ACTIONS",  # the rig's take, not every Action in the file
                export_skins=True,
                export_apply=False,
            )
        except RuntimeError as exc:
            self.report({"ERROR"}, f"glTF export failed: {exc}")
            return {"CANCELLED"}
        finally:
            for ob in armatures + meshes:
                ob.select_set(False)
            for ob in selection:
                ob.select_set(True)
        if result != {"FINISHED"}:
            self.report({"ERROR"}, f"glTF export did not finish ({', '.join(result)}).")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(armatures)} armature(s) and {len(meshes)} mesh(es) to {path}.")
        return {"FINISHED"}

    def invoke(self, context, event):
        if not self.filepath:
            self.filepath = "rig.glb"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class TESSERA_OT_cancel_job(bpy.types.Operator):
    """Stop a running or queued job (results already applied stay)"""

    bl_idname = "tessera.cancel_job"
    bl_label = "Cancel Job"
    bl_options = {"REGISTER"}

    job_id: bpy.props.StringProperty(name="Job")

    def execute(self, context):
        try:
            client = _need_client()
            if self.job_id not in client.jobs:
                raise ClientError(f"No job '{self.job_id}' in this session.")
            job = client.jobs[self.job_id]
            if job.state.finished:
                self.report({"INFO"}, f"Job {self.job_id} has already ended ({job.state.value}): nothing to cancel.")
                return {"CANCELLED"}
            client.cancel(self.job_id)
        except ClientError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class TESSERA_OT_fetch_job(bpy.types.Operator):
    """Apply a job's results again from the backend's store into this scene, as new objects
    (e.g. a job that ran while Blender was closed)"""

    bl_idname = "tessera.fetch_job"
    bl_label = "Fetch Results"
    bl_options = {"REGISTER", "UNDO"}

    job_id: bpy.props.StringProperty(name="Job")
    y_up: bpy.props.BoolProperty(
        name="Y Up",
        description="Mesh results are Y-up: rotate them to Blender's Z-up (for jobs whose stored options do not say)",
    )

    def execute(self, context):
        try:
            client = _need_client()
            known = {row.get("id"): row for row in client.backend_jobs}
            if known and self.job_id not in known:
                raise ClientError(f"The backend keeps no job '{self.job_id}'; its jobs: {', '.join(known) or 'none'}.")
            from .pump import forget_target

            forget_target(self.job_id)  # fetched results make new objects, never touch older ones
            # as it was asked for (into the objects it named, by name); y_up for jobs that did not say
            options = {"y_up": self.y_up, **client.stored_options(self.job_id)}
            job = client.attach(self.job_id, known.get(self.job_id, {}).get("plugin", ""), options)
        except ClientError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Fetching the results of job {job.id} ({job.plugin or 'unknown plugin'}).")
        _start_pump(context)
        return {"FINISHED"}


class TESSERA_OT_release_gpu(bpy.types.Operator):
    """Ask the backend to drop cached models and free GPU memory"""

    bl_idname = "tessera.release_gpu"
    bl_label = "Release GPU"
    bl_options = {"REGISTER"}

    def execute(self, context):
        try:
            _need_client().release()
        except ClientError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class TESSERA_OT_wait(bpy.types.Operator):
    """Apply results until every submitted job has ended (for scripts: timers do not run without a UI)"""

    bl_idname = "tessera.wait"
    bl_label = "Wait for Jobs"
    bl_options = {"REGISTER", "UNDO"}

    timeout: bpy.props.FloatProperty(name="Timeout", default=120.0, min=0.0, description="Seconds")

    def execute(self, context):
        client = SESSION.client
        if client is None:
            self.report({"ERROR"}, "Not connected to a backend: run tessera.connect first.")
            return {"CANCELLED"}
        deadline = time.monotonic() + self.timeout
        while client.unfinished_jobs():
            pump(context)
            if client.state not in (ConnectionState.CONNECTED, ConnectionState.CONNECTING):
                names = ", ".join(f"{j.id} ({j.plugin})" for j in client.unfinished_jobs())
                self.report(
                    {"ERROR"}, f"Backend {client.state.value} while jobs {names} were running: {client.state_message}"
                )
                return {"CANCELLED"}
            if time.monotonic() > deadline:
                lines = ", ".join(f"{j.id} ({j.plugin}: {j.stage} {j.fraction:.0%})" for j in client.unfinished_jobs())
                self.report({"ERROR"}, f"Timed out after {self.timeout:g} s waiting for jobs {lines}.")
                return {"CANCELLED"}
            time.sleep(0.001)
        failed = [j for j in client.jobs.values() if j.state.value == "failed" and not j.options.get("reported")]
        for job in failed:
            job.options["reported"] = True
        if failed:
            self.report({"ERROR"}, "; ".join(f"Job {j.id} ({j.plugin}) failed: {j.message}" for j in failed))
            return {"CANCELLED"}
        return {"FINISHED"}


class TESSERA_OT_pump(bpy.types.Operator):
    """Apply backend results as they arrive (internal; started by Connect)"""

    bl_idname = "tessera.pump"
    bl_label = "Tessera Pump"
    bl_options = {"INTERNAL"}

    _timer = None

    def invoke(self, context, event):
        if SESSION.pump_running:
            return {"CANCELLED"}
        SESSION.pump_running = True
        self._timer = context.window_manager.event_timer_add(0.05, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if not SESSION.pump_running or SESSION.client is None:
            return self._finish(context)
        if event.type == "TIMER" and not context.window_manager.is_interface_locked:
            pump(context)
        return {"PASS_THROUGH"}

    def cancel(self, context):
        self._finish(context)

    def _finish(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        SESSION.pump_running = False
        return {"CANCELLED"}


CLASSES = (
    TESSERA_OT_connect,
    TESSERA_OT_disconnect,
    TESSERA_OT_load_mesh_sequence,
    TESSERA_OT_load_gaussian_sequence,
    TESSERA_OT_run_plugin,
    TESSERA_OT_rig_from_motion,
    TESSERA_OT_capture_to_4d,
    TESSERA_OT_animate_object,
    TESSERA_OT_video_to_4d,
    TESSERA_OT_motion_inbetween,
    TESSERA_OT_motion_edit,
    TESSERA_OT_motion_generate,
    TESSERA_OT_motion_train,
    TESSERA_OT_export_gltf,
    TESSERA_OT_cancel_job,
    TESSERA_OT_fetch_job,
    TESSERA_OT_release_gpu,
    TESSERA_OT_wait,
    TESSERA_OT_pump,
)
