"""Train, evaluate and report on a CIFAR-100 classifier.

  python main.py --config configs/cnn.py --workdir runs/cnn               # train (or resume)
  python main.py --workdir runs/cnn --mode eval                           # test-set metrics
  python main.py --workdir runs/cnn --mode eval --split validation        # on the carve-out
  python main.py --mode eval --workdir runs/a --workdir runs/b --output runs/ab   # an ensemble
  python main.py --mode report --workdir runs/cnn [--workdir runs/b ...]  # report.html, report.pdf
  python main.py --mode predict --workdir runs/cnn --images photos/ cat.jpg  # your own pictures
  python main.py --mode export --workdir runs/cnn --format onnx           # export/model.onnx

Several processes (hosts) form one run with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I on each (process 0 listens at HOST:PORT), or by themselves under SLURM, Open MPI
and on Cloud TPU; see README, Many devices and hosts.

Errors in what the user gave (flags, config values, data, checkpoints) are one line without a
traceback; --traceback (or CIFAR100_FLAX_TRACEBACK=1) shows it. TensorFlow's, XLA's and absl's
start-up messages are off unless --verbosity=0 (absl's flag: 0 is INFO, 1 DEBUG) asks for them.
"""

import difflib
import logging as logging_lib
import os
import pathlib
import signal
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from cifar100_flax.errors import UserError, one_line

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_multi_string('workdir', None, 'Where checkpoints, logs and results go; '
                                     'report: once per run to compare.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'report', 'predict', 'export'],
                          'What to do.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'], 'eval: the split to evaluate '
                           '(validation: the carve-out of the training images, to choose '
                           'evaluation settings on; one workdir only).')
_OUTPUT = flags.DEFINE_string('output', None, 'report: the folder to write to (default: the '
                              'first workdir); eval of several workdirs: where the ensemble\'s '
                              'results go; predict: a .csv or .json file (default: '
                              'WORKDIR/predictions.csv); export: a folder (default: '
                              'WORKDIR/export).')
_IMAGES = flags.DEFINE_multi_string(
    'images', None, 'predict: image files, folders (searched recursively) or globs; the paths '
    'after the flags are more of them (--images photos/*.jpg). Exit status 2: some could not '
    'be read (each said why), the rest were predicted.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'predict: how many classes to list per image.')
_FORMAT = flags.DEFINE_enum('format', 'onnx', ['onnx', 'stablehlo', 'savedmodel'],
                            'export: the file format (README, Use a trained model).')
_GRADCAM_LAYER = flags.DEFINE_string('gradcam_layer', None, 'report: the submodule (path, e.g. '
                                     'layer4_2) Grad-CAM explains; default: the last feature map.')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'Several processes: HOST:PORT where process 0 listens (default: '
    '$JAX_COORDINATOR_ADDRESS, or found on SLURM, Open MPI and Cloud TPU).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Several processes: how many '
                                      '(default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Several processes: this one\'s index in '
                                   '[0, num_processes) (default: $JAX_PROCESS_ID).')
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    'coordinator_timeout', 120, 'Several processes: seconds to wait for all of them to start '
    'before giving up with an error.')
_CPU_TUNING = flags.DEFINE_enum(
    'cpu_tuning', 'auto', ['auto', 'on', 'off'], 'Tune the process for XLA:CPU (XLA flags, '
    'malloc, AMX; cifar100_flax/cpu/tuning.py). auto: for train and eval when JAX will run on the '
    'CPU (no accelerator plugin installed, or $JAX_PLATFORMS=cpu).')
_TRACEBACK = flags.DEFINE_bool('traceback', os.environ.get('CIFAR100_FLAX_TRACEBACK') == '1',
                               'Show the full traceback of an error in the input, not one line.')
flags.mark_flags_as_required(['workdir'])


_STOPPED_AT_ONCE = ('stopped at once, without saving; the checkpoints saved before are kept: '
                    'run the same command to resume')


class _QuietLibraries(logging_lib.Filter):
  """Orbax logs every step of every save at INFO; tensorflow-datasets warns of folders it skips
  (a variant without dataset_info.json), while input_pipeline.py says what is wrong with the data
  in one line: keep Orbax's warnings and tfds' errors only. A second Ctrl-C while Orbax waits for
  a save is the user's stop, which main() says in one line: Orbax would log it as a failed save,
  with the KeyboardInterrupt's traceback."""

  _LEAST_LEVEL = {'/orbax/': logging_lib.WARNING, '/tensorflow_datasets/': logging_lib.ERROR}

  def filter(self, record: logging_lib.LogRecord) -> bool:
    if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
      return False
    return all(record.levelno >= level or part not in record.pathname
               for part, level in self._LEAST_LEVEL.items())


def _parse_flags(argv: list[str]) -> list[str]:
  # config_flags raises a bare AttributeError/KeyError/ValueError with a traceback for an unknown
  # key or a value of the wrong type, or a config file that does not load; say it in one line.
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {one_line(e)}')
  except Exception as e:  # pylint: disable=broad-except
    if '--traceback' in argv:
      raise
    sys.exit(f'error: {_flag_problem(argv) or _cannot_apply(e)}')


def _cannot_apply(error: BaseException) -> str:
  return (f'cannot apply the command-line flags: {type(error).__name__}: {one_line(error)}. '
          f'Every config key, with its type, is listed in cifar100_flax/defaults.py.')


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _flag_problem(argv: list[str]) -> str | None:
  """What is wrong with --config or a --config.KEY override, said as config_flags does not: the
  file that is missing or does not load, or the key that does not exist and the one meant."""
  path = _config_path(argv)
  if path is None:
    return None
  if not pathlib.Path(path).is_file():
    return _no_such_config(path)
  from cifar100_flax import configuration
  try:
    config = configuration.config_from_file(path)
  except Exception as e:  # pylint: disable=broad-except  (whatever the file's code raises)
    return _does_not_load(path, e)
  for arg in argv:
    if arg.startswith('--config.'):
      problem = _unknown_key(config, arg.removeprefix('--config.').split('=', 1)[0])
      if problem:
        return problem
  return None


def _unknown_key(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  node, path = config, 'config'
  for part in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, keys, n=1)
      meant = f'; did you mean {path}.{close[0]}?' if close else '.'
      return (f'--config.{dotted}: {path} has no key {part!r}{meant} Every key, with its '
              f'meaning, is in cifar100_flax/defaults.py.')
    node, path = node[part], f'{path}.{part}'
  return None


def _no_such_config(path: str) -> str:
  return f'--config={path}: no such file (the configs are in configs/*.py)'


def _does_not_load(path: str, error: BaseException) -> str:
  return f'--config={path} does not load: {type(error).__name__}: {one_line(error)}'


def _quiet_start_up() -> None:
  """Hides TensorFlow's C++ and absl's INFO logs unless --verbosity was given."""
  if flags.FLAGS['verbosity'].present:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # TensorFlow only gathers batches here; its oneDNN kernels (which announce themselves at import
  # whatever the log level) would compute none of the model.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  logging.set_verbosity(logging.WARNING)


def _config() -> ml_collections.ConfigDict | None:
  """The --config, or None; a file that does not load is a one-line error."""
  if not flags.FLAGS['config'].present:
    return None
  path = flags.FLAGS['config'].config_filename
  if path and not pathlib.Path(path).is_file():
    sys.exit(f'error: {_no_such_config(path)}')
  try:
    config = _CONFIG.value
  except OSError as e:  # config_flags defers the file's own error (a syntax error, an import)
    if _TRACEBACK.value:
      raise
    sys.exit(f'error: {_does_not_load(path, e.__cause__ or e)}')
  if not isinstance(config, ml_collections.ConfigDict):
    sys.exit(f'error: --config={path}: get_config() returned a {type(config).__name__}, not an '
             f'ml_collections.ConfigDict')
  return config


def _check_usage(mode: str, workdirs: list[str], config: ml_collections.ConfigDict | None,
                 images: list[str]) -> None:
  """Stops with a one-line error if the flags do not make a command."""
  needs = {
      'train': (config is not None and len(workdirs) == 1, '--mode=train needs --config and one '
                '--workdir'),
      'eval': (len(workdirs) == 1 or _SPLIT.value == 'test', 'an ensemble is evaluated on the '
               'test split only'),
      'predict': (bool(images), '--mode=predict needs --images=PATH (files, folders or globs)'),
      'export': (len(workdirs) == 1, '--mode=export exports one --workdir'),
  }
  ok, message = needs.get(mode, (True, ''))
  if not ok:
    sys.exit(f'error: {message}')
  if mode in ('eval', 'predict') and len(workdirs) > 1 and not _OUTPUT.value:
    what = 'evaluating' if mode == 'eval' else 'predicting with'
    where = 'DIR for its results' if mode == 'eval' else 'FILE'
    sys.exit(f'error: {what} several workdirs (an ensemble) needs --output={where}')


def _check_outputs(mode: str, workdirs: list[str]) -> None:
  """Before any work: every folder and file the mode will write can be written."""
  from cifar100_flax import files
  output = _OUTPUT.value  # (train.py checks a training's workdir)
  if mode == 'eval':
    for workdir in workdirs:
      files.writable_folder(workdir, 'the workdir')
    if len(workdirs) > 1:
      files.writable_folder(output, '--output')
  elif mode == 'report':
    files.writable_folder(output or workdirs[0], '--output' if output else 'the workdir')
  elif mode == 'predict':
    files.writable_file(output or str(pathlib.Path(workdirs[0], 'predictions.csv')), '--output')
  elif mode == 'export':
    files.writable_folder(output or str(pathlib.Path(workdirs[0], 'export')), '--output')


_TUNED_MODES = ('train', 'eval')  # the modes that run the model long enough to gain


def _tune_for_cpu(mode: str) -> bool:
  """Applies cifar100_flax.cpu.tuning where --cpu_tuning asks for it; whether it did."""
  from cifar100_flax.cpu import tuning
  if _CPU_TUNING.value == 'auto' and mode not in _TUNED_MODES:
    return False
  return tuning.configure_if(_CPU_TUNING.value)


def _say_if_untuned_cpu(mode: str, tuned: bool) -> None:
  """An accelerator plugin is installed, yet JAX fell back to the CPU: say what was left out."""
  import jax

  from cifar100_flax import hardware
  if (not tuned and _CPU_TUNING.value == 'auto' and mode in _TUNED_MODES
      and jax.default_backend() == 'cpu' and jax.process_index() == 0):
    plugins = ', '.join(hardware.accelerator_plugins()) or 'a PJRT plugin'
    print(f'JAX runs on the CPU although {plugins} is installed: the process is not tuned for '
          f'XLA:CPU (--cpu_tuning=on does)', file=sys.stderr)


def _exit_on_signal(signum: int, frame) -> None:
  # Until training installs its own handler (which finishes the step and saves): outputs are
  # written whole at the end, so stopping now leaves every file as it was.
  sys.exit(f'interrupted by signal {signum}; run the same command again')


def main(argv):
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, _exit_on_signal)
  mode, workdirs = _MODE.value, _WORKDIR.value
  if argv[1:] and mode != 'predict':
    sys.exit(f'error: unexpected arguments {" ".join(argv[1:])} (flags are --name=value)')
  images = (_IMAGES.value or []) + argv[1:]  # the shell's expansion of --images photos/*.jpg
  config = _config()
  _check_usage(mode, workdirs, config, images)
  _quiet_start_up()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from cifar100_flax import distributed
  tuned = _tune_for_cpu(mode)  # Before JAX starts its backends.
  try:
    distributed.initialize(distributed.cluster_from(
        _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value),
        _COORDINATOR_TIMEOUT.value)
    _say_if_untuned_cpu(mode, tuned)
    from cifar100_flax import configuration
    if config is not None:  # Seconds, before TensorFlow is imported and any data is read.
      configuration.validate(config)
    if mode == 'predict':
      from cifar100_flax import predict
      predict.check_arguments(_TOP_K.value, _OUTPUT.value or 'predictions.csv')
    # Without --config, each run's own config.json.
    configs = [config or configuration.load_config(w) for w in workdirs] if mode != 'train' else []
    _check_outputs(mode, workdirs)
    _run(mode, workdirs, config, configs, images)
  except UserError as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f'error: {one_line(e)}')
  except KeyboardInterrupt as e:  # train.py's says where it stopped
    if str(e):
      sys.exit(f'interrupted: {e}')
    # A second Ctrl-C: Orbax may still be writing the stop's checkpoint in its threads, which the
    # interpreter's shutdown would break, each printing its traceback. Like a kill, leaving now
    # keeps every finished checkpoint; the next start removes the unfinished one.
    print(f'interrupted: {_STOPPED_AT_ONCE}', file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _run(mode: str, workdirs: list[str], config: ml_collections.ConfigDict | None,
         configs: list[ml_collections.ConfigDict], images: list[str]) -> None:
  import jax

  from cifar100_flax import evaluate, export, predict, report, train
  if mode == 'train':
    train.train_and_evaluate(config, workdirs[0])
  elif mode == 'eval' and len(workdirs) == 1:
    evaluate.evaluate(configs[0], workdirs[0], _SPLIT.value)
  elif mode == 'eval':
    evaluate.evaluate_ensemble(configs, workdirs, _OUTPUT.value)
  elif mode == 'predict':
    failures = predict.predict(configs, workdirs, images,
                               _OUTPUT.value or str(pathlib.Path(workdirs[0], 'predictions.csv')),
                               _TOP_K.value)
    if failures:
      print(f'{len(failures)} of the paths given could not be read (above)', file=sys.stderr)
      sys.exit(2)
  elif mode == 'export':
    export.export(configs[0], workdirs[0], _FORMAT.value, _OUTPUT.value)
  elif jax.process_index() == 0:  # A report reads files and needs no other process.
    written = report.report(workdirs, _OUTPUT.value, config, _GRADCAM_LAYER.value)
    print(f"wrote {written['html']}, {written['pdf']} and {len(written) - 2} figures")


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
