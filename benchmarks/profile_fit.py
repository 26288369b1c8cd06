"""Where a 4D fit's steps spend their time: a short fit timed plainly, then again under torch.profiler.

    python benchmarks/profile_fit.py DATA_DIR [--preset quality] [--iterations 200] [--device cuda]

Prints the plain fit's time per step, then the profiled fit's busiest operations (by device time on CUDA, by host
time on the CPU) and how much of the profiled wall time the GPU was busy: near 100 % means the kernels are the
cost; far below means the host (Python, launches, waits) is; then the kernel launches per step, and the lines
where a short fit waits for the GPU (torch's sync debug mode). The silhouette tracking is left out of both fits
(`free_track` off), so the steps are what is measured; its time is printed apart. Run on a lent GPU by
benchmarks/gpu_check.sh (STEPS profile).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_fit4d import timed_fit  # noqa: E402

from backend.gaussians4d.data import load_transforms  # noqa: E402
from backend.gaussians4d.fit import PRESETS  # noqa: E402


def timed(video, preset, device: str) -> float:
    return timed_fit(video, preset, device)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a transforms.json folder (transforms_train.json)")
    parser.add_argument("--preset", default="quality", choices=sorted(PRESETS))
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args(argv)

    video = load_transforms(args.data, "train")
    preset = dataclasses.replace(PRESETS[args.preset], iterations=args.iterations, free_track=False)
    cuda = args.device.startswith("cuda")
    short = dataclasses.replace(preset, iterations=max(1, args.iterations // 4))
    timed(video, dataclasses.replace(preset, iterations=1), args.device)  # warm-up (first kernels, caches)
    base = timed(video, short, args.device)  # the set-up cost that a longer fit shares
    plain = timed(video, preset, args.device)
    per_step = (plain - base) / (preset.iterations - short.iterations) * 1000
    print(f"{video.describe()}, {preset.iterations} steps: {plain:.1f} s; {per_step:.1f} ms per step "
          f"(from the difference with {short.iterations} steps, {base:.1f} s)")  # fmt: skip

    with_start = timed(video, dataclasses.replace(preset, iterations=1, free_track=True), args.device)
    without = timed(video, dataclasses.replace(preset, iterations=1), args.device)
    print(f"the silhouettes' rigid start (free_track): {with_start - without:.1f} s "
          f"(a one-step fit with it {with_start:.1f} s, without {without:.1f} s)")  # fmt: skip

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        timed(video, preset, args.device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / 1e6
        launch_names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
        launches = sum(e.count for e in events if e.key in launch_names)
        print(f"profiled: {wall:.1f} s wall, GPU busy {busy:.1f} s ({busy / wall:.0%}); "
              f"{launches / preset.iterations:.0f} kernel launches per step")  # fmt: skip
        where_it_waits(video, preset, args.device)


def where_it_waits(video, preset, device: str, steps: int = 3) -> None:
    """The lines of a few steps that wait for the GPU (torch's sync debug mode warns at each)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            timed(video, dataclasses.replace(preset, iterations=steps), device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    waits = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    print(f"host waits for the GPU in a {steps}-step fit (set-up included), by line:")
    for where, count in waits.most_common(25):
        print(f"{count:6d}  {where}")


if __name__ == "__main__":
    main()
