#!/usr/bin/env bash
# The accelerator check, for a GPU machine that has jax (CUDA), flax, optax, orbax and torch but
# not TensorFlow, tfds, clu, ml_collections or dm-pix (this project's lent H200s), with no network:
#
#   bash bench/gpu.sh wheels    # here, once: the missing pure-Python wheels into .whl/
#   bash bench/gpu.sh           # there, with .whl/ copied along (git ignores it): about 5 min
#
# It installs the wheels, prints the GPU, runs bench/throughput.py (ResNet-50 at 224 px and the
# airbench network at 32 px, float32 and bfloat16, JAX against PyTorch on the same GPU, on
# synthetic data) and bench/gpu_smoke.py (a short training on synthetic data in both precisions).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(clu==0.0.12 ml-collections==1.1.0 dm-pix==0.4.5)  # as requirements.txt pins them
if [ "${1:-}" = wheels ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${WHEELS[@]}"
  exit
fi
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:.${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
rc=0
python3 bench/throughput.py --models=resnet50,airbench --resnet50_image_size=224 --batch_size=128 \
    --rounds=2 --steps=5 --nocpu_tuning || rc=1
python3 bench/gpu_smoke.py || rc=1
exit $rc
