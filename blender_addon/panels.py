"""The "Tessera" tab in the 3D Viewport sidebar: connection, jobs, plugins."""

from __future__ import annotations

import bpy

from .client import ConnectionState
from .session import SESSION

STATE_ICONS = {
    ConnectionState.DISCONNECTED: "UNLINKED",
    ConnectionState.CONNECTING: "SORTTIME",
    ConnectionState.CONNECTED: "LINKED",
    ConnectionState.VERSION_MISMATCH: "ERROR",
    ConnectionState.LOST: "ERROR",
}


class _TesseraPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Tessera"


class VIEW3D_PT_tessera_connection(_TesseraPanel, bpy.types.Panel):
    bl_label = "Backend"

    def draw(self, context):
        layout = self.layout
        client = SESSION.client
        state = SESSION.state
        label = {ConnectionState.LOST: "Backend lost", ConnectionState.VERSION_MISMATCH: "Version mismatch"}.get(
            state, state.value.capitalize()
        )
        layout.label(text=label, icon=STATE_ICONS[state])
        if client is not None and client.state_message and state != ConnectionState.CONNECTED:
            _wrapped(layout, client.state_message)
        if state == ConnectionState.CONNECTED:
            layout.label(text=f"Server: {client.server}")
            layout.label(text=f"Device: {client.device}")
            pong = client.last_pong
            if pong is not None:
                layout.label(text=f"Running {pong.running}, queued {pong.queued}")
        row = layout.row(align=True)
        if state in (ConnectionState.CONNECTED, ConnectionState.CONNECTING):
            row.operator("tessera.disconnect", icon="CANCEL")
        elif state == ConnectionState.LOST:
            # A local backend is restarted by an empty address; a remote one is asked again.
            reconnect = row.operator("tessera.connect", text="Reconnect", icon="FILE_REFRESH")
            reconnect.address = "" if SESSION.local is not None else client.address
            row.operator("tessera.disconnect", icon="CANCEL")
        else:
            row.operator("tessera.connect", icon="LINKED")
        if state == ConnectionState.CONNECTED:
            layout.operator("tessera.release_gpu", icon="TRASH")
        if SESSION.last_notice:
            _wrapped(layout, SESSION.last_notice, icon="INFO")
        if SESSION.last_error:
            _wrapped(layout, SESSION.last_error, icon="ERROR")


class VIEW3D_PT_tessera_jobs(_TesseraPanel, bpy.types.Panel):
    bl_label = "Jobs"

    def draw(self, context):
        layout = self.layout
        client = SESSION.client
        if client is None or not (client.jobs or client.backend_jobs):
            layout.label(text="No jobs yet")
            return
        for job in reversed(list(client.jobs.values())):
            box = layout.box()
            row = box.row()
            row.label(text=f"{job.plugin}  ·  {job.state.value}")
            if not job.state.finished:
                row.operator("tessera.cancel_job", text="", icon="X").job_id = job.id
            text = job.stage or job.state.value
            if hasattr(box, "progress"):  # UILayout.progress exists from Blender 4.0
                box.progress(factor=job.fraction, text=f"{text} {job.fraction:.0%}", type="BAR")
            else:
                box.label(text=f"{text} {job.fraction:.0%}")
            if job.message:
                _wrapped(box, job.message, icon="ERROR" if job.state.value == "failed" else "INFO")
            for warning in job.warnings:  # kept: the progress message above is replaced at every step
                _wrapped(box, warning, icon="ERROR")
        stored = [row for row in client.backend_jobs if row.get("id") not in client.jobs and row.get("results")]
        if stored:
            # Jobs from earlier sessions (e.g. before Blender was closed): their results can come back.
            layout.label(text="Stored on the backend")
            for row in reversed(stored[-10:]):
                line = layout.row()
                line.label(
                    text=f"{row.get('plugin', '?')}  ·  {row.get('state', '?')}  ·  {row.get('results', 0)} results"
                )
                line.operator("tessera.fetch_job", text="", icon="IMPORT").job_id = str(row.get("id", ""))


class VIEW3D_PT_tessera_load(_TesseraPanel, bpy.types.Panel):
    bl_label = "Load"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.tessera
        layout.prop(settings, "mesh_path")
        layout.prop(settings, "y_up")
        op = layout.operator("tessera.load_mesh_sequence", icon="MESH_DATA")
        op.filepath, op.y_up = settings.mesh_path, settings.y_up
        layout.separator()
        layout.prop(settings, "gaussian_folder")
        layout.prop(settings, "max_gaussians")
        op = layout.operator("tessera.load_gaussian_sequence", icon="POINTCLOUD_DATA")
        op.directory, op.max_gaussians = settings.gaussian_folder, settings.max_gaussians


class VIEW3D_PT_tessera_plugins(_TesseraPanel, bpy.types.Panel):
    bl_label = "Plugins"

    def draw(self, context):
        layout = self.layout
        runtime = context.window_manager.tessera
        layout.prop(runtime, "plugin")
        client = SESSION.client
        spec = client.plugins.get(runtime.plugin) if client else None
        if spec is None:
            return
        _wrapped(layout, spec.summary)
        for item in runtime.params:
            if item.plugin == spec.name:
                layout.prop(item, item.value_property, text=item.label)
        layout.operator("tessera.run_plugin", icon="PLAY").plugin = spec.name


class VIEW3D_PT_tessera_rig(_TesseraPanel, bpy.types.Panel):
    bl_label = "Rig"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.tessera
        ob = context.active_object
        if ob is None or ob.type not in ("MESH", "ARMATURE"):
            layout.label(text="Select an animated mesh to rig")
        layout.prop(settings, "rig_bones")
        layout.prop(settings, "rig_mode")
        layout.prop(settings, "rig_influences")
        layout.prop(settings, "rig_target")
        op = layout.operator("tessera.rig_from_motion", icon="ARMATURE_DATA")
        op.bones, op.mode = settings.rig_bones, settings.rig_mode
        op.max_influences, op.target = settings.rig_influences, settings.rig_target
        if ob is not None and ob.type == "ARMATURE":
            layout.operator("tessera.export_gltf", icon="EXPORT")


class VIEW3D_PT_tessera_capture_4d(_TesseraPanel, bpy.types.Panel):
    bl_label = "4D Gaussians"

    def draw(self, context):
        from .collectors.multiview_capture import capture_subjects, subjects_label

        layout = self.layout
        settings = context.scene.tessera
        follow = settings.capture_follow_mesh.name if settings.capture_follow_mesh else ""
        what = subjects_label(capture_subjects(context, follow))
        layout.label(text=f"Captures {what}", icon="OUTLINER_OB_CAMERA")
        col = layout.column(align=True)
        col.prop(settings, "capture_use_selected_cameras")
        ring = col.column(align=True)  # the ring's settings: unused with the selected cameras
        ring.enabled = not settings.capture_use_selected_cameras
        ring.prop(settings, "capture_views")
        ring.prop(settings, "capture_ring_follows")
        col.prop(settings, "capture_frames")
        col.prop(settings, "capture_resolution")
        layout.prop(settings, "capture_preset")
        layout.prop(settings, "capture_iterations")
        layout.prop(settings, "capture_follow_mesh")
        op = layout.operator("tessera.capture_to_4d", icon="RENDER_ANIMATION")
        op.views, op.frames, op.resolution = (
            settings.capture_views,
            settings.capture_frames,
            settings.capture_resolution,
        )
        op.preset, op.iterations = settings.capture_preset, settings.capture_iterations
        op.use_selected_cameras = settings.capture_use_selected_cameras
        op.ring_follows = settings.capture_ring_follows
        op.follow_mesh = follow
        client = SESSION.client
        for job in reversed(list(client.jobs.values()) if client else []):
            if job.plugin == "gaussians4d.fit":  # the latest fit's progress (all jobs: the Jobs panel)
                text = job.stage or job.state.value
                if hasattr(layout, "progress") and not job.state.finished:
                    layout.progress(factor=job.fraction, text=f"{text} {job.fraction:.0%}", type="BAR")
                else:
                    layout.label(text=f"Last fit: {job.state.value}")
                break


GENERATE_PLUGINS = ("pipeline.animate_object", "pipeline.video_to_4d")


def _generate_op(layout, idname: str, settings, **kw):
    op = layout.operator(idname, **kw)
    op.prompt, op.frames, op.seed = settings.gen_prompt, settings.gen_frames, settings.gen_seed
    op.steps, op.guidance, op.sds_steps = settings.gen_steps, settings.gen_guidance, settings.gen_sds_steps
    op.checkpoint = settings.gen_checkpoint
    return op


class VIEW3D_PT_tessera_generate_4d(_TesseraPanel, bpy.types.Panel):
    bl_label = "Generate 4D"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.tessera
        layout.prop(settings, "gen_checkpoint")
        layout.prop(settings, "gen_prompt")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(settings, "gen_frames")
        row.prop(settings, "gen_seed")
        row = col.row(align=True)
        row.prop(settings, "gen_steps")
        row.prop(settings, "gen_guidance")
        col.prop(settings, "gen_sds_steps")
        box = layout.box()
        ob = context.active_object
        if ob is None or ob.type != "MESH":
            box.label(text="Select a static mesh to animate", icon="INFO")
        box.prop(settings, "gen_resolution")
        op = _generate_op(box, "tessera.animate_object", settings, icon="OUTLINER_OB_ARMATURE")
        op.resolution = settings.gen_resolution
        box = layout.box()
        box.prop_search(settings, "video_clip", bpy.data, "movieclips")
        box.prop_search(settings, "video_image", bpy.data, "images")
        op = _generate_op(box, "tessera.video_to_4d", settings, icon="FILE_MOVIE")
        op.clip, op.image = settings.video_clip, settings.video_image
        client = SESSION.client
        for job in reversed(list(client.jobs.values()) if client else []):
            if job.plugin in GENERATE_PLUGINS:  # the latest generation: progress and the views it is making
                text = job.stage or job.state.value
                if hasattr(layout, "progress") and not job.state.finished:
                    layout.progress(factor=job.fraction, text=f"{text} {job.fraction:.0%}", type="BAR")
                else:
                    layout.label(text=f"Last generation: {job.state.value}")
                image = bpy.data.images.get(job.options.get("preview_image", ""))
                if image is not None:
                    image.preview_ensure()
                    layout.template_icon(icon_value=image.preview.icon_id, scale=6.0)
                    layout.label(text=f"Views: image '{image.name}'")
                break


class VIEW3D_PT_tessera_motion(_TesseraPanel, bpy.types.Panel):
    bl_label = "Motion"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.tessera
        ob = context.active_object
        box = layout.box()
        box.prop(settings, "motion_model")
        if ob is None or ob.type != "ARMATURE":
            box.label(text="Select an armature", icon="INFO")
        box.operator("tessera.motion_inbetween", icon="IPO_BEZIER")
        op = box.operator("tessera.motion_edit", icon="BONE_DATA")
        op.seed = settings.motion_seed
        col = box.column(align=True)
        col.prop(settings, "motion_text")
        row = col.row(align=True)
        row.prop(settings, "motion_frames")
        row.prop(settings, "motion_seed")
        op = col.operator("tessera.motion_generate", icon="PLAY")
        op.text, op.frames, op.seed = settings.motion_text, settings.motion_frames, settings.motion_seed
        train = layout.box()
        train.label(text="Train")
        train.prop(settings, "motion_train_data")
        train.prop(settings, "motion_train_out")
        train.prop(settings, "motion_train_steps")
        op = train.operator("tessera.motion_train", icon="EXPERIMENTAL")
        op.data, op.out, op.steps = settings.motion_train_data, settings.motion_train_out, settings.motion_train_steps


def _wrapped(layout, text: str, icon: str = "NONE", width: int = 48) -> None:
    """Long messages as several labels (a label does not wrap)."""
    col = layout.column(align=True)
    words, line = text.split(), ""
    first = True
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            col.label(text=line, icon=icon if first else "BLANK1")
            first, line = False, word
        else:
            line = f"{line} {word}".strip()
    if line:
        col.label(text=line, icon=icon if first else "BLANK1")


CLASSES = (
    VIEW3D_PT_tessera_connection,
    VIEW3D_PT_tessera_jobs,
    VIEW3D_PT_tessera_load,
    VIEW3D_PT_tessera_rig,
    VIEW3D_PT_tessera_capture_4d,
    VIEW3D_PT_tessera_generate_4d,
    VIEW3D_PT_tessera_motion,
    VIEW3D_PT_tessera_plugins,
)
