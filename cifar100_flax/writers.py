"""clu metric writers: TensorBoard + console from clu, and a JSON-lines history in the workdir.

clu has no writer to a plain file that pandas or jq can read, so `HistoryWriter` adds one.
"""

import json
import pathlib
from typing import Any, Mapping

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface


class HistoryWriter(interface.MetricWriter):
  """Appends one JSON object per write_scalars call to `history.jsonl`."""

  def __init__(self, path: pathlib.Path):
    self.path = path

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


def read_history(workdir: str) -> list[dict]:
  path = pathlib.Path(workdir) / 'history.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def create_writer(workdir: str, is_main_process: bool) -> metric_writers.MetricWriter:
  default = metric_writers.create_default_writer(workdir, just_logging=not is_main_process,
                                                 asynchronous=False)
  if not is_main_process:
    return default
  return metric_writers.MultiWriter([default, HistoryWriter(pathlib.Path(workdir) / 'history.jsonl')])
