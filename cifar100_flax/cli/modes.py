"""What each --mode needs from the flags, checked before any work, and the call that does it."""

import dataclasses
import os
import pathlib
import sys

import jax
import ml_collections

from cifar100_flax import files
from cifar100_flax.cli import weights
from cifar100_flax.config import checks, loading
from cifar100_flax.errors import UsageError
from cifar100_flax.evaluation import evaluate, report
from cifar100_flax.inference import export, predict
from cifar100_flax.training import loop


@dataclasses.dataclass(frozen=True)
class Command:
  """A mode and what the flags give it (absent ones are None or empty)."""
  mode: str
  workdirs: list[str]
  config: ml_collections.ConfigDict | None = None
  images: list[str] = dataclasses.field(default_factory=list)
  output: str | None = None
  split: str = 'test'
  top_k: int = 5
  format: str = 'onnx'
  gradcam_layer: str | None = None
  paper: str = 'A4'
  weights: str | None = None
  model: str | None = None
  # Without --config: --config.KEY=VALUE overrides of each run's config.json, by dotted key.
  overrides: dict = dataclasses.field(default_factory=dict)


def check_usage(command: Command) -> None:
  """Raises UsageError if the flags do not make a command."""
  mode, folders = command.mode, command.workdirs
  needs = {
      'train': (command.config is not None and len(folders) == 1,
                '--mode=train needs --config and one --workdir'),
      'eval': (len(folders) == 1 or command.split == 'test',
               'an ensemble is evaluated on the test split only'),
      'predict': (bool(command.images),
                  '--mode=predict needs --images=PATH (files, folders or globs)'),
      'export': (len(folders) == 1, '--mode=export exports one --workdir'),
      'convert': (bool(command.weights and command.model and command.output),
                  '--mode=convert needs --weights=SOURCE --model=NAME --output=FILE.msgpack'),
  }
  ok, message = needs.get(mode, (True, ''))
  if not ok:
    raise UsageError(message)
  if mode not in ('convert', 'photos') and not folders:
    raise UsageError(f'--mode={mode} needs --workdir')
  if len(set(map(_real, folders))) < len(folders):
    raise UsageError(f'a --workdir is given twice ({" ".join(folders)}): name each run once')
  if mode in ('eval', 'predict') and len(folders) > 1 and not command.output:
    what = 'evaluating' if mode == 'eval' else 'predicting with'
    where = 'DIR for its results' if mode == 'eval' else 'FILE'
    raise UsageError(f'{what} several workdirs (an ensemble) needs --output={where}')
  if mode == 'eval' and len(folders) > 1 and _real(command.output) in map(_real, folders):
    raise UsageError(f'--output={command.output} is one of the ensemble\'s runs: its own '
                     f'evaluation would be overwritten. Name a new folder for the ensemble, e.g. '
                     f'--output=runs/ensemble')


def _real(path: str) -> str:
  return os.path.realpath(path)


def check_outputs(command: Command) -> None:
  """Before any work: every folder and file the mode will write can be written (the training
  loop checks its own workdir)."""
  mode, workdirs, output = command.mode, command.workdirs, command.output
  if mode == 'eval':
    for workdir in workdirs:
      files.writable_folder(workdir, 'the workdir')
    if len(workdirs) > 1:
      files.writable_folder(output, '--output')
  elif mode == 'report':
    files.writable_folder(output or report.default_output(workdirs),
                          '--output' if output else 'the report folder')
  elif mode == 'predict':
    files.writable_file(_predictions_file(command), '--output')
  elif mode == 'export':
    files.writable_folder(output or str(pathlib.Path(workdirs[0], 'export')), '--output')
  elif mode == 'convert':
    files.writable_file(output, '--output')


def _predictions_file(command: Command) -> str:
  return command.output or str(pathlib.Path(command.workdirs[0], 'predictions.csv'))


def resolved_config(command: Command) -> ml_collections.ConfigDict:
  """The config a command would use: --config with its overrides, else the workdir's saved one."""
  if command.config is not None:
    return command.config
  if len(command.workdirs) != 1:
    raise UsageError('--print_config needs --config, or one --workdir of a run')
  return loading.load_config(command.workdirs[0], command.overrides)


def run(command: Command) -> None:
  """Checks the command and its inputs (seconds, before any data is read), then does it."""
  if command.config is not None:
    checks.validate(command.config)
  if command.mode == 'predict':
    predict.check_arguments(command.top_k, command.output or 'predictions.csv')
  # Without --config, each run's own config.json.
  configs = ([command.config or loading.load_config(w, command.overrides)
              for w in command.workdirs]
             if command.mode not in ('train', 'convert', 'photos') else [])
  check_outputs(command)
  _MODES[command.mode](command, configs)


def _train(command: Command, configs: list) -> None:
  loop.train_and_evaluate(command.config, command.workdirs[0])


def _eval(command: Command, configs: list) -> None:
  if len(command.workdirs) == 1:
    evaluate.evaluate(configs[0], command.workdirs[0], command.split)
  else:
    evaluate.evaluate_ensemble(configs, command.workdirs, command.output)


def _predict(command: Command, configs: list) -> None:
  failures = predict.predict(configs, command.workdirs, command.images,
                             _predictions_file(command), command.top_k)
  if failures:
    print(f'{len(failures)} of the paths given could not be read (above)', file=sys.stderr)
    sys.exit(2)


def _export(command: Command, configs: list) -> None:
  export.export(configs[0], command.workdirs[0], command.format, command.output)


def _report(command: Command, configs: list) -> None:
  if jax.process_index() == 0:  # A report reads files and needs no other process.
    written = report.report(command.workdirs, command.output, configs,
                            command.gradcam_layer, command.paper)
    print(f"wrote {written['pdf']}, {written['html']} and {len(written) - 2} figures beside "
          f"them")


def _convert(command: Command, configs: list) -> None:
  weights.convert(command.weights, command.output, command.model)


def _photos(command: Command, configs: list) -> None:
  weights.photos(command.model or 'efficientnet_lite0')


_MODES = {'train': _train, 'eval': _eval, 'predict': _predict, 'export': _export,
          'report': _report, 'convert': _convert, 'photos': _photos}
