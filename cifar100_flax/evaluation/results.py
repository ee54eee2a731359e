"""What `--mode eval` and training left in a workdir, read back for the report."""

import dataclasses
import hashlib
import io
import json
import pathlib
import zipfile
from collections.abc import Sequence

import ml_collections
import numpy as np

from cifar100_flax.config import loading
from cifar100_flax.errors import UserError
from cifar100_flax.training import writers

PREDICTIONS_HASH = 'predictions_sha256'  # eval_*.json's key for its predictions file's hash


@dataclasses.dataclass
class RunResults:
  """One evaluated run: its config, eval_test.json, test predictions and training history."""
  workdir: pathlib.Path
  name: str
  config: ml_collections.ConfigDict
  evaluation: dict  # eval_test.json
  probs: np.ndarray  # [N, classes], test order
  labels: np.ndarray
  ids: np.ndarray
  history: list[dict]

  @property
  def is_ensemble(self) -> bool:
    """An ensemble has no training of its own, nor one checkpoint."""
    return bool(self.evaluation.get('members'))


def run_names(workdirs: Sequence[str]) -> list[str]:
  """Each run's name: its folder's, with as many of the folders above it as tell apart runs in
  folders of one name (a/run and b/run); a run named twice is refused."""
  parts = [pathlib.Path(workdir).resolve().parts for workdir in workdirs]
  if len(set(parts)) < len(parts):
    raise UserError(f'a run is given twice ({" ".join(map(str, workdirs))}): name each run once')
  for depth in range(1, max(map(len, parts)) + 1):
    names = ['/'.join(p[-depth:]) for p in parts]
    if len(set(names)) == len(names):
      return names
  raise AssertionError('distinct paths have distinct names')


def load_run(workdir: str, config: ml_collections.ConfigDict | None = None,
             name: str | None = None) -> RunResults:
  """The run in `workdir`, named `name` (default: its folder's name)."""
  directory = pathlib.Path(workdir)
  evaluation_path = directory / 'eval_test.json'
  predictions_path = directory / 'predictions_test.npz'
  if not evaluation_path.exists() or not predictions_path.exists():
    raise UserError(f'{directory} has no test evaluation: run `python main.py --mode eval '
                    f'--workdir {directory} ...` first')
  again = f'evaluate the run again with `python main.py --mode eval --workdir {directory}`'
  try:
    evaluation = json.loads(evaluation_path.read_text())
    saved = predictions_path.read_bytes()
    with np.load(io.BytesIO(saved)) as predictions:
      probs, labels, ids = predictions['probs'], predictions['labels'], predictions['ids']
  except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f'{directory}\'s evaluation cannot be read ({evaluation_path.name} or '
                    f'{predictions_path.name}: {type(e).__name__}: {e}): {again}') from e
  if evaluation.get(PREDICTIONS_HASH, hash_of(saved)) != hash_of(saved):
    raise UserError(f'{evaluation_path} and {predictions_path.name} are of two different '
                    f'evaluations (one was interrupted, or a file was copied over): {again}')
  return RunResults(workdir=directory, name=name or directory.resolve().name,
                    config=config or loading.load_config(workdir), evaluation=evaluation,
                    probs=probs, labels=labels, ids=ids, history=writers.read_history(workdir))


def hash_of(predictions: bytes) -> str:
  """The fingerprint of a predictions_*.npz that eval_*.json records (as PREDICTIONS_HASH)."""
  return hashlib.sha256(predictions).hexdigest()
