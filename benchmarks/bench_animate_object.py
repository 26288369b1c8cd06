"""`pipeline.animate_object` end to end: time per stage and peak memory (the architecture, random weights).

    .venv/bin/python benchmarks/bench_animate_object.py [--device cuda] [--frames 16] [--size 256] [--steps 25]
        [--sds-steps 100] [--preset quality] [--fit-iterations N] [--dtype bf16] [--sequence horse-gallop]
        [--tiny] [--no-ip-adapter] [--threads 1]

Runs the plugin's own `run` (the code a job runs) on a real mesh — the rest pose of
../shared/data/mesh-sequences/NAME.npz, its vertices rendered as small Gaussians from the model's 4 cameras as
the condition views — with the pipeline of benchmarks/bench_mvdiff.py (the published Animate3D architecture with
its IP-Adapter image prompt, random weights; `--tiny`: the tiny test model, a CPU plumbing check) put in the job's
model cache. Speed and memory do not depend on the weight values; the motion does, so no quality is reported.
Prints one table: seconds for loading (cache hit), sampling, the 4D reconstruction, the 4D-SDS refinement, the
outputs; total; peak CUDA memory; peak RSS. Target (issue 6): ≤ 5 min and ≤ 16 GB on an H100 for 4 views × 16
frames × 256², 25 steps, bf16 (Animate3D: ~15 min, ≥ 24 GB).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TESSERA4D_ALLOW_UNTRAINED"] = "1"  # random weights, by design: this measures cost only

from bench_mvdiff import build  # noqa: E402

from backend.gaussians4d.cameras import cameras_from_nerf  # noqa: E402
from backend.gaussians4d.rasterize import rasterize  # noqa: E402
from backend.mvdiff.cameras import mvdream_cameras, to_world_cameras  # noqa: E402
from backend.plugin_host import JobContext, Output, Progress  # noqa: E402
from backend.plugins.pipelines import AnimateObject, Model, checkpoint_folder  # noqa: E402
from shared.schemas import validate_params  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mesh-sequences"
FOV = np.radians(40.0)


def condition(rest: np.ndarray, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """4 renders of the mesh's vertices as Gaussians from the model's ring; (arrays without the mesh, c2w)."""
    centre = (rest.max(0) + rest.min(0)) / 2
    radius = float(np.linalg.norm(rest.max(0) - rest.min(0))) / 2
    c2w = to_world_cameras(mvdream_cameras(4, 15.0), centre, 1.15 * radius / np.sin(FOV / 2))
    cams = cameras_from_nerf(c2w, size, size, camera_angle_x=FOV)
    n = len(rest)
    colours = 0.2 + 0.6 * (rest - rest.min(0)) / np.maximum(rest.max(0) - rest.min(0), 1e-9)
    with torch.no_grad():
        rgb, alpha, _ = rasterize(
            torch.as_tensor(rest, dtype=torch.float32),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            torch.full((n, 3), radius / 60),
            torch.full((n,), 0.95),
            torch.as_tensor(colours, dtype=torch.float32),
            torch.as_tensor(cams.viewmats),
            torch.as_tensor(cams.Ks),
            size,
            size,
            backgrounds=torch.ones(4, 3),
        )
    arrays = {"images": rgb.clamp(0, 1).numpy(), "alphas": alpha[..., 0].numpy(), "c2w": c2w.astype(np.float32)}
    return arrays, c2w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sds-steps", type=int, default=100)
    parser.add_argument("--preset", choices=["fast", "quality"], default="quality")
    parser.add_argument("--fit-iterations", type=int, default=0)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--sequence", default="horse-gallop")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (CPU plumbing check)")
    parser.add_argument("--no-ip-adapter", action="store_true", help="leave out the IP-Adapter image prompt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    data = np.load(DATA / f"{args.sequence}.npz")
    rest, faces = data["rest"].astype(np.float32), data["faces"].astype(np.int32)
    arrays, _ = condition(rest, args.size)
    arrays |= {"rest_vertices": rest, "rest_faces": faces}

    started = time.perf_counter()
    torch.manual_seed(0)
    pipe = build(args.tiny, 4, args.size, not args.no_ip_adapter)
    pipe.model_info = {"trained": False, "source": "random weights (benchmark)"}
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        if module is not None:
            torch.nn.Module.to(module, device=device, dtype=dtype)
    built = time.perf_counter() - started

    params = validate_params(
        AnimateObject.spec,
        {
            "prompt": "a horse galloping",
            "frames": args.frames,
            "steps": args.steps,
            "sds_steps": args.sds_steps,
            "preset": args.preset,
            "fit_iterations": args.fit_iterations,
            "fov_x": float(FOV),
            "checkpoint": "/benchmark/random-weights",
            "preview_every": 5,
        },
    )
    info = {"trained": False, "kind": "tiny-random", "views": 4, "max_frames": 32, "resolution": args.size}
    with tempfile.TemporaryDirectory() as job_dir:
        ctx = JobContext("bench", params, arrays, Path(job_dir), device=str(device))
        folder = checkpoint_folder(params["checkpoint"])
        ctx.models.get(f"mvdiff:{folder}:{device}:any", lambda: Model(pipe, info, folder))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stages: dict[str, float] = {}
        stage, mark = "load", time.perf_counter()
        start = mark
        results = 0
        for item in AnimateObject().run(ctx):
            now = time.perf_counter()
            name = item.stage if isinstance(item, Progress) else "outputs"
            name = {"loading": "load", "reading": "load"}.get(name, name)
            if name != stage:
                stages[stage] = stages.get(stage, 0.0) + now - mark
                stage, mark = name, now
            if isinstance(item, Output):
                results += 1
        stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - mark
        total = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    table = Table(title="pipeline.animate_object end to end (random weights: speed and memory only)")
    columns = ["model", "device", "dtype", "V×F×px", "steps", "sds", "preset", "vertices", "build s"]
    columns += ["load s", "generate s", "reconstruct s", "refine s", "outputs s", "total s", "peak GiB", "RSS GiB"]
    for column in columns:
        table.add_column(column)
    table.add_row(
        "tiny" if args.tiny else "Animate3D-size",
        str(device),
        args.dtype,
        f"4×{args.frames}×{args.size}",
        str(args.steps),
        str(args.sds_steps),
        args.preset,
        str(len(rest)),
        f"{built:.1f}",
        *(f"{stages.get(k, 0.0):.1f}" for k in ("load", "generate", "reconstruct", "refine", "outputs")),
        f"{total:.1f}",
        f"{peak:.1f}",
        f"{rss:.1f}",
    )
    Console(width=240).print(table)
    assert results == 2, results  # mesh.rest + mesh.frames


if __name__ == "__main__":
    main()
