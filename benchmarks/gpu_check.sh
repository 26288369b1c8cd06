#!/usr/bin/env bash
# The 4D Gaussians' GPU checks (issue 4) in one call on a lent GPU machine, inside the call's 10 minutes:
#   1. gsplat builds its CUDA kernels (JIT, Hopper only) and the parity test compares its renders and gradients
#      with our PyTorch rasterizer (tests/backend/gaussians4d/test_rasterize.py, the tests that name gsplat);
#   2. the `quality` preset on horse-gallop, 16 views × 48 frames × 512², 3 held-out views: held-out PSNR/SSIM,
#      fit time, peak GPU memory, render FPS (benchmarks/bench_fit4d.py --device cuda; target ≥ 33 dB in ≤ 2 min);
#   3. mesh path 1 with the same preset, with the time that is left.
# Prepare here first (Blender renders, the gsplat wheel): .venv/bin/python benchmarks/gpu_kit.py
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=600).
# Each step's log lands in $OUT (and its tail in the reply). A step that fails does not stop the next.
# Rehearse it on this CPU machine with a small kit before spending device time:
#   .venv/bin/python benchmarks/gpu_kit.py --out /tmp/kit --views 4 --frames 4 --size 64
#   KIT=/tmp/kit PY=.venv/bin/python DEVICE=cpu VIEWS=4 FRAMES=4 SIZE=64 EXTRA="--iterations 4 --threads 1" \
#       bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
KIT=${KIT:-.gpu}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -d "$KIT/bench" ] || ! ls "$KIT"/wheels/gsplat-*.whl > /dev/null 2>&1; then
    echo "No GPU kit at $KIT: run '.venv/bin/python benchmarks/gpu_kit.py' on the CPU machine first, and carry .gpu"
    exit 2
fi
left() { echo $((575 - $(date +%s) + start)); }

"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$KIT"/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 COLUMNS=150
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. gsplat's CUDA build and the parity test"
t0=$(date +%s)
timeout "$(left)" "$PY" -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat built nothing'" \
    > "$OUT/build.log" 2>&1
echo "gsplat build: rc $?, $(($(date +%s) - t0)) s" | tee -a "$OUT/gpu.txt"
tail -5 "$OUT/build.log"
timeout "$(left)" "$PY" -m pytest -q -p no:cacheprovider tests/backend/gaussians4d/test_rasterize.py -k gsplat \
    2>&1 | tee "$OUT/parity.log" | tail -15

echo "== 2. quality preset, free Gaussians"
bench=("$PY" benchmarks/bench_fit4d.py --device "$DEVICE" --preset quality --views "${VIEWS:-16}"
    --frames "${FRAMES:-48}" --size "${SIZE:-512}" --work "$KIT/bench" --sequences "$KIT/sequences" --threads 16 "${extra[@]}")
timeout "$(left)" "${bench[@]}" --no-baseline --no-mesh 2>&1 | tee "$OUT/quality.log" | grep -v "^\s*$" | tail -40

echo "== 3. quality preset, mesh path 1 ($(left) s left)"
if [ "$(left)" -gt 60 ]; then
    timeout "$(left)" "${bench[@]}" --mesh-only 2>&1 | tee "$OUT/mesh.log" | grep -v "^\s*$" | tail -20
fi
echo "done in $(($(date +%s) - start)) s"
