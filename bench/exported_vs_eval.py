"""Does an exported model compute what `--mode eval` computed? On every test image.

  python main.py --workdir runs/x --mode eval
  python main.py --workdir runs/x --mode export --format onnx      # and/or stablehlo
  python bench/exported_vs_eval.py runs/x                          # needs the real test set

Runs each export found in WORKDIR/export (model.onnx with onnxruntime alone, model.jax_export
with jax.export) on the test split, in the order of predictions_test.npz, and prints per format:

  AGREE format=<f> images=<n> argmax_agreement=<a> max_abs_difference=<d> top1=<t>
        eval_top1=<e> images_per_s=<r>
"""

import os
import pathlib
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # TensorFlow only reads the data

import numpy as np

from cifar100_flax.config import loading
from cifar100_flax.data import tfds_pipeline

_BATCH = 500


def _runner(path: pathlib.Path):
  if path.suffix == '.onnx':
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return lambda images: session.run(['probabilities'], {'images': images})[0]
  import jax
  return jax.export.deserialize(path.read_bytes()).call


def main(workdir: str) -> None:
  saved = np.load(pathlib.Path(workdir) / 'predictions_test.npz')
  test = tfds_pipeline.load_splits(loading.load_config(workdir), with_train=False)['test']
  if not np.array_equal(test.ids, saved['ids']):
    sys.exit('error: predictions_test.npz is not in the order of the test split')
  for name in ('model.onnx', 'model.jax_export'):
    path = pathlib.Path(workdir) / 'export' / name
    if not path.exists():
      continue
    run = _runner(path)
    start = time.perf_counter()
    probs = np.concatenate([np.asarray(run(test.images[i:i + _BATCH]))
                            for i in range(0, len(test), _BATCH)])
    seconds = time.perf_counter() - start
    agreement = (probs.argmax(1) == saved['probs'].argmax(1)).mean()
    print(f'AGREE format={path.suffix[1:]} images={len(probs)} argmax_agreement={agreement:.4f} '
          f'max_abs_difference={np.abs(probs - saved["probs"]).max():.2g} '
          f'top1={(probs.argmax(1) == test.labels).mean():.4f} '
          f'eval_top1={(saved["probs"].argmax(1) == test.labels).mean():.4f} '
          f'images_per_s={len(probs) / seconds:.0f}', flush=True)


if __name__ == '__main__':
  main(sys.argv[1])
