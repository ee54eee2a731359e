"""Runs main.py on mock CIFAR-100 with JAX presenting its platform as a GPU plugin would, on this
CPU (the accelerator rehearsal, tests/test_accelerator_rehearsal.py):

  python -m tests.accelerator_main --mode train --config=... --workdir=W

As JAX does with CUDA (jax-cuda12-plugin) or TPU (libtpu): a PJRT plugin is installed (here one
that registers no backend, so that JAX still computes on the CPU), `jax.default_backend()` is
'gpu', and `Lowered.cost_analysis()` returns None (jax/_src/stages.py, where pxla.py raises
NotImplementedError for plugins). With $REHEARSAL_RECORD=DIR it records in DIR what a CPU-only
path would show: each program compiled (the lowered text), whether the process tuning ran, and
$XLA_FLAGS at exit. $REHEARSAL_STOP_AT_BATCH=K: Ctrl-C while training fetches batch K (from 0).
"""

import atexit
import itertools
import os
import pathlib
import runpy
import sys
import tempfile

import jax
import pytest

from cifar100_flax.cpu import tuning
from tests.helpers import REPO, mocked_cifar, stop_after


def _install_plugin() -> None:
  """A `jax_plugins` module, found as JAX finds CUDA's (jax._src.xla_bridge)."""
  root = pathlib.Path(tempfile.mkdtemp())
  (root / 'jax_plugins' / 'xla_cuda12').mkdir(parents=True)
  (root / 'jax_plugins' / 'xla_cuda12' / '__init__.py').write_text('def initialize():\n  pass\n')
  sys.path.insert(0, str(root))
  atexit.register(lambda: [p.unlink() for p in root.rglob('*.py')])


def _present_as_gpu(patch: pytest.MonkeyPatch, record: pathlib.Path | None) -> None:
  patch.setattr(jax, 'default_backend', lambda: 'gpu')
  patch.setattr(jax.stages.Lowered, 'cost_analysis', lambda self: None)
  if record is None:
    return
  record.mkdir(parents=True, exist_ok=True)
  compile_lowered, configure = jax.stages.Lowered.compile, tuning.configure
  count = itertools.count()

  def recording_compile(self, *args, **kwargs):
    (record / f'compiled_{next(count)}.mlir').write_text(self.as_text())
    return compile_lowered(self, *args, **kwargs)

  def recording_configure():
    (record / 'tuning_configured').touch()
    configure()

  patch.setattr(jax.stages.Lowered, 'compile', recording_compile)
  patch.setattr(tuning, 'configure', recording_configure)
  atexit.register(lambda: (record / 'xla_flags').write_text(os.environ.get('XLA_FLAGS', '')))


if __name__ == '__main__':
  sys.argv = ['main.py', *sys.argv[1:]]
  _install_plugin()
  record = os.environ.get('REHEARSAL_RECORD')
  with pytest.MonkeyPatch.context() as patch, mocked_cifar(patch):
    _present_as_gpu(patch, pathlib.Path(record) if record else None)
    if os.environ.get('REHEARSAL_STOP_AT_BATCH'):
      stop_after(patch, int(os.environ['REHEARSAL_STOP_AT_BATCH']))
    runpy.run_path(str(REPO / 'main.py'), run_name='__main__')
