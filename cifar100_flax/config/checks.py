"""Checks a config before anything is compiled, so that a bad value fails in a second, clearly.

It builds no model's layers beyond their shapes and reads no data; it does ask JAX for the device
count (batch sizes must divide by it) and checks that named weight files exist."""

import math
import re

import jax
import ml_collections

from cifar100_flax import models
from cifar100_flax.cpu import onednn
from cifar100_flax.data import cifar100
from cifar100_flax.errors import ConfigError
from cifar100_flax.models import pretrained
from cifar100_flax.optim import optimizers, schedules

AUTO_AUGMENTS = ('', 'rand', 'trivial')


EARLY_STOPPING_METRICS = {'val_accuracy': 'max', 'val_top5_accuracy': 'max', 'val_loss': 'min'}


# CIFAR's images are 32 px; past this side a training batch no longer fits in memory (128 images
# at 1024 px are 1.6 GB of float32 before the first layer).
MAX_IMAGE_SIZE = 1024


NUM_TEST_EXAMPLES = 10_000  # a larger evaluation batch would only be padding


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _require_regex(key: str, pattern: str) -> None:
  try:
    re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ConfigError(f'config.{key}: {pattern!r} is not a regex: {e}') from e


def _require_finite(tree: dict, prefix: str = 'config.') -> None:
  for key, value in tree.items():
    if isinstance(value, dict):
      _require_finite(value, f'{prefix}{key}.')
    _require(not isinstance(value, float) or math.isfinite(value),
             f'{prefix}{key} must be a finite number, got {value}')


def _validate_image_size_schedule(schedule: tuple) -> None:
  example = 'e.g. ((0, 24), (8, 32))'
  for pair in schedule:
    _require(isinstance(pair, (tuple, list)) and len(pair) == 2
             and isinstance(pair[0], (int, float)) and pair[0] >= 0
             and isinstance(pair[1], int) and 0 < pair[1] <= MAX_IMAGE_SIZE,
             f'config.image_size_schedule must hold (start epoch >= 0, side in [1, '
             f'{MAX_IMAGE_SIZE}]) pairs, {example}; got {pair!r}')
  starts = [start for start, _ in schedule]
  _require(starts == sorted(set(starts)),
           f'config.image_size_schedule: the start epochs must increase, {example}; got {starts}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first key whose value cannot work."""
  _require_finite(config.to_dict())
  models.create_model(config.model, cifar100.NUM_CLASSES, config.dtype, **config.model_kwargs)
  _require(config.conv_backend in onednn.BACKENDS,
           f'config.conv_backend={config.conv_backend!r} is not one of {list(onednn.BACKENDS)}')
  _require(config.cpu_speed_path is not False or config.conv_backend != 'onednn',
           'config.conv_backend=onednn is part of the CPU speed path, which '
           'config.cpu_speed_path=False turns off: drop one of the two')
  _require(config.optimizer in optimizers.OPTIMIZERS,
           f'config.optimizer={config.optimizer!r} is unknown; choose one of '
           f'{list(optimizers.OPTIMIZERS)}')
  _require(config.schedule in schedules.SCHEDULES,
           f'config.schedule={config.schedule!r} is unknown; choose one of '
           f'{sorted(schedules.SCHEDULES)}')
  _require(config.early_stopping_metric in EARLY_STOPPING_METRICS,
           f'config.early_stopping_metric={config.early_stopping_metric!r} is unknown; choose one '
           f'of {sorted(EARLY_STOPPING_METRICS)}')
  _require(config.learning_rate > 0,
           f'config.learning_rate must be > 0, got {config.learning_rate}')
  _require(config.num_epochs > 0, f'config.num_epochs must be > 0, got {config.num_epochs}')
  devices = jax.device_count()
  for key in ('batch_size', 'eval_batch_size'):
    value = config[key]
    _require(value > 0, f'config.{key} must be > 0, got {value}')
    _require(value % devices == 0,
             f'config.{key}={value} must be divisible by the number of devices ({devices})')
  _require(config.synthetic_size >= 0,
           f'config.synthetic_size must be >= 0 (0: CIFAR-100\'s), got {config.synthetic_size}')
  train_examples = cifar100.train_examples(config)
  _require(config.batch_size <= train_examples - max(config.validation_size, 0),
           f'config.batch_size={config.batch_size} is more than the '
           f'{train_examples - max(config.validation_size, 0):,} training images '
           f'(after config.validation_size={config.validation_size})')
  _require(config.eval_batch_size <= NUM_TEST_EXAMPLES,
           f'config.eval_batch_size must be at most {NUM_TEST_EXAMPLES:,} (the test split; a '
           f'larger batch is padding), got {config.eval_batch_size}')
  largest_validation = train_examples - config.batch_size
  _require(0 <= config.validation_size < largest_validation,
           f'config.validation_size must be in [0, {largest_validation}), '
           f'got {config.validation_size}')
  _require(config.validation_size or not config.early_stopping_patience,
           'config.validation_size=0 leaves nothing to stop early on: set '
           'config.early_stopping_patience=0')
  for key in ('weight_decay', 'grad_clip_norm', 'warmup_epochs', 'early_stopping_patience',
              'early_stopping_min_delta', 'eval_every_steps', 'momentum', 'lookahead_every',
              'muon_learning_rate', 'eval_translate_tta'):
    _require(config[key] >= 0, f'config.{key} must be >= 0, got {config[key]}')
  _require(0 <= config.label_smoothing < 1,
           f'config.label_smoothing must be in [0, 1), got {config.label_smoothing}')
  _require(0 <= config.muon_momentum < 1,
           f'config.muon_momentum must be in [0, 1), got {config.muon_momentum}')
  _require(0 <= config.lookahead_decay <= 1,
           f'config.lookahead_decay must be in [0, 1], got {config.lookahead_decay}')
  _require(config.log_every_steps > 0,
           f'config.log_every_steps must be > 0, got {config.log_every_steps}')
  _require(config.checkpoint_keep > 0,
           f'config.checkpoint_keep must be > 0, got {config.checkpoint_keep}')
  _require(0 < config.plateau_factor < 1,
           f'config.plateau_factor must be in (0, 1), got {config.plateau_factor}')
  _require(config.normalisation in cifar100.NORMALISATIONS,
           f'config.normalisation={config.normalisation!r} is unknown; choose one of '
           f'{sorted(cifar100.NORMALISATIONS)}')
  for key in ('image_size', 'backbone_frozen_epochs', 'backbone_learning_rate_multiplier'):
    _require(config[key] >= 0, f'config.{key} must be >= 0, got {config[key]}')
  for key in ('image_size', 'eval_image_size'):
    _require(config[key] <= MAX_IMAGE_SIZE,
             f'config.{key} must be at most {MAX_IMAGE_SIZE} (CIFAR images are 32 px; larger '
             f'batches no longer fit in memory), got {config[key]}')
  _validate_image_size_schedule(config.image_size_schedule)
  _require(not config.pretrained or config.model in pretrained.CONVERTERS
           or config.pretrained.endswith('.msgpack'),
           f'config.pretrained: no converter for model {config.model!r}; there are '
           f'{sorted(pretrained.CONVERTERS)}')
  if config.pretrained:
    pretrained.check_source(config.pretrained)
  _require_regex('frozen_params', config.frozen_params)
  for pair in config.learning_rate_multipliers:
    _require(len(pair) == 2 and isinstance(pair[1], (int, float)) and pair[1] > 0,
             f'config.learning_rate_multipliers must hold (regex, multiplier > 0) pairs, '
             f'got {pair!r}')
    _require_regex('learning_rate_multipliers', pair[0])
  _require(config.init_sample_size > 0,
           f'config.init_sample_size must be > 0, got {config.init_sample_size}')
  augment = config.augment
  _require(augment.auto_augment in AUTO_AUGMENTS,
           f'config.augment.auto_augment={augment.auto_augment!r} is unknown; choose one of '
           f'{list(AUTO_AUGMENTS)}')
  for key, value in augment.items():
    _require(key == 'auto_augment' or value >= 0,
             f'config.augment.{key} must be >= 0, got {value}')
  for key in ('rand_augment_magnitude', 'random_erasing', 'cutmix_switch_prob', 'mix_prob'):
    _require(augment[key] <= 1, f'config.augment.{key} must be in [0, 1], got {augment[key]}')
  _require(0 <= config.ema_decay < 1, f'config.ema_decay must be in [0, 1), got {config.ema_decay}')
  for key in ('eval_image_size', 'recalibration_images'):
    _require(config[key] >= 0, f'config.{key} must be >= 0, got {config[key]}')
