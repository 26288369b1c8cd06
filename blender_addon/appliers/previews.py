"""Progress previews as a Blender image: a plugin's `preview` array (V, H, W, 3) uint8 — e.g. the views a
multi-view video model is generating — shown side by side in one Image datablock (open it in an Image Editor;
the Generate 4D panel shows it too). The image is replaced in place as newer previews arrive."""

from __future__ import annotations

import bpy
import numpy as np


def show_preview(name: str, preview: np.ndarray) -> bpy.types.Image:
    """Write `preview` ((V,H,W,3) or (H,W,3) uint8 or float in [0,1]) into the image `name`, views left to right."""
    arr = np.asarray(preview)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"a preview must be (V, H, W, 3), got {arr.shape}")
    rgb = arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    v, h, w, _ = rgb.shape
    strip = np.ones((h, v * w, 4), np.float32)
    strip[..., :3] = rgb.transpose(1, 0, 2, 3).reshape(h, v * w, 3)
    image = bpy.data.images.get(name)
    if image is not None and tuple(image.size) != (v * w, h):
        bpy.data.images.remove(image)
        image = None
    if image is None:
        image = bpy.data.images.new(name, v * w, h, alpha=False)
    image.pixels.foreach_set(np.ascontiguousarray(strip[::-1]).ravel())  # Blender's rows run bottom to top
    image.update()
    return image
