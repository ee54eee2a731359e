import os
import subprocess
import sys

import pytest

from cifar100_flax.config import checks, defaults, loading
from cifar100_flax.errors import ConfigError, UserError
from tests.helpers import REPO, tiny_config, without_a_compiler

SHIPPED = sorted(p.name for p in (REPO / 'configs').glob('*.py'))


def test_every_config_is_shipped_and_tested():
  assert SHIPPED == ['cnn.py', 'cnn_fast.py', 'cnn_speedrun.py', 'efficientnet_lite0.py',
                     'efficientnet_lite1.py', 'resnet18.py', 'resnet50.py', 'smoke.py',
                     'vit_b16.py']


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_configs_load_by_path_and_are_valid(name):
  config = loading.config_from_file(str(REPO / 'configs' / name))
  checks.validate(config)
  assert set(config) == set(defaults.get_config())  # every key in defaults.py, no new ones


def test_a_missing_config_file_is_named():
  with pytest.raises(ConfigError, match='nope.py: no such config file'):
    loading.config_from_file('configs/nope.py')


def test_validating_builds_nothing(monkeypatch, tmp_path):
  """Checking a config is pure: it does not build the oneDNN extension (nor fail without it)."""
  without_a_compiler(monkeypatch, tmp_path)
  checks.validate(tiny_config(conv_backend='onednn'))
  assert not any(tmp_path.iterdir())
  with pytest.raises(ConfigError, match="conv_backend='mkl' is not one of"):
    checks.validate(tiny_config(conv_backend='mkl'))


@pytest.mark.parametrize('key, value, message', [
    ('learning_rate', -1.0, 'config.optim.learning_rate must be > 0'),
    ('batch_size', 0, 'config.data.batch_size must be > 0'),
    ('eval_batch_size', -8, 'config.eval.batch_size must be > 0'),
    ('num_epochs', 0, 'config.train.num_epochs must be > 0'),
    ('model', 'vgg77', "config.model.name='vgg77' is not a known model"),
    ('optimizer', 'lion', "config.optim.name='lion' is unknown"),
    ('schedule', 'linear', "config.schedule.name='linear' is unknown"),
    ('dtype', 'float8', "config.model.dtype='float8' is not supported"),
    ('early_stopping_metric', 'val_f1', "config.early_stopping.metric='val_f1' is unknown"),
    ('validation_size', -1, 'config.data.validation_size must be in'),
    ('validation_size', 0, 'nothing to stop early on'),
    ('label_smoothing', 1.0, 'config.train.label_smoothing must be in'),
    ('weight_decay', -0.1, 'config.optim.weight_decay must be >= 0'),
    ('frozen_params', '(unclosed', 'config.optim.frozen_params: .* is not a regex'),
    ('learning_rate_multipliers', (('bias$', -1.0),),
     'must hold \\(regex, multiplier > 0\\) pairs'),
    ('learning_rate_multipliers', (('[bias', 2.0),),
     'config.optim.learning_rate_multipliers: .* is not a regex'),
    ('init_sample_size', 0, 'config.model.init_sample_size must be > 0'),
    ('normalisation', 'zca', "config.data.normalisation='zca' is unknown"),
    ('image_size', -1, 'config.data.image_size must be >= 0'),
    ('pretrained', 'weights.pth', "config.model.pretrained: no converter for model 'cnn'"),
    ('muon_momentum', 1.0, 'config.optim.muon.momentum must be in'),
    ('muon_learning_rate', -0.1, 'config.optim.muon.learning_rate must be >= 0'),
    ('image_size_schedule', ((0, 24), (8, 0)), 'must hold \\(start epoch >= 0, side in'),
    ('image_size_schedule', ((0, 24.5),), 'must hold \\(start epoch >= 0, side in'),
    ('image_size_schedule', ((8, 32), (0, 24)), 'the start epochs must increase'),
    # issue 39, 14: a negative rate trained, a negative scale or a vanished image was a traceback.
    ('triangular_start', -0.5, 'config.schedule.triangular_start must be in \\[0, 1\\]'),
    ('triangular_end', 1.5, 'config.schedule.triangular_end must be in \\[0, 1\\]'),
    ('piecewise_scale', 0.0, 'config.schedule.piecewise_scale must be in \\(0, 1\\]'),
    ('piecewise_boundaries', (0.75, 0.5), 'piecewise_boundaries must be increasing fractions'),
    ('piecewise_boundaries', (0.5, 1.5), 'piecewise_boundaries must be increasing fractions'),
    ('plateau_patience', -1, 'config.schedule.plateau_patience must be >= 0'),
    ('image_size', 1, "1-pixel images \\(config.data.image_size\\) are too small for model 'cnn'"
                      '.* at least 2'),
    ('eval_image_size', 1, '1-pixel images \\(config.eval.image_size\\) are too small'),
    ('image_size_schedule', ((0, 1), (1, 32)), '\\(config.data.image_size_schedule\\) are too'),
    ('augment.rand_augment_ops', 15, 'config.augment.rand_augment_ops must be at most 14'),
    ('augment.crop_padding', 33, 'config.augment.crop_padding must be at most 32'),
    ('augment.cutout_size', 40, 'config.augment.cutout_size must be at most 32'),
    ('augment.zoom', 1.0, 'config.augment.zoom must be < 1'),
    ('augment.shear_degrees', 90.0, 'config.augment.shear_degrees must be < 90'),
])
def test_impossible_values_are_named(key, value, message):
  with pytest.raises(ConfigError, match=message):
    checks.validate(tiny_config(**{key: value}))


def test_negative_augmentation_strength_is_named():
  config = tiny_config()
  config.augment.cutout_size = -4
  with pytest.raises(ConfigError, match='config.augment.cutout_size must be >= 0'):
    checks.validate(config)


def _main(*flags):
  env = {**os.environ, 'TFDS_DATA_DIR': '/nonexistent'}
  return subprocess.run([sys.executable, 'main.py', '--config', 'configs/smoke.py',
                         '--workdir', '/nonexistent/run', *flags],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('flag, message', [
    ('--config.optim.learning_rate=-1', 'config.optim.learning_rate must be > 0'),
    ('--config.no_such_key=1', 'no_such_key'),
    ('--config.data.batch_size=abc', 'flag --config.data.batch_size=abc'),
])
def test_main_reports_bad_flags_in_one_line_without_traceback(flag, message):
  result = _main(flag)
  assert result.returncode != 0
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_main_names_a_missing_config_file_in_one_line():
  result = subprocess.run([sys.executable, 'main.py', '--config', 'configs/nope.py', '--workdir',
                           '/nonexistent/run'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      'error: --config=configs/nope.py: no such file (the configs are in configs/*.py)']


def test_main_asks_an_ensemble_where_to_write():
  result = _main('--workdir', '/nonexistent/other', '--mode', 'eval')
  assert result.returncode != 0
  assert 'needs --output=DIR' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('overrides, message', [
    (dict(frozen_params='^no_such_layer/'), "config.optim.frozen_params: '\\^no_such_layer/' "
                                            'matches no parameter'),
    (dict(learning_rate_multipliers=(('^head/', 2.0),)),
     'config.optim.learning_rate_multipliers: .* matches no parameter'),
    (dict(backbone_frozen_epochs=1.0), 'the model has no classifier head named fc'),
])
def test_what_the_optimiser_names_in_the_model_is_checked_before_training(overrides, message):
  with pytest.raises(ConfigError, match=message):
    checks.validate(tiny_config(**overrides))


def test_the_smallest_side_a_model_takes_is_named():
  """issue 39, 14: six 2x2 poolings leave nothing of CIFAR's 32 pixels."""
  config = tiny_config()
  config.model.kwargs.widths = (8,) * 6
  with pytest.raises(ConfigError, match='32-pixel images .* at least 64'):
    checks.validate(config)


def test_pretrained_weights_are_asked_for_only_where_a_run_starts(tmp_path):
  """issue 39, 12: read at step 0 only, they may be gone from a run that has checkpoints."""
  config = tiny_config(pretrained=str(tmp_path / 'gone.msgpack'))
  checks.validate(config)
  with pytest.raises(UserError, match='gone.msgpack: no such weights file'):
    loading.check_start(config, str(tmp_path / 'run'))
  (tmp_path / 'run' / 'checkpoints' / '5').mkdir(parents=True)
  loading.check_start(config, str(tmp_path / 'run'))
