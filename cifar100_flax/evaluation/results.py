"""What `--mode eval` and training left in a workdir, read back for the report."""

import dataclasses
import json
import pathlib
import zipfile

import ml_collections
import numpy as np

from cifar100_flax.config import loading
from cifar100_flax.errors import UserError
from cifar100_flax.training import writers


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


def load_run(workdir: str, config: ml_collections.ConfigDict | None = None) -> RunResults:
  directory = pathlib.Path(workdir)
  evaluation_path = directory / 'eval_test.json'
  predictions_path = directory / 'predictions_test.npz'
  if not evaluation_path.exists() or not predictions_path.exists():
    raise UserError(f'{directory} has no test evaluation: run `python main.py --mode eval '
                    f'--workdir {directory} ...` first')
  try:
    evaluation = json.loads(evaluation_path.read_text())
    with np.load(predictions_path) as predictions:
      probs, labels, ids = predictions['probs'], predictions['labels'], predictions['ids']
  except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f'{directory}\'s evaluation cannot be read ({evaluation_path.name} or '
                    f'{predictions_path.name}: {type(e).__name__}: {e}): evaluate the run again '
                    f'with `python main.py --mode eval --workdir {directory}`') from e
  return RunResults(workdir=directory, name=directory.resolve().name,
                    config=config or loading.load_config(workdir), evaluation=evaluation,
                    probs=probs, labels=labels, ids=ids, history=writers.read_history(workdir))
