#!/usr/bin/env bash
# The 4D Gaussians' GPU checks (issue 4) in one call on a lent GPU machine, inside the call's 10 minutes. STEPS
# picks them (default "smoke parity quality mesh"), in this order:
#   build   gsplat builds its CUDA kernels (JIT, Hopper only, 70 s on an H200), in the background while `smoke` runs;
#           skipped when the kit holds kernels built on an earlier call ($KIT/prebuilt/gsplat_cuda.so.xz: the
#           build's .so comes back in $OUT as gsplat_cuda.so.xz.part000; copy it there). Always runs first.
#   smoke   a smoke fit on a tiny capture on CUDA with our PyTorch rasterizer (free Gaussians and mesh path 1, a few
#           steps): the CUDA code paths of the fit, before the long runs depend on them
#   parity  the parity test: gsplat's renders and gradients against our PyTorch rasterizer
#           (tests/backend/gaussians4d/test_rasterize.py, the tests that name gsplat)
#   quality the `quality` preset on horse-gallop, 16 views × 48 frames × 512², 3 held-out views: held-out PSNR/SSIM,
#           fit time, peak GPU memory, render FPS (benchmarks/bench_fit4d.py --device cuda; target ≥ 33 dB in
#           ≤ 2 min)
#   profile where the quality preset's steps spend their time (benchmarks/profile_fit.py)
#   mesh    mesh path 1 with the same preset, with the time that is left
# Prepare here first (Blender renders, the wheels): .venv/bin/python benchmarks/gpu_kit.py
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=600)
# (or command="STEPS='parity quality' BUDGET=200 bash benchmarks/gpu_check.sh" for a shorter call).
# Each step's log lands in $OUT (and its tail in the reply). A step that fails does not stop the next.
# Rehearse it on this CPU machine with a small kit before spending device time (gsplat's build fails there):
#   .venv/bin/python benchmarks/gpu_kit.py --out /tmp/kit --views 4 --frames 4 --size 64
#   KIT=/tmp/kit PY=.venv/bin/python DEVICE=cpu VIEWS=4 FRAMES=4 SIZE=64 EXTRA="--iterations 4 --threads 1" \
#       bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
KIT=${KIT:-.gpu}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-575}
STEPS=" ${STEPS:-smoke parity quality mesh} "
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -d "$KIT/bench" ] || ! ls "$KIT"/wheels/gsplat-*.whl > /dev/null 2>&1; then
    echo "No GPU kit at $KIT: run '.venv/bin/python benchmarks/gpu_kit.py' on the CPU machine first, and carry .gpu"
    exit 2
fi
left() { echo $((BUDGET - $(date +%s) + start)); }
took() { echo "$(($(date +%s) - start)) s"; }
wants() { [[ "$STEPS" == *" $1 "* ]]; }

pip_in() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
pip_in /tmp/site $(ls "$KIT"/wheels/*.whl | grep -v /gsplat-) || exit 1
pip_in /tmp/gsplat-site "$KIT"/wheels/gsplat-*.whl || exit 1
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 COLUMNS=150
without_gsplat="/tmp/site:$PWD"
with_gsplat="/tmp/gsplat-site:/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import sys, torch, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)" \
    | tee -a "$OUT/gpu.txt"

if [ -f "$KIT/prebuilt/gsplat_cuda.so.xz" ]; then
    # gsplat imports `gsplat.csrc` first (its own prebuilt wheels' module): this one loads the earlier call's build,
    # and on any failure raises ImportError, so gsplat builds its kernels as usual
    mkdir -p /tmp/gsplat-prebuilt
    "$PY" -c "import lzma, sys; open(sys.argv[2], 'wb').write(lzma.decompress(open(sys.argv[1], 'rb').read()))" \
        "$KIT/prebuilt/gsplat_cuda.so.xz" /tmp/gsplat-prebuilt/gsplat_cuda.so
    cat > /tmp/gsplat-site/gsplat/csrc.py << 'EOF'
import importlib.util
import sys

import torch  # noqa: F401  (the kernels link against the libraries it loads)

try:
    _spec = importlib.util.spec_from_file_location("gsplat_cuda", "/tmp/gsplat-prebuilt/gsplat_cuda.so")
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
except Exception as exc:
    raise ImportError(f"the prebuilt gsplat kernels did not load: {exc}") from exc
sys.modules[__name__] = _module
EOF
fi
echo "== build: gsplat's CUDA kernels (in the background)"
PYTHONPATH=$with_gsplat timeout "$(left)" "$PY" -c "from gsplat.cuda._backend import _C
assert _C is not None, 'gsplat built nothing'
print('gsplat kernels:', _C.__file__)" > /tmp/build.log 2>&1 &
build=$!
bench=("$PY" benchmarks/bench_fit4d.py --device "$DEVICE" --preset quality --work "$KIT/bench"
    --sequences "$KIT/sequences" --threads 2)
if wants smoke; then
    echo "== smoke: a tiny fit on CUDA with the PyTorch rasterizer"
    PYTHONPATH=$without_gsplat timeout 240 "${bench[@]}" --views 4 --frames 4 --size 64 --iterations 30 \
        --no-baseline 2>&1 | tee "$OUT/smoke.log" | grep -v "^\s*$" | tail -30
    echo "smoke: rc ${PIPESTATUS[0]}, at $(took)" | tee -a "$OUT/gpu.txt"
fi
wait $build
echo "gsplat build: rc $?, done at $(took)" | tee -a "$OUT/gpu.txt"
tail -5 /tmp/build.log | tee -a "$OUT/gpu.txt"
so=$(find ~/.cache/torch_extensions -name "gsplat_cuda*.so" 2> /dev/null | head -1)
if [ -n "$so" ]; then  # compressed beside the next step, in parts of 15 MiB ($OUT takes files of 16 MiB)
    ls -l "$so" | tee -a "$OUT/gpu.txt"
    "$PY" -c "import lzma, sys; data = lzma.compress(open(sys.argv[1], 'rb').read(), preset=3)
for i in range(0, len(data), 15 << 20): open(f'{sys.argv[2]}{i >> 20:03d}', 'wb').write(data[i:i + (15 << 20)])" \
        "$so" "$OUT/gsplat_cuda.so.xz.part" &
fi

if wants parity; then
    echo "== parity: gsplat against our PyTorch rasterizer, at $(took)"
    PYTHONPATH=$with_gsplat timeout "$(left)" "$PY" -m pytest -q -p no:cacheprovider \
        tests/backend/gaussians4d/test_rasterize.py -k gsplat 2>&1 | tee "$OUT/parity.log" | tail -15
    PYTHONPATH=$with_gsplat timeout "$(left)" "$PY" benchmarks/bench_rasterize.py --parity 2>&1 \
        | tee -a "$OUT/parity.log" | tail -15
fi

bench=("${bench[@]}" --threads 16 --views "${VIEWS:-16}" --frames "${FRAMES:-48}" --size "${SIZE:-512}" "${extra[@]}")
if wants quality; then
    echo "== quality: the quality preset, free Gaussians, at $(took)"
    PYTHONPATH=$with_gsplat timeout "$(left)" "${bench[@]}" --no-baseline --no-mesh --checkpoints 400 2>&1 | tee "$OUT/quality.log" \
        | grep -v "^\s*$" | tail -40
fi
if wants profile; then
    echo "== profile: where the quality preset's steps go, at $(took)"
    PYTHONPATH=$with_gsplat timeout "$(left)" "$PY" benchmarks/profile_fit.py --device "$DEVICE" \
        "$KIT/bench/horse-gallop-${VIEWS:-16}x${FRAMES:-48}x${SIZE:-512}" 2>&1 | tee "$OUT/profile.log" | tail -40
fi
if wants mesh && [ "$(left)" -gt 60 ]; then
    echo "== mesh: the quality preset, mesh path 1, at $(took) ($(left) s left)"
    PYTHONPATH=$with_gsplat timeout "$(left)" "${bench[@]}" --mesh-only 2>&1 | tee "$OUT/mesh.log" \
        | grep -v "^\s*$" | tail -20
fi
echo "done in $(took)"
