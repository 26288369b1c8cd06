"""4D Gaussians: dynamic Gaussians fitted to multi-view video, with a pure-PyTorch CPU rasterizer and gsplat on CUDA."""
