"""Where the add-on's files go (PC2 caches, splat PLYs), and moving them when a file is saved.

A saved .blend keeps its files in `//tessera4d/<blend name>/` (relative paths, so the
folder travels with the .blend). An unsaved session writes into the extension's user
folder (`unsaved/<session>`), never the add-on folder (it is wiped on upgrade). On the
first save, `save_pre` moves that session's files next to the new .blend; Blender then
writes the paths relative, as it does for every path of a file saved for the first time.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import bpy

from .file_writer import WRITER

FOLDER = "tessera4d"
PLY_FOLDER_PROP = "tessera_ply_folder"  # object custom property: where a splat sequence's PLYs are

_SESSION = uuid.uuid4().hex[:8]  # keeps two unsaved Blender sessions out of each other's files


def unsaved_root() -> Path:
    return Path(bpy.utils.extension_path_user(__package__, path="unsaved", create=True))


def folder_for(blend_path: str) -> Path:
    """The folder for a .blend at `blend_path` ("" → this unsaved session's folder)."""
    if not blend_path:
        return unsaved_root() / _SESSION
    blend = Path(blend_path)
    return blend.parent / FOLDER / blend.stem


def output_folder() -> Path:
    """The folder new files of the open .blend go to (created)."""
    folder = folder_for(bpy.data.filepath)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def blender_path(path: Path) -> str:
    """How to store `path` in Blender data: relative ('//…') when the .blend is saved."""
    if bpy.data.filepath:
        return bpy.path.relpath(str(path))
    return str(path)


def absolute(blender_style: str) -> Path:
    return Path(bpy.path.abspath(blender_style))


def safe_name(name: str) -> str:
    """A file name part made of letters, digits, '-' and '_' only."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "sequence"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _move(src: Path, dst_folder: Path) -> Path:
    dst_folder.mkdir(parents=True, exist_ok=True)
    dst = dst_folder / src.name
    if src.resolve() != dst.resolve():
        shutil.move(str(src), str(dst))
    return dst


@bpy.app.handlers.persistent
def move_unsaved_files(filepath: str = "", *_args) -> None:
    """save_pre: files of the unsaved session move next to the .blend being written."""
    if not filepath or bpy.data.filepath:
        return  # only the first save of an unsaved file needs moving; later saves keep '//' paths
    WRITER.flush()  # no cache append may be in flight while its file moves
    root = unsaved_root()
    target = folder_for(filepath)
    for ob in bpy.data.objects:
        for mod in ob.modifiers:
            if mod.type == "MESH_CACHE" and mod.filepath and _inside(absolute(mod.filepath), root):
                src = absolute(mod.filepath)
                if src.is_file():
                    mod.filepath = str(_move(src, target))
        ply_folder = ob.get(PLY_FOLDER_PROP)
        if isinstance(ply_folder, str) and ply_folder and _inside(absolute(ply_folder), root):
            src_folder = absolute(ply_folder)
            dst_folder = target / src_folder.name
            if src_folder.is_dir():
                dst_folder.mkdir(parents=True, exist_ok=True)
                for f in sorted(src_folder.iterdir()):
                    _move(f, dst_folder)
                if not any(src_folder.iterdir()):
                    os.rmdir(src_folder)
            ob[PLY_FOLDER_PROP] = str(dst_folder)


@bpy.app.handlers.persistent
def make_paths_relative(filepath: str = "", *_args) -> None:
    """save_post: paths set absolute in save_pre become '//' paths in the open file too."""
    if not bpy.data.filepath:
        return
    base = Path(bpy.data.filepath).parent
    for ob in bpy.data.objects:
        for mod in ob.modifiers:
            if mod.type == "MESH_CACHE" and mod.filepath and not mod.filepath.startswith("//"):
                if _inside(Path(mod.filepath), base):
                    mod.filepath = bpy.path.relpath(mod.filepath)
        ply_folder = ob.get(PLY_FOLDER_PROP)
        if isinstance(ply_folder, str) and ply_folder and not ply_folder.startswith("//"):
            if _inside(Path(ply_folder), base):
                ob[PLY_FOLDER_PROP] = bpy.path.relpath(ply_folder)


def register() -> None:
    bpy.app.handlers.save_pre.append(move_unsaved_files)
    bpy.app.handlers.save_post.append(make_paths_relative)


def unregister() -> None:
    for handlers, fn in (
        (bpy.app.handlers.save_pre, move_unsaved_files),
        (bpy.app.handlers.save_post, make_paths_relative),
    ):
        # Match by name: after an add-on reload the list holds the old module's function.
        for h in [
            h
            for h in handlers
            if getattr(h, "__name__", "") == fn.__name__ and getattr(h, "__module__", "") == fn.__module__
        ]:
            handlers.remove(h)
