"""Rig from motion: an animated mesh → kinematic parts, bones, sparse skin weights, keyed motion.

Layers: `metrics` and `skinning` (functions over arrays), `ssdr` (the free-bone solver, Dem Bones'
setting), `skeleton` (hierarchy with joints and constant bone lengths), `rig_file` (the
documented npz every tool can check), then the plugin `rig.from_motion` and `tessera4d rig`.
"""
