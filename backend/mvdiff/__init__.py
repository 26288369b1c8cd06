"""Multi-view video diffusion (Animate3D-style) on diffusers parts: model, pipeline, checkpoints, 4D-SDS."""
