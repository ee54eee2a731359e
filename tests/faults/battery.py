"""What the fault battery's cases share: main.py run as a user runs it, and what a clean failure
looks like (an exit status, one line that names the problem and the fix, no traceback)."""

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import REPO, saved_steps

TINY = ('--config=tests/tiny_config.py', '--config.cpu.conv_backend=xla',
        '--config.eval.every_steps=5')
# What the interpreter prints when something was not shut down cleanly.
_UNCLEAN = ('Traceback', 'Exception ignored', 'Fatal Python error', 'Segmentation fault')


@dataclasses.dataclass
class Outcome:
  code: int
  out: str
  err: str

  @property
  def lines(self) -> list[str]:
    """stderr's lines, less absl's notice that C++ logging has not started (TensorFlow's)."""
    return [line for line in self.err.splitlines()
            if line.strip() and 'before absl::InitializeLog' not in line]

  def __str__(self) -> str:
    return f'exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-5000:]}'


def environment(**extra: str) -> dict:
  # TFDS_DATA_DIR would win over the tiny data a run's config.json records (config/defaults.py).
  env = {k: v for k, v in os.environ.items()
         if k not in ('CIFAR100_FLAX_TRACEBACK', 'XLA_FLAGS', 'TFDS_DATA_DIR')}
  return {**env, 'TF_CPP_MIN_LOG_LEVEL': '3', 'TF_ENABLE_ONEDNN_OPTS': '0', 'PYTHONPATH': str(REPO),
          **extra}


def command(*args: str, fault: str | None = None) -> list[str]:
  """`python main.py ARGS`, or with a fault injected (tests/faults/faulty_main.py)."""
  if fault:
    return [sys.executable, '-m', 'tests.faults.faulty_main', fault, *args]
  return [sys.executable, 'main.py', *args]


def main_py(*args: str, fault: str | None = None, prefix: Sequence[str] = (),
            timeout: int = 300, env: dict[str, str] | None = None) -> Outcome:
  """`python main.py ARGS` (see `command`), with `env`'s variables added to its environment."""
  result = subprocess.run([*prefix, *command(*args, fault=fault)], cwd=REPO,
                          env=environment(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
  return Outcome(result.returncode, result.stdout, result.stderr)


def interrupted(*args: str, when: str, signals: Sequence[int], fault: str | None = None,
                timeout: int = 300) -> Outcome:
  """Runs main.py and sends `signals` (one after the other) once its stdout shows `when`."""
  process = subprocess.Popen(command(*args, fault=fault), cwd=REPO, env=environment(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, err = [], []
  readers = [threading.Thread(target=lambda s=s, b=b: b.extend(iter(lambda: s.read(1), '')))
             for s, b in ((process.stdout, out), (process.stderr, err))]
  for reader in readers:
    reader.start()
  deadline = time.time() + timeout
  while when not in ''.join(out) and process.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  for sig in signals:
    if process.poll() is None:
      process.send_signal(sig)
      time.sleep(0.05)
  try:
    process.wait(timeout=max(1, deadline - time.time()))
  finally:
    process.kill()
    for reader in readers:
      reader.join()
  assert when in ''.join(out), f'{when!r} never appeared:\n{"".join(out)}\n{"".join(err)}'
  return Outcome(process.returncode, ''.join(out), ''.join(err))


def assert_clean_exit(outcome: Outcome) -> None:
  text = outcome.out + outcome.err
  assert not any(sign in text for sign in _UNCLEAN), outcome


def assert_user_error(outcome: Outcome, *words: str, code: int = 1) -> str:
  """A failure as the battery wants it: exit status `code`, no traceback, and stderr one line
  that starts with 'error: ' and holds every one of `words`; returns that line."""
  assert outcome.code == code, outcome
  assert_clean_exit(outcome)
  assert len(outcome.lines) == 1, outcome
  line = outcome.lines[0]
  assert line.startswith('error: '), outcome
  for word in words:
    assert word in line, f'{word!r} not in {line!r}'
  return line


def assert_success(outcome: Outcome) -> None:
  assert outcome.code == 0, outcome
  assert_clean_exit(outcome)


def fingerprint(folder: pathlib.Path) -> dict[str, str]:
  """relative path -> sha256 of every file under `folder`: equal fingerprints, nothing changed."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def copy_run(run: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
  shutil.copytree(run, to, symlinks=True)
  return to


def steps_saved(workdir: pathlib.Path) -> list[int]:
  return saved_steps(workdir)


def saved_state(workdir: pathlib.Path, step: int | None = None) -> list[np.ndarray]:
  """Every array of the train state in `workdir`'s newest checkpoint (or that of `step`)."""
  step = step if step is not None else steps_saved(workdir)[-1]
  restored = ocp.PyTreeCheckpointer().restore(workdir / 'checkpoints' / str(step)
                                              / 'state')
  import jax
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(restored)]


def assert_same_state(a: pathlib.Path, b: pathlib.Path) -> None:
  assert steps_saved(a)[-1] == steps_saved(b)[-1]
  for x, y in zip(saved_state(a), saved_state(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


SIGNALS = {'SIGINT': signal.SIGINT, 'SIGTERM': signal.SIGTERM}


@contextlib.contextmanager
def mounted(folder, size='4m'):
  """A small tmpfs at `folder` (root only: the battery runs as root in CI)."""
  if os.geteuid() != 0 or shutil.which('mount') is None:
    pytest.skip('mounting a small file system needs root')
  folder.mkdir(parents=True, exist_ok=True)
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)]
                    ).returncode:
    pytest.skip('this machine does not let root mount a tmpfs')
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', str(folder)], check=True)
