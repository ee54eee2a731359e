"""Where training's scalars go: TensorBoard events (clu) and a JSON-lines history in the workdir.

clu has no writer to a plain file that pandas or jq can read, so `HistoryWriter` adds one.
"""

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from cifar100_flax import files


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


def create_writer(workdir: str, resumed_at: int = 0, tensorboard: bool = True) -> Any:
  """A writer of history.jsonl and (with `tensorboard`, through TensorFlow) TensorBoard events in
  `workdir`, from process 0 only (the terminal's line is console.py's); `resumed_at`: the step a
  resumed run starts from. Other processes get a writer that writes nothing."""
  if jax.process_index() != 0:
    return _Nowhere()
  history = HistoryWriter(pathlib.Path(workdir) / 'history.jsonl', resumed_at)
  if not tensorboard:
    return history
  from clu import metric_writers  # imports TensorFlow: only when asked for TensorBoard's events
  return metric_writers.MultiWriter([metric_writers.SummaryWriter(workdir), history])


class _Nowhere:
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    pass

  def close(self) -> None:
    pass
