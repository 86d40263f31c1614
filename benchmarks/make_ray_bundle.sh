# Build .devcarry/ray-bundle.tar.xz (~38 MB): Ray and what perfray's driver needs, for the lent GPU box's
# Python (no Ray there; a carried path may hold 64 MiB). Compiled packages come as wheels for PY (default
# 3.12); pure-Python ones are copied from this environment.   Usage: bash benchmarks/make_ray_bundle.sh [3.12]
set -euo pipefail
PY=${1:-3.12}; TAG=cp${PY/./}; REPO=$PWD
SP=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
WORK=$(mktemp -d); mkdir -p "$WORK/pkgs" "$WORK/wheels" .devcarry
RAY=$(python -c "import ray; print(ray.__version__)"); CORE=$(python -c "import pydantic_core; print(pydantic_core.__version__)")
pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp --abi "$TAG" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$WORK/wheels" "ray==$RAY" grpcio "pydantic_core==$CORE" msgpack psutil pyyaml rpds-py charset_normalizer
for w in "$WORK"/wheels/*.whl; do python -m zipfile -e "$w" "$WORK/pkgs"; done
for d in google click filelock jsonschema referencing attrs attr jsonschema_specifications packaging requests \
         urllib3 idna certifi pydantic annotated_types typing_inspection typing_extensions.py rich markdown_it \
         mdurl pygments prometheus_client; do cp -r "$SP/$d" "$WORK/pkgs/"; done
cd "$WORK/pkgs"
rm -rf ./*.dist-info ray/jars ray/rllib ray/tune ray/train ray/serve ray/data ray/llm ray/dashboard/client/build \
       google/api_core google/auth google/cloud google/gapic google/logging google/longrunning google/oauth2
find . -name __pycache__ -type d -prune -exec rm -rf {} +
chmod +x ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet
cd "$WORK" && tar -cf - pkgs | xz -T2 -6 > "$REPO/.devcarry/ray-bundle.tar.xz"
ls -la "$REPO/.devcarry/ray-bundle.tar.xz"
