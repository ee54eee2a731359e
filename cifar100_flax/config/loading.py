"""Configs by path and by run: a configs/*.py file loaded as `--config` does, the config a run
was trained with (its config.json, keys added since filled with their defaults), and the check
that refuses to resume a run with a config that would train something else."""

import importlib.util
import json
import pathlib
from typing import Any

import ml_collections

from cifar100_flax.config import defaults
from cifar100_flax.errors import ConfigError

# Keys a resumed run may change: they decide where data comes from and how the run is logged
# and computed, not what it trains.
FREE_ON_RESUME = ('data_dir', 'eval_batch_size', 'log_every_steps', 'conv_backend',
                  'cpu_speed_path', 'xla_cpu_options', 'checkpoint_keep', 'init_sample_size')


def config_from_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file such as configs/cnn.py, loaded by its path (as
  `--config=path` does)."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if spec is None or not pathlib.Path(path).is_file():
    raise ConfigError(f'{path}: no such config file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with: config.json, which training writes into its workdir."""
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
  try:
    saved = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f'{path} is not valid JSON ({e}): it is damaged. Put it back from a copy, '
                      f'or pass the config the run was trained with: --config=configs/....py'
                      ) from e
  _fill_missing(saved, defaults.get_config().to_dict())
  return ml_collections.ConfigDict(saved)


def _flat(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _shown(value: Any) -> str:
  return repr(tuple(_shown_value(v) for v in value)) if isinstance(value, list) else str(value)


def _shown_value(value: Any) -> Any:
  return tuple(_shown_value(v) for v in value) if isinstance(value, list) else value


def _has_checkpoints(folder: pathlib.Path) -> bool:
  """Whether `folder` holds a step's checkpoint (checkpoints/<step>, or checkpoints/latest/<step>
  as runs wrote them before one manager kept both the newest and the best)."""
  return any(p.name.isdigit() for where in (folder, folder / 'latest') if where.is_dir()
             for p in where.iterdir())


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError if `workdir` holds checkpoints trained with a config that differs from
  `config` in a key that changes what is trained (any key but FREE_ON_RESUME), naming each."""
  if not _has_checkpoints(pathlib.Path(workdir) / 'checkpoints'):
    return  # Nothing trained yet: any config starts it.
  if not (pathlib.Path(workdir) / 'config.json').exists():
    return  # Trained before config.json existed: the checkpoint's shapes are all there is.
  saved = _flat(json.loads(load_config(workdir).to_json_best_effort()))
  given = _flat(json.loads(config.to_json_best_effort()))
  changed = [f'{key} {_shown(saved.get(key))} -> {_shown(given.get(key))}'
             for key in sorted(set(saved) | set(given))
             if key.split('.')[0] not in FREE_ON_RESUME and saved.get(key) != given.get(key)]
  if changed:
    raise ConfigError(
        f'{workdir} was trained with another config ({pathlib.Path(workdir) / "config.json"}): '
        f'{"; ".join(changed)}. Resume it with the config it was trained with, or train this '
        f'one in a new --workdir.')


def _fill_missing(saved: dict, defaults: dict) -> None:
  """Keys added since a run was trained take their defaults, which keep the old behaviour.

  Model arguments are the model's own: those of the default model are not filled in.
  """
  for key, value in defaults.items():
    if key not in saved:
      saved[key] = value
    elif isinstance(value, dict) and key != 'model_kwargs':
      _fill_missing(saved[key], value)
