#!/usr/bin/env bash
# The accelerator check, around main.py, for a GPU machine that has JAX for CUDA, flax, optax,
# orbax and torch, but not TensorFlow, tensorflow-datasets, clu, ml_collections or dm-pix, and no
# network (this project's lent H100/H200s):
#
#   bash bench/gpu.sh wheels    # here, once: the missing pure-Python wheels into .whl/ (~1 MB)
#   bash bench/gpu.sh           # there, with .whl/ carried along (git ignores it): ~6 min
#
# (a) main.py on synthetic data (config.data.name='synthetic', no TensorFlow): ResNet-50 at 224 px
#     in bfloat16, 350 steps of 256 images, all layers trained (the training lines show images/s
#     and MFU: the step's FLOPs per second over the GPU's peak), then --mode eval and --mode
#     export (StableHLO);
# (b) bench/throughput.py: the jitted training step against the same network in PyTorch on the
#     same GPU, bfloat16 (AMP, channels-last) and float32 (TF32), ResNet-50 at 224 px and the
#     airbench network at 32 px, with MFU.
# Without a GPU it runs end to end all the same, smaller: (a) with configs/smoke.py; (b) skips,
# saying why (on a CPU, bench/throughput.py itself is the comparison). tests/data/test_synthetic.py
# runs it so, with TensorFlow unimportable. Exit status 1 if any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# What the image lacks (the rest of what main.py imports for train, eval and export is there:
# tqdm, wrapt, chex, pillow, matplotlib, safetensors; device/KINDS.md), as requirements.txt pins it.
WHEELS=(clu==0.0.12 ml-collections==1.1.0 dm-pix==0.4.5)
if [ "${1:-}" = wheels ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${WHEELS[@]}"
  exit
fi
if ls .whl/*.whl > /dev/null 2>&1 && ! python3 -c 'import clu, ml_collections, dm_pix' 2> /dev/null
then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
WORK=${GPU_CHECK_WORKDIR:-$(mktemp -d)}
rc=0
part() { echo; echo "== $*"; }
if python3 -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2> /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  TRAIN=(--config=configs/resnet50.py --config.model.pretrained= --config.data.image_size=224
         --config.model.dtype=bfloat16 --config.data.batch_size=256 --config.eval.batch_size=500
         --config.train.num_epochs=2 --config.optim.learning_rate=0.2 --config.optim.backbone_frozen_epochs=0)
  gpu=1
else
  TRAIN=(--config=configs/smoke.py --config.train.num_epochs=1)
  gpu=0
fi
part "(a) main.py on synthetic data: ${TRAIN[*]}"
python3 main.py "${TRAIN[@]}" --config.data.name=synthetic --workdir="$WORK/main" || rc=1
python3 main.py --mode=eval --workdir="$WORK/main" || rc=1
python3 main.py --mode=export --format=stablehlo --workdir="$WORK/main" || rc=1
part "(b) JAX against PyTorch"
if [ $gpu = 1 ]; then
  # Both frameworks in one process: JAX takes half the GPU's memory, not its default 75%.
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 python3 bench/throughput.py --models=resnet50,airbench \
      --resnet50_image_size=224 --batch_size=256 --rounds=3 --steps=10 || rc=1
else
  echo "SKIP: no CUDA device for JAX (the comparison on a GPU needs one; on this CPU run" \
       "python bench/throughput.py)"
fi
echo
[ $rc = 0 ] && echo "GPU CHECK ok (workdir $WORK)" || echo "GPU CHECK FAILED (workdir $WORK)"
exit $rc
