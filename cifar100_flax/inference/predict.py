"""Classifies the user's own pictures with trained workdirs: a table, and predictions.csv or .json.

The images go through what `--mode eval` runs (the run's preprocessing, image_size and
test-time augmentation, on every device), so a CIFAR test image saved as a PNG gets the
probabilities eval gave it; several workdirs predict as their ensemble (the mean of their
probabilities).
"""

import csv
import json
import pathlib
import sys
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from cifar100_flax import console, files
from cifar100_flax.data import cifar100
from cifar100_flax.errors import UsageError
from cifar100_flax.inference import image_files
from cifar100_flax.training import restore, sharding, steps

_TABLE_ROWS = 50  # a large folder's table shows this many; the file has them all


class Classifier:
  """A trained run as a function: uint8 images [N, 32, 32, 3] -> class probabilities [N, 100],
  through what `--mode eval` runs (preprocessing, image size, test-time augmentation), on every
  device. Restored once (the best checkpoint), then called as often as wanted."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.create_mesh()
    with console.phase(f'restoring {workdir}'):
      state, self.progress = restore.restore_model(config, workdir)
    self.state = sharding.replicate(state, self.mesh)
    self.eval_step = steps.jit_eval_step(config)

  def __call__(self, pictures: np.ndarray) -> np.ndarray:
    # Unknown labels: evaluate_split's metrics are ignored, only its probabilities are used.
    split = cifar100.Split(pictures, np.zeros(len(pictures), np.int32),
                           np.zeros(len(pictures), np.int32), np.arange(len(pictures)).astype(str))
    return steps.evaluate_split(self.eval_step, self.state, split, self.config.eval.batch_size,
                                self.mesh, f'classifying {console.plural(len(split), "image")}'
                                )[1]


def probabilities(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                  pictures: np.ndarray) -> np.ndarray:
  """[N, 100] class probabilities of uint8 [N, 32, 32, 3] `pictures`: the mean over the runs."""
  return np.mean([Classifier(config, workdir)(pictures)
                  for config, workdir in zip(configs, workdirs)], axis=0)


def check_arguments(top_k: int, output: str) -> None:
  """Raises UsageError if `top_k` or `output` (see predict) cannot be."""
  if not 1 <= top_k <= cifar100.NUM_CLASSES:
    raise UsageError(f'--top_k={top_k}: must be between 1 and {cifar100.NUM_CLASSES}')
  if pathlib.Path(output).suffix.lower() not in ('.csv', '.json'):
    raise UsageError(f'--output={output}: predictions are written as .csv or .json')


def predict(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
            patterns: Sequence[str], output: str, top_k: int = 5) -> list[image_files.Failure]:
  """Classifies the images `patterns` name (see image_files.find), prints a table and writes
  `output` (.csv or .json). Returns the paths that could not be read, each already reported in
  one line; raises UsageError if none could."""
  check_arguments(top_k, output)
  paths, failures = image_files.find(patterns)
  read_paths, pictures, unreadable = image_files.read_all(paths)
  failures += unreadable
  if jax.process_index() == 0:
    for failure in failures:
      print(f'error: {failure.path}: {failure.reason}', file=sys.stderr, flush=True)
  if not read_paths:
    raise UsageError(f'no image could be read from {" ".join(patterns)} (images are '
                     f'{", ".join(image_files.SUFFIXES)} files, or folders and globs of them)')
  rows = _rows(read_paths, probabilities(configs, workdirs, pictures), top_k)
  if jax.process_index() == 0:
    _print_table(rows, output)
    _write(rows, pathlib.Path(output))
  return failures


def _rows(paths: Sequence[str], probs: np.ndarray, top_k: int) -> list[dict]:
  # A superclass's probability: the sum of its classes'.
  coarse = probs @ np.eye(cifar100.NUM_COARSE_CLASSES, dtype=probs.dtype)[cifar100.FINE_TO_COARSE]
  rows = []
  for path, p, c in zip(paths, probs, coarse):
    top = np.argsort(-p, kind='stable')[:top_k]
    rows.append({'file': path,
                 'top': [{'class': cifar100.CLASS_NAMES[i], 'probability': float(p[i])}
                         for i in top],
                 'superclass': {'class': cifar100.COARSE_CLASS_NAMES[int(np.argmax(c))],
                                'probability': float(np.max(c))}})
  return rows


def _print_table(rows: list[dict], output: str) -> None:
  shown = rows[:_TABLE_ROWS]
  tops = [', '.join(f"{t['class']} {t['probability']:.2f}" for t in row['top']) for row in shown]
  file_width = max(len(row['file']) for row in shown)
  top_width = max(len(top) for top in tops)
  print(f"{'file':<{file_width}}  {'top-' + str(len(rows[0]['top'])):<{top_width}}  superclass")
  for row, top in zip(shown, tops):
    superclass = f"{row['superclass']['class']} {row['superclass']['probability']:.2f}"
    print(f"{row['file']:<{file_width}}  {top:<{top_width}}  {superclass}")
  if len(rows) > len(shown):
    print(f'... and {len(rows) - len(shown):,} more in {output}')


def _write(rows: list[dict], output: pathlib.Path) -> None:
  output.parent.mkdir(parents=True, exist_ok=True)
  if output.suffix.lower() == '.json':
    files.write_text(output, json.dumps(rows, indent=1))
  else:
    k = len(rows[0]['top'])
    with files.replaced(output) as path, path.open('w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['file'] + [f'{name}_{i}' for i in range(1, k + 1)
                                  for name in ('class', 'probability')]
                      + ['superclass', 'superclass_probability'])
      for row in rows:
        writer.writerow([row['file']] + [v for t in row['top'] for v in (t['class'],
                                                                          f"{t['probability']:.6g}")]
                        + [row['superclass']['class'], f"{row['superclass']['probability']:.6g}"])
  console.say(f'wrote {console.plural(len(rows), "prediction")} to {output}')
