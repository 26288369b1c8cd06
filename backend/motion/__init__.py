"""Motion data: skeletons, BVH files, model features, body parts, datasets and evaluation metrics."""
