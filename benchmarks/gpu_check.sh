# One device session: GPU tests, NVML metrics through the exporter, then the kNN benchmark (no Ray needed).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -25
timeout 60 python3 benchmarks/gpu_metrics_check.py 2>&1 | tail -8
timeout 330 python3 benchmarks/gpu_knn.py --json $OUT/gpu_knn.json ${GPU_KNN_ARGS:-} 2>&1 | tee $OUT/gpu_knn.log
