"""Train or evaluate a CIFAR-100 classifier.

  python main.py --config configs/cnn.py --workdir runs/cnn               # train (or resume)
  python main.py --config configs/cnn.py --workdir runs/cnn --mode eval   # test-set metrics
"""

import logging as logging_lib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and results go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'What to do.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietOrbax(logging_lib.Filter):
  """Orbax logs every step of every save at INFO; keep its warnings only."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.levelno >= logging_lib.WARNING or '/orbax/' not in record.pathname


def _parse_flags(argv: list[str]) -> list[str]:
  # config_flags raises a bare AttributeError/KeyError/ValueError with a traceback for an unknown
  # key or a value of the wrong type; say it in one line instead.
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}')
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f'error: cannot apply the command-line flags: {type(e).__name__}: {e}. Every config '
             f'key, with its type, is listed in configs/default.py.')


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  from cifar100_flax import cpu_tuning
  cpu_tuning.configure()  # Before JAX initialises its backend.
  # TensorFlow only feeds data; keep it off any GPU so that JAX has the memory.
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  from cifar100_flax import evaluate, train
  from cifar100_flax.errors import UserError

  try:
    if _MODE.value == 'train':
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      evaluate.evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    sys.exit(f'error: {e}')
  except KeyboardInterrupt as e:
    sys.exit(f'interrupted: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
