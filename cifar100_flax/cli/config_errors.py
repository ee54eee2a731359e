"""--config and its overrides, with what is wrong said in one line.

config_flags raises a bare AttributeError, KeyError or ValueError with a traceback for an unknown
key, a value of the wrong type or a config file that does not load; these functions name the file
or the key instead, and the key that was meant. An override of a key of the flat config of before
the nesting (--config.num_epochs=1) is read at its place now (--config.train.num_epochs=1), with a
note, so that older notes and notebooks keep working. Without --config, the overrides are of a
run's config.json (--mode eval --workdir=runs/x --config.data.dir=DIR): config_flags would refuse
them as unknown flags, so they are taken out of its way and parsed here as it would parse them.
"""

import difflib
import itertools
import pathlib
import sys
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from cifar100_flax.cli import flags as cli_flags
from cifar100_flax.config import defaults, loading
from cifar100_flax.errors import UsageError, one_line

_KEYS_ARE_IN = 'Every config key, with its meaning, is in cifar100_flax/config/defaults.py.'


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flags parser (app.run's flags_parser), each failure one line."""
  try:
    run_overrides(argv)  # checked with the other flags; the command reads them later
    return flags.FLAGS(_split_run_overrides(argv)[0])
  except flags.Error as e:  # absl's: a value that does not parse (config_flags' too)
    sys.exit(f'error: {flag_problem(argv) or one_line(e)}')
  except Exception as e:  # config_flags raises whatever applying a flag raised
    if '--traceback' in argv:
      raise
    sys.exit(f'error: {flag_problem(argv) or cannot_apply(e)}')


def cannot_apply(error: BaseException) -> str:
  return (f'cannot apply the command-line flags: {type(error).__name__}: {one_line(error)}. '
          f'{_KEYS_ARE_IN}')


def config_path(argv: list[str]) -> str | None:
  """The --config=PATH (or --config PATH) of a command line."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def flag_problem(argv: list[str]) -> str | None:
  """What is wrong with --config or a --config.KEY override: the file that is missing or does
  not load, or the key that does not exist (without --config: in a run's config.json, which has
  the defaults' keys) and the one meant."""
  path = config_path(argv)
  if path is None:
    config = defaults.get_config()
  elif not pathlib.Path(path).is_file():
    return no_such_config(path)
  else:
    try:
      config = loading.config_from_file(path)
    except Exception as e:  # whatever the file's code raises
      return does_not_load(path, e)
  for arg in argv:
    if arg.startswith('--config.'):
      problem = unknown_key(config, arg.removeprefix('--config.').split('=', 1)[0])
      if problem:
        return problem
  return None


def unknown_key(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """None if `dotted` names a key of `config`, else which part does not and what was meant (a key
  of the flat config of before the nesting: its place now)."""
  node, path = config, 'config'
  for part in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, keys, n=1)
      meant = f'; did you mean {path}.{close[0]}?' if close else '.'
      return f'--config.{dotted}: {path} has no key {part!r}{meant} {_KEYS_ARE_IN}'
    node, path = node[part], f'{path}.{part}'
  return None


def nested_overrides(argv: list[str]) -> list[str]:
  """`argv` with each --config.KEY of the flat config of before the nesting at its place now
  (--config.learning_rate=0.1 -> --config.optim.learning_rate=0.1; --config.model=resnet18 ->
  --config.model.name=resnet18), each said on stderr."""
  subtrees = set(defaults.get_config())
  nested = []
  for arg in argv:
    name, equals, value = arg.partition('=')
    first, _, rest = name.removeprefix('--config.').partition('.')
    if (name.startswith('--config.') and first in loading.FLAT_KEYS
        and not (first in subtrees and rest)):  # --config.model.kwargs... is nested already
      now = loading.FLAT_KEYS[first] + (f'.{rest}' if rest else '')
      print(f'note: {name} is --config.{now} now (the config is nested by its readers); read '
            f'as that', file=sys.stderr)
      arg = f'--config.{now}{equals}{value}'
    nested.append(arg)
  return nested


def run_overrides(argv: list[str]) -> dict[str, Any]:
  """The --config.KEY=VALUE overrides of a command line without --config, by dotted key, parsed
  as config_flags parses --config's (against the defaults' types): a run's config.json takes
  them for this command (loading.load_config, which allows only the keys a run may change).
  Raises absl's flags.Error for a value that does not parse."""
  overrides = _split_run_overrides(argv)[1]
  if not overrides:
    return {}
  parsed = flags.FlagValues()
  command_line = [argv[0], *overrides]
  config_flags.DEFINE_config_dict('config', defaults.get_config(), flag_values=parsed,
                                  sys_argv=command_line)
  parsed(command_line)
  return dict(parsed['config'].override_values)


def _split_run_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(`argv` less the overrides of a run's config.json, those overrides): the --config.KEY=VALUE
  (or --config.KEY VALUE) flags of a command line without --config."""
  if config_path(argv) is not None:
    return argv, []
  rest, overrides = [], []
  args = iter(argv)
  for arg in args:
    if not arg.startswith('--config.'):
      rest.append(arg)
      continue
    overrides.append(arg)
    key = arg.removeprefix('--config.')
    if '=' not in key and not _is_boolean(key):  # its value is the next argument
      overrides.extend(list(itertools.islice(args, 1)))
  return rest, overrides


def _is_boolean(dotted: str) -> bool:
  """Whether `dotted` names a bool of the defaults: a flag that may stand without a value."""
  *parents, leaf = dotted.split('.')
  node = defaults.get_config()
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  return (isinstance(node, ml_collections.ConfigDict) and leaf in node
          and node.get_type(leaf) is bool)


def no_such_config(path: str) -> str:
  return f'--config={path}: no such file (the configs are in configs/*.py)'


def does_not_load(path: str, error: BaseException) -> str:
  return f'--config={path} does not load: {type(error).__name__}: {one_line(error)}'


def given_config() -> ml_collections.ConfigDict | None:
  """The --config, or None; raises UsageError for a file that is missing or does not load."""
  if not flags.FLAGS['config'].present:
    return None
  path = flags.FLAGS['config'].config_filename
  if path and not pathlib.Path(path).is_file():
    raise UsageError(no_such_config(path))
  try:
    config = cli_flags.CONFIG.value
  except OSError as e:  # config_flags defers the file's own error (a syntax error, an import)
    if cli_flags.TRACEBACK.value:
      raise
    raise UsageError(does_not_load(path, e.__cause__ or e)) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f'--config={path}: get_config() returned a {type(config).__name__}, not an '
                     f'ml_collections.ConfigDict')
  return config
