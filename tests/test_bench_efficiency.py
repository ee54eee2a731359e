"""bench/efficiency.py's parts that decide its figures: the derived peak per core and cycle, the
convolutions it finds in a model, and the FLOPs it credits each with."""

import importlib.util
import sys

import pytest

from tests.helpers import REPO
from tests.tiny_config import get_config

sys.path.insert(0, str(REPO / 'bench'))  # as `python bench/efficiency.py` finds its neighbours
_spec = importlib.util.spec_from_file_location('efficiency', REPO / 'bench' / 'efficiency.py')
efficiency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(efficiency)


@pytest.mark.parametrize('vendor, flags, float32, bfloat16', [
    ('GenuineIntel', {'avx512f', 'avx512_bf16', 'amx_bf16'}, 64, 1024),  # Sapphire Rapids
    ('AuthenticAMD', {'avx512f', 'avx512_bf16', 'fma'}, 32, 64),  # Zen 4: 256-bit units
    ('GenuineIntel', {'avx2', 'fma'}, 32, 32),  # no bfloat16 arithmetic: float32's rate
])
def test_flops_a_core_does_a_cycle(vendor, flags, float32, bfloat16):
  assert efficiency.flops_per_cycle('float32', vendor, flags) == float32
  assert efficiency.flops_per_cycle('bfloat16', vendor, flags) == bfloat16


def test_the_convolutions_of_a_model_as_its_forward_pass_meets_them():
  config = get_config(model='airbench')
  config.model.kwargs = dict(widths=(8, 16, 32), convs_per_stage=2,
                             kernel_sizes=(1, 1, 3, 3, 2, 3))
  config.data.batch_size = 4
  found = efficiency.convolutions(config, side=24)
  # The frozen whitening (2x2, VALID) makes 23x23x24 maps; each stage pools after its first.
  assert [(c.input_shape[1:], c.kernel_shape) for c in found] == [
      ((23, 23, 24), (1, 1, 24, 8)), ((11, 11, 8), (1, 1, 8, 8)),
      ((11, 11, 8), (3, 3, 8, 16)), ((5, 5, 16), (3, 3, 16, 16)),
      ((5, 5, 16), (2, 2, 16, 32)), ((2, 2, 32), (3, 3, 32, 32))]
  assert found[2].training_flops() == 3 * 2 * 4 * 11 * 11 * 9 * 8 * 16


def test_the_optimiser_update_is_timed_alone():
  config = get_config(model='airbench', optimizer='muon')
  config.model.kwargs = dict(widths=(8, 16, 32), convs_per_stage=2)
  config.data.batch_size = 4
  assert 0 < efficiency.update_seconds(config, calls=2) < 10
