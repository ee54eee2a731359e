"""clu metric writers: TensorBoard events from clu, and a JSON-lines history in the workdir.

clu has no writer to a plain file that pandas or jq can read, so `HistoryWriter` adds one.
"""

import json
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

from cifar100_flax import files


class HistoryWriter(interface.MetricWriter):
  """Appends one JSON object per write_scalars call to `history.jsonl`.

  A run resumed from step `resumed_at` first drops the records after it (written before the
  interruption, and written again now), so that the history reads as one run; a run started
  afresh (`resumed_at` 0) drops every record of an earlier one.
  """

  def __init__(self, path: pathlib.Path, resumed_at: int = 0):
    self.path = path
    if path.exists():
      kept = [r for r in _records(path.read_text()) if r['step'] <= resumed_at]
      files.write_text(path, ''.join(f'{json.dumps(r)}\n' for r in kept))

  def write_scalars(self, step: int, scalars: Mapping[str, interface.Scalar]) -> None:
    record = {'step': int(step), **{k: float(np.asarray(v)) for k, v in scalars.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(record) + '\n')

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Mapping[str, Any] | None = None) -> None:
    pass

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    pass

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    pass

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    pass

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    pass

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    pass

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    pass

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


def create_writer(workdir: str, resumed_at: int = 0) -> metric_writers.MetricWriter:
  """TensorBoard events and history.jsonl in `workdir`, from process 0 only (the terminal's line
  is console.py's); `resumed_at`: the step a resumed run starts from."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(workdir),
      HistoryWriter(pathlib.Path(workdir) / 'history.jsonl', resumed_at)])
