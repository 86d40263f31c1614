# One device session (no Ray in the image): GPU tests and NVML metrics, then the control plane at 100 GPU
# actors on the device's 16 cores with a Ray carried in .devcarry/ray-bundle.tar.xz (a site-packages subset
# for the device's Python: ray without jars/libraries, its minimal deps, pydantic, rich; from PyPI wheels).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -V; nproc; nvidia-smi -L
if [ -z "${SKIP_GPU:-}" ]; then
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -12
    timeout 60 python3 benchmarks/gpu_metrics_check.py 2>&1 | tail -5
fi
if [ -f .devcarry/ray-bundle.tar.xz ]; then
    mkdir -p /tmp/pyextra && tar -xJf .devcarry/ray-bundle.tar.xz -C /tmp/pyextra
    export PYTHONPATH=$PWD:/tmp/pyextra/pkgs RAY_USAGE_STATS_ENABLED=0
    if python3 -c "import ray, pydantic; print('ray', ray.__version__)"; then
        timeout ${CP_TIMEOUT:-360} python3 benchmarks/control_plane.py --gpus ${CP_GPUS:-10,25,50,100} \
            --load-actors 10 2>&1 | grep -v -i "warn" | tail -14 | tee $OUT/control_plane.txt
    else
        echo "control plane skipped: the carried Ray does not import on this Python"
    fi
fi
