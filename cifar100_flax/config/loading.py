"""Configs by path and by run: a configs/*.py file loaded as `--config` does, the config a run
was trained with (its config.json, keys added since filled with their defaults, a flat one of
before the nesting mapped to its places, checked as --config is), and the checks before a run
trains: that a resume does not train something else, and that a start can have its weights."""

import importlib.util
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from cifar100_flax.config import checks, defaults
from cifar100_flax.errors import ConfigError
from cifar100_flax.models import pretrained

# Keys (and subtrees) a resumed run may change, and a trained run's config.json may be given anew
# for a command (--config.KEY=VALUE without --config): they decide where data and weights come
# from and how the run is logged and computed, not what it trains (the pretrained weights are read
# at step 0 only, so a run resumes on a machine where they are elsewhere).
FREE_ON_RESUME = ('data.dir', 'eval.batch_size', 'train.log_every_steps', 'cpu', 'checkpoint.keep',
                  'model.init_sample_size', 'model.pretrained')
# Each key of the flat config of before the nesting (runs' config.json files, --config.KEY flags)
# -> its place now.
FLAT_KEYS = {
    'model': 'model.name', 'model_kwargs': 'model.kwargs', 'pretrained': 'model.pretrained',
    'dtype': 'model.dtype', 'init_sample_size': 'model.init_sample_size',
    'cpu_speed_path': 'cpu.speed_path', 'conv_backend': 'cpu.conv_backend',
    'xla_cpu_options': 'cpu.xla_options',
    'dataset': 'data.name', 'synthetic_size': 'data.synthetic_size', 'data_dir': 'data.dir',
    'validation_size': 'data.validation_size', 'split_seed': 'data.split_seed',
    'shuffle_seed': 'data.shuffle_seed', 'batch_size': 'data.batch_size',
    'normalisation': 'data.normalisation', 'image_size': 'data.image_size',
    'image_size_schedule': 'data.image_size_schedule',
    'optimizer': 'optim.name', 'learning_rate': 'optim.learning_rate',
    'momentum': 'optim.momentum', 'nesterov': 'optim.nesterov',
    'weight_decay': 'optim.weight_decay', 'grad_clip_norm': 'optim.grad_clip_norm',
    'frozen_params': 'optim.frozen_params',
    'learning_rate_multipliers': 'optim.learning_rate_multipliers',
    'backbone_frozen_epochs': 'optim.backbone_frozen_epochs',
    'backbone_learning_rate_multiplier': 'optim.backbone_learning_rate_multiplier',
    'muon_learning_rate': 'optim.muon.learning_rate', 'muon_momentum': 'optim.muon.momentum',
    'muon_normalise': 'optim.muon.normalise', 'lookahead_every': 'optim.lookahead.every',
    'lookahead_decay': 'optim.lookahead.decay',
    'schedule': 'schedule.name', 'warmup_epochs': 'schedule.warmup_epochs',
    'triangular_start': 'schedule.triangular_start', 'triangular_end': 'schedule.triangular_end',
    'piecewise_boundaries': 'schedule.piecewise_boundaries',
    'piecewise_scale': 'schedule.piecewise_scale', 'plateau_factor': 'schedule.plateau_factor',
    'plateau_patience': 'schedule.plateau_patience',
    'num_epochs': 'train.num_epochs', 'seed': 'train.seed',
    'label_smoothing': 'train.label_smoothing', 'ema_decay': 'train.ema_decay',
    'log_every_steps': 'train.log_every_steps',
    'eval_batch_size': 'eval.batch_size', 'eval_every_steps': 'eval.every_steps',
    'eval_image_size': 'eval.image_size', 'eval_flip_tta': 'eval.flip_tta',
    'eval_translate_tta': 'eval.translate_tta',
    'recalibration_images': 'eval.recalibration_images',
    'checkpoint_keep': 'checkpoint.keep',
    'early_stopping_metric': 'early_stopping.metric',
    'early_stopping_patience': 'early_stopping.patience',
    'early_stopping_min_delta': 'early_stopping.min_delta',
}


def config_from_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file such as configs/cnn.py, loaded by its path (as
  `--config=path` does)."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if spec is None or not pathlib.Path(path).is_file():
    raise ConfigError(f'{path}: no such config file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load_config(workdir: str, given: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config a run was trained with: config.json, which training writes into its workdir,
  checked as --config is, with what is given for this command on top: $TFDS_DATA_DIR, where set,
  for the data.dir it records (where the data is on this machine now, not where it was then),
  and `given` ({'data.dir': ..., by dotted key: the command line's --config.KEY=VALUE without
  --config) over both. Only FREE_ON_RESUME keys may be given: the others say what was trained."""
  path = pathlib.Path(workdir) / 'config.json'
  saved = _saved(workdir)
  given = dict(given or {})
  for key, value in {**_from_environment(), **given}.items():
    if not _is_free(key):
      raise ConfigError(
          f'--config.{key} would change what {workdir} trained ({path}); without --config, only '
          f'keys of data, logging and compute may be given: {", ".join(FREE_ON_RESUME)}')
    set_key(saved, key, value)
  config = ml_collections.ConfigDict(saved)
  try:
    checks.validate(config)
  except ConfigError as e:
    flags = ''.join(f' with --config.{key}' for key in given)
    raise ConfigError(f'{path}{flags}: {e}. Pass the config the run was trained with '
                      f'(--config=configs/....py), or give a key of data, logging or compute '
                      f'anew (--config.KEY=VALUE)') from e
  return config


def _from_environment() -> dict[str, str]:
  data_dir = os.environ.get('TFDS_DATA_DIR')
  return {'data.dir': data_dir} if data_dir else {}


def _saved(workdir: str) -> dict:
  """workdir/config.json as a nested dict of the keys of now, its types checked against the
  defaults' and keys added since filled with their defaults; its values are not checked."""
  folder = pathlib.Path(workdir)
  if folder.exists() and not folder.is_dir():
    raise ConfigError(f'--workdir={folder} is a file, not a folder: name the workdir of a run')
  if not folder.exists():
    raise ConfigError(f'--workdir={folder} does not exist: train first (--mode train '
                      f'--config=... --workdir={folder})')
  path = folder / 'config.json'
  if not path.exists():
    raise ConfigError(f'{path} is missing: training writes it when it starts; for a run trained '
                      f'before that, pass the config it was trained with: --config=configs/....py')
  damaged = ('it is damaged. Put it back from a copy, or pass the config the run was trained '
             'with: --config=configs/....py')
  try:
    saved = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f'{path} is not valid JSON ({e}): {damaged}') from e
  if isinstance(saved, dict) and _is_flat(saved):
    saved = nested(saved)
  problem = _mistyped(saved, defaults.get_config())
  if problem:
    raise ConfigError(f'{path}: {problem}: {damaged}')
  _fill_missing(saved, defaults.get_config().to_dict())
  return saved


# What each type of a config's values is in JSON, for what config.json holds instead.
_JSON_NAMES = {bool: 'true or false', int: 'an integer', float: 'a number', str: 'a string',
               tuple: 'a list', list: 'a list', dict: 'an object',
               ml_collections.ConfigDict: 'an object', type(None): 'null'}
# Subtrees whose keys are not the defaults': the model's own arguments (checked by the model) and
# XLA's options.
_OPEN_SUBTREES = ('kwargs', 'xla_options')


def _mistyped(saved: Any, template: ml_collections.ConfigDict,
              prefix: str = 'config') -> str | None:
  """What in `saved` (a config read from JSON) is not a key of `template` or not of its type
  (null only where the default is: a key unset until used), if anything."""
  if not isinstance(saved, dict):
    return f'{prefix} is {_JSON_NAMES.get(type(saved), type(saved).__name__)}, not an object'
  for key, value in saved.items():
    where = f'{prefix}.{key}'
    if key not in template:
      return f'{where} is not a config key (cifar100_flax/config/defaults.py has every one)'
    wanted = template.get_type(key)
    if wanted is ml_collections.ConfigDict and key not in _OPEN_SUBTREES:
      problem = _mistyped(value, template[key], where)
      if problem:
        return problem
    elif not is_json_of(value, dict if wanted is ml_collections.ConfigDict else wanted,
                        nullable=template[key] is None):
      return (f'{where} is {_JSON_NAMES.get(type(value), type(value).__name__)} ({value!r}), '
              f'not {_JSON_NAMES[wanted]}')
  return None


def is_json_of(value: Any, wanted: type, nullable: bool = False) -> bool:
  """Whether `value`, read from JSON, can be a value of type `wanted` (an int is a float, a list
  a tuple, and a bool no number)."""
  if value is None:
    return nullable
  accepted = {float: (int, float), tuple: (list, tuple)}.get(wanted, wanted)
  return isinstance(value, accepted) and (wanted is bool or not isinstance(value, bool))


def _is_flat(saved: dict) -> bool:
  """Whether `saved` is a config.json of before the nesting (where `model` was the name)."""
  return isinstance(saved.get('model'), str)


def nested(flat: dict) -> dict:
  """A config of before the nesting (a dict), each key moved to its place (FLAT_KEYS)."""
  tree = {}
  for key, value in flat.items():
    set_key(tree, FLAT_KEYS.get(key, key), value)
  return tree


def set_key(tree: dict, dotted: str, value: Any) -> None:
  """tree['a']['b'] = value for dotted 'a.b' (a dict or ConfigDict; missing dicts are made)."""
  *parents, leaf = dotted.split('.')
  for parent in parents:
    if parent not in tree:
      tree[parent] = {}
    tree = tree[parent]
  tree[leaf] = value


def flat_keys(tree: dict, prefix: str = '') -> dict[str, Any]:
  """{'optim.learning_rate': 0.1, ...}: a nested dict's leaves by dotted key (an empty dict is a
  leaf)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flat_keys(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _shown(value: Any) -> str:
  return repr(tuple(_shown_value(v) for v in value)) if isinstance(value, list) else str(value)


def _shown_value(value: Any) -> Any:
  return tuple(_shown_value(v) for v in value) if isinstance(value, list) else value


def has_checkpoints(folder: pathlib.Path) -> bool:
  """Whether `folder` holds a step's checkpoint (checkpoints/<step>, or checkpoints/latest/<step>
  as runs wrote them before one manager kept both the newest and the best)."""
  return any(p.name.isdigit() for where in (folder, folder / 'latest') if where.is_dir()
             for p in where.iterdir())


def _is_free(key: str) -> bool:
  return any(key == free or key.startswith(f'{free}.') for free in FREE_ON_RESUME)


def check_start(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises a UserError if a run is about to start in `workdir` (nothing trained yet) from
  pretrained weights that cannot be had: they are read at its step 0 only, so a resume, and
  every other mode, needs none."""
  if config.model.pretrained and not has_checkpoints(pathlib.Path(workdir) / 'checkpoints'):
    pretrained.check_source(config.model.pretrained)


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError if `workdir` holds checkpoints trained with a config that differs from
  `config` in a key that changes what is trained (any key but FREE_ON_RESUME), naming each."""
  if not has_checkpoints(pathlib.Path(workdir) / 'checkpoints'):
    return  # Nothing trained yet: any config starts it.
  if not (pathlib.Path(workdir) / 'config.json').exists():
    return  # Trained before config.json existed: the checkpoint's shapes are all there is.
  saved = flat_keys(json.loads(ml_collections.ConfigDict(_saved(workdir)).to_json_best_effort()))
  given = flat_keys(json.loads(config.to_json_best_effort()))
  changed = [f'{key} {_shown(saved.get(key))} -> {_shown(given.get(key))}'
             for key in sorted(set(saved) | set(given))
             if not _is_free(key) and saved.get(key) != given.get(key)]
  if changed:
    raise ConfigError(
        f'{workdir} was trained with another config ({pathlib.Path(workdir) / "config.json"}): '
        f'{"; ".join(changed)}. Resume it with the config it was trained with, or train this '
        f'one in a new --workdir.')


def to_record(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.json's text for `config` training in `workdir`. A run that resumes keeps recording
  the pretrained weights it started from: read at step 0 only, they may be named elsewhere since,
  or not at all."""
  record = json.loads(config.to_json_best_effort())
  if (has_checkpoints(pathlib.Path(workdir) / 'checkpoints')
      and (pathlib.Path(workdir) / 'config.json').exists()):
    record['model']['pretrained'] = _saved(workdir)['model']['pretrained']
  return json.dumps(record, indent=1)


def _fill_missing(saved: dict, defaults: dict) -> None:
  """Keys added since a run was trained take their defaults, which keep the old behaviour.

  Model arguments are the model's own: those of the default model are not filled in.
  """
  for key, value in defaults.items():
    if key not in saved:
      saved[key] = value
    elif isinstance(value, dict) and key != 'kwargs':
      _fill_missing(saved[key], value)
