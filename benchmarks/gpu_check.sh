set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -25
timeout 330 python3 benchmarks/gpu_knn.py --json $OUT/gpu_knn.json --open-loop-qps 20000 --open-loop-s 4 --variants 2>&1 | tee $OUT/gpu_knn.log
