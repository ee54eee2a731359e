"""Where training's scalars go: TensorBoard events (clu) and a JSON-lines history in the workdir.

clu has no writer to a plain file that pandas or jq can read, so `HistoryWriter` adds one.
"""

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from cifar100_flax import files
from cifar100_flax.config import loading


class HistoryWriter:
  """Appends one JSON object per write_scalars call to `history.jsonl`.

  A run resumed from step `resumed_at` first drops the records after it (written before the
  interruption, and written again now), so that the history reads as one run; a run started
  afresh (`resumed_at` 0) drops every record of an earlier one. It has the methods of clu's
  MetricWriter that training calls, without subclassing it: importing any of clu.metric_writers
  imports TensorFlow, which runs on synthetic data do without.
  """

  def __init__(self, path: pathlib.Path, resumed_at: int = 0):
    self.path = path
    if path.exists():
      kept = [r for r in _records(path.read_text()) if r['step'] <= resumed_at]
      files.write_text(path, ''.join(f'{json.dumps(r)}\n' for r in kept))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(record) + '\n')

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _records(text: str) -> list[dict]:
  """The records of a history.jsonl; a last line cut short (a killed run) is left out."""
  records = []
  for line in text.splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def read_history(workdir: str) -> list[dict]:
  path = pathlib.Path(workdir) / 'history.jsonl'
  return _records(path.read_text()) if path.exists() else []


def tensorboard_tag(name: str) -> str:
  """TensorBoard's name for a scalar of the history: grouped by what it measures, so that
  TensorBoard shows a section each ('train_loss' -> 'train/loss', 'val_accuracy' ->
  'val/accuracy', 'learning_rate' -> 'train/learning_rate', 'epoch' -> 'progress/epoch')."""
  prefix, _, rest = name.partition('_')
  if prefix in ('train', 'val') and rest:
    return f'{prefix}/{rest}'
  return f'train/{name}' if name == 'learning_rate' else f'progress/{name}'


class _TensorBoard:
  """clu's SummaryWriter with the scalars under tensorboard_tag's names."""

  def __init__(self, workdir: str):
    from clu import metric_writers  # imports TensorFlow: only when asked for TensorBoard's events
    self.events = metric_writers.SummaryWriter(workdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.events.write_scalars(step, {tensorboard_tag(k): v for k, v in scalars.items()})

  def write_config(self, step: int, config: ml_collections.ConfigDict) -> None:
    """The config as text (TensorBoard's Text tab) and as hyperparameters (its HParams tab, where
    runs are compared by them)."""
    self.events.write_texts(step, {'config': f'```\n{config}\n```'})
    self.events.write_hparams({key: value if isinstance(value, int | float | str | bool)
                               else str(value)
                               for key, value in loading.flat_keys(config.to_dict()).items()})

  def flush(self) -> None:
    self.events.flush()

  def close(self) -> None:
    self.events.close()


def create_writer(workdir: str, config: ml_collections.ConfigDict, resumed_at: int = 0,
                  tensorboard: bool = True) -> Any:
  """A writer of history.jsonl and (with `tensorboard`, through TensorFlow) TensorBoard events in
  `workdir`, which begin with the config; from process 0 only (the terminal's line is
  console.py's); `resumed_at`: the step a resumed run starts from. Other processes get a writer
  that writes nothing."""
  if jax.process_index() != 0:
    return _Nowhere()
  history = HistoryWriter(pathlib.Path(workdir) / 'history.jsonl', resumed_at)
  if not tensorboard:
    return history
  from clu import metric_writers
  events = _TensorBoard(workdir)
  events.write_config(resumed_at, config)
  return metric_writers.MultiWriter([events, history])


class _Nowhere:
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    pass

  def close(self) -> None:
    pass
