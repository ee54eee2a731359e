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

import logging as logging_lib
import os
import pathlib
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

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
_TRACEBACK = flags.DEFINE_bool('traceback', os.environ.get('CIFAR100_FLAX_TRACEBACK') == '1',
                               'Show the full traceback of an error in the input, not one line.')
flags.mark_flags_as_required(['workdir'])


class _QuietOrbax(logging_lib.Filter):
  """Orbax logs every step of every save at INFO; keep its warnings only."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.levelno >= logging_lib.WARNING or '/orbax/' not in record.pathname


def _parse_flags(argv: list[str]) -> list[str]:
  # config_flags raises a bare AttributeError/KeyError/ValueError with a traceback for an unknown
  # key or a value of the wrong type, or a config file that does not load; say it in one line.
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {_one_line(e)}')
  except Exception as e:  # pylint: disable=broad-except
    if '--traceback' in argv:
      raise
    sys.exit(f'error: cannot apply the command-line flags: {type(e).__name__}: {_one_line(e)}. '
             f'Every config key, with its type, is listed in cifar100_flax/defaults.py.')


def _one_line(error: BaseException) -> str:
  """The error's message as one line (config_flags' messages hold escaped newlines)."""
  text = str(error).strip().strip('\'"').replace('\\n', '\n').replace("\\'", "'")
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


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
    sys.exit(f'error: --config={path}: no such file (the configs are in configs/*.py)')
  try:
    return _CONFIG.value
  except OSError as e:  # config_flags defers the file's own error (a syntax error, an import)
    if _TRACEBACK.value:
      raise
    sys.exit(f'error: --config={path} does not load: {_one_line(e.__cause__ or e)}')


def main(argv):
  if argv[1:] and _MODE.value != 'predict':
    sys.exit(f'error: unexpected arguments {" ".join(argv[1:])} (flags are --name=value)')
  _quiet_start_up()
  logging.get_absl_handler().addFilter(_QuietOrbax())
  from cifar100_flax import distributed
  from cifar100_flax.cpu import tuning
  tuning.configure()  # Before JAX initialises its backend.
  try:
    distributed.initialize(distributed.cluster_from(
        _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value),
        _COORDINATOR_TIMEOUT.value)
  except distributed.DistributedError as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f'error: {_one_line(e)}')
  # TensorFlow only feeds data; keep it off any GPU so that JAX has the memory.
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  import jax

  from cifar100_flax import configuration, evaluate, export, predict, report, train
  from cifar100_flax.errors import UserError

  workdirs, config = _WORKDIR.value, _config()
  if _MODE.value == 'train' and (config is None or len(workdirs) != 1):
    sys.exit('error: --mode=train needs --config and one --workdir')
  if _MODE.value == 'eval' and len(workdirs) > 1 and _SPLIT.value != 'test':
    sys.exit('error: an ensemble is evaluated on the test split only')
  if _MODE.value == 'eval' and len(workdirs) > 1 and not _OUTPUT.value:
    sys.exit('error: evaluating several workdirs (an ensemble) needs --output=DIR for its results')
  images = (_IMAGES.value or []) + argv[1:]  # the shell's expansion of --images photos/*.jpg
  if _MODE.value == 'predict' and not images:
    sys.exit('error: --mode=predict needs --images=PATH (files, folders or globs)')
  if _MODE.value == 'predict' and len(workdirs) > 1 and not _OUTPUT.value:
    sys.exit('error: predicting with several workdirs (an ensemble) needs --output=FILE')
  if _MODE.value == 'export' and len(workdirs) != 1:
    sys.exit('error: --mode=export exports one --workdir')
  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(config, workdirs[0])
    elif _MODE.value == 'eval':
      # Without --config, each run's own config.json.
      configs = [config or configuration.load_config(w) for w in workdirs]
      if len(workdirs) == 1:
        evaluate.evaluate(configs[0], workdirs[0], _SPLIT.value)
      else:
        evaluate.evaluate_ensemble(configs, workdirs, _OUTPUT.value)
    elif _MODE.value == 'predict':
      configs = [config or configuration.load_config(w) for w in workdirs]
      failures = predict.predict(configs, workdirs, images,
                                 _OUTPUT.value or str(pathlib.Path(workdirs[0], 'predictions.csv')),
                                 _TOP_K.value)
      if failures:
        print(f'{len(failures)} of the paths given could not be read (above)', file=sys.stderr)
        sys.exit(2)
    elif _MODE.value == 'export':
      export.export(config or configuration.load_config(workdirs[0]), workdirs[0], _FORMAT.value,
                    _OUTPUT.value)
    elif jax.process_index() == 0:  # A report reads files and needs no other process.
      written = report.report(workdirs, _OUTPUT.value, config, _GRADCAM_LAYER.value)
      print(f"wrote {written['html']}, {written['pdf']} and {len(written) - 2} figures")
  except UserError as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f'error: {_one_line(e)}')
  except KeyboardInterrupt as e:
    sys.exit(f'interrupted: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
