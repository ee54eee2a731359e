"""What a process does before the work: quiet logs, CPU tuning where JAX will run on the CPU,
joining the other processes of a run, and leaving on a signal without a traceback."""

import logging
import os
import signal
import sys

import jax
from absl import flags
from absl import logging as absl_logging

from cifar100_flax import hardware
from cifar100_flax.cli import flags as cli_flags
from cifar100_flax.cpu import tuning
from cifar100_flax.training import processes

TUNED_MODES = ('train', 'eval')  # the modes that run the model long enough to gain


class QuietLibraries(logging.Filter):
  """Orbax logs every step of every save at INFO; tensorflow-datasets warns of folders it skips
  (a variant without dataset_info.json), while data/tfds_pipeline.py says what is wrong with the
  data in one line: keep Orbax's warnings and tfds' errors only. A second Ctrl-C while Orbax
  waits for a save is the user's stop, which the entry point says in one line: Orbax would log it
  as a failed save, with the KeyboardInterrupt's traceback."""

  _LEAST_LEVEL = {'/orbax/': logging.WARNING, '/tensorflow_datasets/': logging.ERROR}

  def filter(self, record: logging.LogRecord) -> bool:
    if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
      return False
    return all(record.levelno >= level or part not in record.pathname
               for part, level in self._LEAST_LEVEL.items())


def exit_on_signals() -> None:
  """Until training installs its own handler (which finishes the step and saves), SIGINT and
  SIGTERM end the process in one line: outputs are written whole at the end, so stopping now
  leaves every file as it was."""
  def leave(signum: int, frame) -> None:
    sys.exit(f'interrupted by signal {signum}; run the same command again')
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, leave)


def quiet_logs() -> None:
  """Hides TensorFlow's C++ and absl's INFO logs unless --verbosity was given; Orbax's and
  tfds' chatter always."""
  absl_logging.get_absl_handler().addFilter(QuietLibraries())
  if flags.FLAGS['verbosity'].present:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # TensorFlow only gathers batches here; its oneDNN kernels (which announce themselves at import
  # whatever the log level) would compute none of the model.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  absl_logging.set_verbosity(absl_logging.WARNING)


def tune_for_cpu(mode: str, setting: str) -> bool:
  """Applies cpu.tuning where --cpu_tuning=`setting` asks for it, before JAX starts its
  backends; whether it did. auto: train and eval only, where JAX will run on the CPU."""
  if setting == 'auto' and mode not in TUNED_MODES:
    return False
  return tuning.configure_if(setting)


def say_if_untuned_cpu(mode: str, setting: str, tuned: bool) -> None:
  """An accelerator plugin is installed, yet JAX fell back to the CPU: say what was left out."""
  if (not tuned and setting == 'auto' and mode in TUNED_MODES
      and jax.default_backend() == 'cpu' and jax.process_index() == 0):
    plugins = ', '.join(hardware.accelerator_plugins()) or 'a PJRT plugin'
    print(f'JAX runs on the CPU although {plugins} is installed: the process is not tuned for '
          f'XLA:CPU (--cpu_tuning=on does)', file=sys.stderr)


def join_processes() -> None:
  """Starts jax.distributed where the flags, the environment or the cluster name other
  processes; one process alone does nothing."""
  processes.initialize(processes.cluster_from(
      cli_flags.COORDINATOR_ADDRESS.value, cli_flags.NUM_PROCESSES.value,
      cli_flags.PROCESS_ID.value), cli_flags.COORDINATOR_TIMEOUT.value)
