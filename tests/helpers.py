"""What the tests share: a tiny, fast config and mock CIFAR-100 (tfds.testing.mock_data)."""

import contextlib
import functools
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.tiny_config import get_config as tiny_config  # noqa: F401  (shared from here)

MOCK_EXAMPLES = 200  # per split; the validation carve-out comes out of the training split
REPO = pathlib.Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def mocked_cifar(monkeypatch: pytest.MonkeyPatch):
  """Deterministic random CIFAR-100-shaped data; 'downloading' it is a no-op."""
  # Imported here, as each helper imports what it patches: conftest imports this module, and a
  # test that needs no TensorFlow should not pay for importing it.
  import tensorflow_datasets as tfds

  from cifar100_flax.data import tfds_pipeline
  monkeypatch.setattr(tfds_pipeline, '_why_offline', lambda: None)
  # tfds records the real split sizes, of which mock data has only MOCK_EXAMPLES.
  monkeypatch.setattr(tfds_pipeline, 'expected_examples', lambda builder, split: None)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    yield


def without_a_compiler(monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path) -> None:
  """From now on the oneDNN extension fails to build (into an empty `cache`), as on a machine
  without a C++ compiler; what this process had built is forgotten until the test ends."""
  from cifar100_flax.cpu import onednn
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  monkeypatch.setenv('CIFAR100_FLAX_CACHE', str(cache))
  for cached in (onednn._register, onednn.available):
    monkeypatch.setattr(onednn, cached.__name__, functools.cache(cached.__wrapped__))


def stop_after(monkeypatch: pytest.MonkeyPatch, count: int, stop: str = 'ctrl-c') -> None:
  """Crashes, or sends this process SIGINT (Ctrl-C), while fetching batch `count`."""
  from cifar100_flax.data import tfds_pipeline
  real = tfds_pipeline.train_batches

  def batches(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == count:
        if stop == 'crash':
          raise RuntimeError('simulated crash')
        os.kill(os.getpid(), signal.SIGINT)
      yield batch
  monkeypatch.setattr(tfds_pipeline, 'train_batches', batches)


def saved_steps(workdir: pathlib.Path) -> list[int]:
  """The steps of the checkpoints in `workdir`, oldest first."""
  folder = pathlib.Path(workdir) / 'checkpoints'
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def best_step(workdir: pathlib.Path) -> int | None:
  """The step of the checkpoint marked best (Orbax's metrics of each step), if any."""
  import json
  marked = [json.loads((pathlib.Path(workdir) / 'checkpoints' / str(step) / 'metrics' / 'metrics'
                        ).read_text())['best'] for step in saved_steps(workdir)]
  return max(marked) if marked and max(marked) >= 0 else None


def run_main(*args: str) -> subprocess.CompletedProcess:
  """`python main.py ARGS` in a new process, on mock CIFAR-100 (tests/mock_main.py)."""
  env = {key: value for key, value in os.environ.items() if key != 'CIFAR100_FLAX_TRACEBACK'}
  return subprocess.run([sys.executable, '-m', 'tests.mock_main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
