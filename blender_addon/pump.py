"""The pump: the one place where backend messages turn into Blender data.

`pump()` runs in Blender's main thread (no thread ever touches bpy): from the modal
`tessera.pump` operator's timer in the UI, or in a loop from `tessera.wait` in scripts and
tests (bpy.app.timers never fire when bpy is a module or in --background). Each call
receives one message at a time and stops when its time budget is spent, so Blender stays
responsive however fast results arrive. Slow file writes are steps of their own, spread
over calls: a chunk of mesh frames is appended to its PC2 on the file-writer thread (a
write can block on a throttled disk) while the pump only checks that it has finished, and a
splat frame is built one attribute per step and its PLY written a slice of rows per step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import bpy
import numpy as np

from .appliers import dressing, gaussians, lookup, mesh_sequence, motion, previews, rig
from .client import ConnectionState
from .collectors.static_object import world_surface
from .file_writer import WRITER
from .local_backend import LocalBackendError
from .session import SESSION
from .shared import messages as m
from .shared.errors import InputError, TesseraError
from .shared.results import GAUSSIANS_FRAME, MESH_FRAMES, MESH_REST, MOTION_CLIP, RIG


def pump(context: bpy.types.Context | None = None, time_budget: float = 0.005) -> bool:
    """Receive and apply within `time_budget` seconds; True while jobs are still unfinished."""
    client = SESSION.client
    if client is None:
        return False
    deadline = time.perf_counter() + time_budget
    before = (client.state, _progress_signature(client))
    if SESSION.local is not None and client.state in (ConnectionState.CONNECTING, ConnectionState.CONNECTED):
        try:
            SESSION.local.check()
        except LocalBackendError as exc:
            client.close()
            client.state, client.state_message = ConnectionState.LOST, str(exc)
    created = False
    while time.perf_counter() < deadline:
        if SESSION.pending is not None:
            if not _step_pending(client):
                client.check_connection()  # still notice a dead backend while the disk is slow
                break  # waiting for the disk: come back next call rather than spin
            continue
        remaining = deadline - time.perf_counter()
        messages = client.poll(max_messages=1, time_budget=max(remaining, 0.0))
        if not messages:
            break
        for msg in messages:
            created |= _apply(client, msg, context)
    _show_previews(client)
    if created:
        _push_undo(context)
    if (client.state, _progress_signature(client)) != before or created:
        _redraw(context)
    return bool(client.unfinished_jobs()) and client.state in (ConnectionState.CONNECTING, ConnectionState.CONNECTED)


def _scene(context: bpy.types.Context | None) -> bpy.types.Scene:
    scene = getattr(context, "scene", None) if context is not None else None
    return scene or bpy.context.scene


def _job_scene(job, context) -> bpy.types.Scene:
    """The scene a job was submitted from (its results go there even if another scene is shown now), else the
    current one (a job submitted before this option existed, or its scene deleted)."""
    options = job.options if job is not None else {}
    found = lookup.find(bpy.data.scenes, str(options.get("scene") or ""), int(options.get("scene_uid") or 0))
    return found if found is not None else _scene(context)


def _apply(client, msg: m.Message, context) -> bool:
    """Apply one message; True if it created objects (worth an undo step)."""
    if isinstance(msg, m.Error):
        SESSION.last_error = msg.message
        return False
    if isinstance(msg, m.Released):
        SESSION.last_notice = msg.message
        return False
    if isinstance(msg, (m.Failed, m.Cancelled)):
        _discard_empty_sequence(msg.job, _job_scene(client.jobs.get(msg.job), context))
    if isinstance(msg, (m.Done, m.Failed, m.Cancelled)):
        SESSION.targets.pop(msg.job, None)  # the sequence is complete; its object stays
        SESSION.targets.pop(_splats_key(msg.job), None)
    if isinstance(msg, m.Done):
        _training_done(client.jobs.get(msg.job), context)
    if not isinstance(msg, m.Result):
        return False
    job = client.jobs[msg.job]
    try:
        created = _apply_result(job, msg, _job_scene(job, context), context)
    except lookup.TargetGone as exc:
        _restream(client, job.id, exc)
        return False
    except (TesseraError, LookupError, OSError) as exc:
        client.fail_locally(job.id, getattr(exc, "message", None) or str(exc))
        _discard_empty_sequence(job.id, _job_scene(job, context))
        return False
    if SESSION.pending is None:
        client.result_applied(job.id)  # a pending chunk counts once its last slice is written
    return created


def _apply_result(job, msg: m.Result, scene: bpy.types.Scene, context=None) -> bool:
    if msg.type == MESH_REST:
        SESSION.targets[job.id] = mesh_sequence.apply_rest(
            scene,
            job.id,
            msg.meta,
            msg.arrays,
            y_up=bool(job.options.get("y_up")),
            collection=_collection(job, scene),
            frame_start=job.options.get("frame_start"),
        )
        if "dress_from" in job.options:
            _dress_take(job, SESSION.targets[job.id].object, msg.arrays["faces"])
        return True
    if msg.type == MESH_FRAMES:
        target = SESSION.targets.get(job.id)
        if not isinstance(target, mesh_sequence.MeshSequence):
            raise LookupError(f"Job {job.id} sent mesh frames before its rest mesh.")
        positions = mesh_sequence.check_frames(target, msg.meta, msg.arrays)
        SESSION.pending = PendingFrames(job.id, target, msg.meta["start"], positions)
        return False
    if msg.type == GAUSSIANS_FRAME:
        # keyed apart from the job's mesh sequence: one job may stream both (gaussians4d.fit)
        target = SESSION.targets.get(_splats_key(job.id))
        created = target is None
        if created:
            target = gaussians.start_sequence(
                scene, job.id, msg.meta, _collection(job, scene), frame_start=job.options.get("frame_start")
            )
            SESSION.targets[_splats_key(job.id)] = target
        SESSION.pending = PendingSteps(job.id, gaussians.frame_steps(target, msg.meta, msg.arrays))
        return created
    if msg.type == RIG:
        # One result, applied whole in this step (armature, weights, modifier, action): one undo step.
        rig_context = context if getattr(context, "view_layer", None) is not None else bpy.context
        result = rig.apply_rig(rig_context, job.id, msg.meta, msg.arrays, rig.RigOptions.from_job(job.options, scene))
        job.options["rig_result"] = (result.armature, result.mesh)
        return True
    if msg.type == MOTION_CLIP:
        # A new take on the armature the operator collected from, in this step: one undo step.
        options = motion.MotionOptions.from_job(job.options, scene)
        arm_ob = lookup.find(bpy.data.objects, options.armature, options.armature_uid)
        if arm_ob is None:
            raise LookupError(
                f"The armature '{options.armature}' this motion was made for was deleted; undo the deletion, "
                "or run the motion operator again."
            )
        motion_context = context if getattr(context, "view_layer", None) is not None else bpy.context
        job.options["motion_result"] = motion.apply_clip(
            motion_context, arm_ob, msg.meta, msg.arrays, options.frame_start, options.mode, options.kept, job.id
        )
        return True
    raise LookupError(f"Job {job.id} sent a result of type '{msg.type}', which this add-on cannot apply yet.")


def _collection(job, scene: bpy.types.Scene) -> bpy.types.Collection:
    """Where a job's new objects go: the collection active when it was submitted, if it is still in the scene."""
    name, uid = (job.options.get("collection") or ["", 0])[:2]
    found = lookup.find(bpy.data.collections, name, int(uid)) if name else None
    if found is not None and found in scene.collection.children_recursive:
        return found
    return scene.collection


def _restream(client, job_id: str, gone: lookup.TargetGone) -> None:
    """A running job's object was removed (Undo past its arrival, or deleted): nothing computed is lost; its
    results so far come again into a new object and the stream goes on. Cancel is what stops a job."""
    forget_target(job_id)
    client.restart_results(job_id)
    SESSION.last_notice = (
        f"{gone} Its job is still running: its results come again into a new object (Cancel stops it)."
    )


def _discard_empty_sequence(job_id: str, scene: bpy.types.Scene) -> None:
    """A job that ended without success before its first mesh frame: its object and empty cache go."""
    target = SESSION.targets.get(job_id)
    if isinstance(target, mesh_sequence.MeshSequence) and mesh_sequence.discard_if_empty(target, scene):
        SESSION.targets.pop(job_id, None)


def _dress_take(job, take, faces: np.ndarray) -> None:
    """An animated take of a user's object (tessera.animate_object, a capture's Follow With Mesh): its materials
    and UVs, and the source hidden so the take plays in its place (the source's data is untouched; unhide it to
    compare). A take fetched in a later session has no materials or UVs in its notes (arrays stay in the session
    that asked): they are read from the source again if its surface still has the take's triangles."""
    source = bpy.data.objects.get(job.options["dress_from"])
    materials, uvs = job.options.get("dress_materials"), job.options.get("dress_uvs")
    if materials is None and source is not None:
        materials, uvs = _dressing_of(source, faces)
    dressing.dress_like(take, source, () if materials is None else materials, uvs)
    if source is not None and job.options.get("hide_source"):
        source.hide_set(True)
        source.hide_render = True
        SESSION.last_notice = f"'{take.name}' is the animated take of '{source.name}' (hidden; unhide to compare)."


def _dressing_of(source: bpy.types.Object, faces: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(materials, uvs) of `source`'s surface as the collector sends it, or (None, None) if that surface is
    not made of `faces` any more (the object was edited since: its materials would land on the wrong triangles)."""
    try:
        surface = world_surface(bpy.context, source)
    except InputError:
        return None, None
    if not np.array_equal(surface.faces, faces):
        return None, None
    return surface.materials, surface.uvs


def _show_previews(client) -> None:
    """New progress previews of jobs that asked for them (option `preview_image`) into their image."""
    for job in client.jobs.values():
        name = job.options.get("preview_image")
        if name and job.preview is not None and job.previews != job.options.get("previews_shown", 0):
            job.options["previews_shown"] = job.previews
            try:
                previews.show_preview(name, job.preview)
            except ValueError as exc:  # a malformed preview is not worth failing the job for
                SESSION.last_error = f"Job {job.id}: preview not shown ({exc})."


def _splats_key(job_id: str) -> str:
    """SESSION.targets key of a job's splat sequence (its mesh sequence is under the job id)."""
    return f"{job_id}/splats"


def _training_done(job, context) -> None:
    """A finished motion.train job: its model becomes the scene's motion model."""
    if job is None or "motion_train_out" not in job.options:
        return
    out = str(job.options["motion_train_out"])
    scene = _scene(context)
    scene.tessera.motion_model = out
    SESSION.last_notice = f"Motion model trained: {out} (now the scene's motion model)."


@dataclass
class PendingFrames:
    """A checked chunk of mesh frames, appended to its PC2 on the file-writer thread."""

    job_id: str
    sequence: mesh_sequence.MeshSequence
    start: int
    positions: np.ndarray
    write: Future | None = None

    @property
    def waiting(self) -> bool:
        return self.write is not None and not self.write.done()

    def step(self) -> bool:
        if self.write is None:
            path = self.sequence.cache_path()
            self.write = WRITER.submit(
                mesh_sequence.append_new_frames, path, self.sequence.object_name, self.start, self.positions
            )
            return False
        self.write.result()  # done (see waiting); raises what the write raised
        self.sequence.object.update_tag()  # the modifier re-reads the file on its next evaluation
        return True


@dataclass
class PendingSteps:
    """A result applied by a generator of small steps (a splat frame: mesh, attributes, PLY slices)."""

    job_id: str
    steps: Iterator[None]
    waiting = False

    def step(self) -> bool:
        return next(self.steps, StopIteration) is StopIteration


def _step_pending(client) -> bool:
    """One step of the pending work; False while it waits for the disk. The result counts as
    applied once its last step is done."""
    pending = SESSION.pending
    if pending.waiting:
        return False
    try:
        finished = pending.step()
    except lookup.TargetGone as exc:
        _restream(client, pending.job_id, exc)
        return True
    except (TesseraError, LookupError, OSError) as exc:
        SESSION.pending = None
        client.fail_locally(pending.job_id, getattr(exc, "message", None) or str(exc))
        _discard_empty_sequence(pending.job_id, None)
        return True
    if finished:
        SESSION.pending = None
        client.result_applied(pending.job_id)
    return True


def _progress_signature(client) -> tuple:
    return tuple((j.id, j.state, round(j.fraction, 2), j.stage) for j in client.jobs.values())


def _push_undo(context) -> None:
    """New objects get an undo step, where there is a window to push it in."""
    if bpy.app.background or getattr(context, "window", None) is None:
        return
    try:
        bpy.ops.ed.undo_push(message="Tessera: results arrived")
    except RuntimeError:
        pass  # no undo stack in this context (e.g. during render); the data is still there


def _redraw(context) -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def forget_target(job_id: str) -> None:
    """Results of this job start a new object next time (a re-fetch never writes into the old one)."""
    SESSION.targets.pop(job_id, None)
    SESSION.targets.pop(_splats_key(job_id), None)
    if SESSION.pending is not None and SESSION.pending.job_id == job_id:
        SESSION.pending = None


def all_jobs_ended() -> bool:
    client = SESSION.client
    return client is None or all(j.state.finished for j in client.jobs.values())
