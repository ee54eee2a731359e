"""Training on several devices of one process (fake CPU devices) gives the model of one."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO


def _run(workdir, devices):
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run([sys.executable, '-m', 'tests.mock_run', str(workdir)], cwd=REPO,
                        env=env, capture_output=True, text=True)
  assert done.returncode == 0, f'{devices} device(s): exit {done.returncode}\n{done.stderr[-3000:]}'
  return np.load(workdir / 'predictions_test.npz')['probs']


@pytest.mark.slow
def test_one_and_four_devices_train_the_same_model(tmp_path):
  """The global batch is split over 4 devices; BatchNorm still sees it whole."""
  one, four = _run(tmp_path / 'one', 1), _run(tmp_path / 'four', 4)
  np.testing.assert_allclose(one, four, atol=1e-4)
  assert (one.argmax(1) == four.argmax(1)).mean() >= 0.99
