import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, devices):
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'JAX_PLATFORMS': 'cpu'}
  subprocess.run([sys.executable, '-m', 'tests.mock_run', str(workdir)], cwd=REPO, env=env,
                 check=True, capture_output=True)
  return np.load(workdir / 'predictions_test.npz')['probs']


@pytest.mark.slow
def test_one_and_four_devices_train_the_same_model(tmp_path):
  """The global batch is split over 4 devices; BatchNorm still sees it whole."""
  one, four = _run(tmp_path / 'one', 1), _run(tmp_path / 'four', 4)
  np.testing.assert_allclose(one, four, atol=1e-4)
  assert (one.argmax(1) == four.argmax(1)).mean() >= 0.99
