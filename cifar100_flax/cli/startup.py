"""What a process does before the work: quiet logs, CPU tuning where JAX will run on the CPU,
joining the other processes of a run and starting JAX, and leaving on a signal in one line."""

import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import jax
from absl import flags
from absl import logging as absl_logging

from cifar100_flax import files, hardware
from cifar100_flax.cli import flags as cli_flags
from cifar100_flax.cli import modes
from cifar100_flax.config import loading
from cifar100_flax.cpu import tuning
from cifar100_flax.training import processes

TUNED_MODES = ('train', 'eval')  # the modes that run the model long enough to gain
STOPPED_AT_ONCE = ('stopped at once, without saving; the checkpoints saved before are kept: '
                   'run the same command to resume')


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
  SIGTERM end the process in one line: outputs are written whole (files.py), so stopping now
  leaves every file as it was. The stop is an exception, which runs every clean-up on its way
  out, unless it lands where Python cannot raise (a garbage collector's or weakref's callback, a
  finaliser, a C extension's call back): those print it as 'Exception ignored' and carry on, so
  the process then leaves at once, as it does on a second signal (the first one lost)."""
  signalled = False

  def leave(signum: int, frame) -> None:
    nonlocal signalled
    message = f'interrupted by signal {signum}; run the same command again'
    if signalled:
      stop_at_once(message)
    signalled = True
    sys.exit(message)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, leave)
  sys.unraisablehook = _stopping_where_ignored(sys.unraisablehook)


def _stopping_where_ignored(previous: Callable[[Any], object]) -> Callable[[Any], None]:
  """An unraisablehook (its argument: sys.UnraisableHookArgs) that stops the process on an exit
  that could not be raised (see exit_on_signals), and leaves every other exception to
  `previous`."""
  def hook(unraisable) -> None:
    stop = unraisable.exc_value
    if isinstance(stop, SystemExit):
      stop_at_once(str(stop.code))
    if isinstance(stop, KeyboardInterrupt):  # training's second Ctrl-C
      stop_at_once(f'interrupted: {STOPPED_AT_ONCE}')
    previous(unraisable)
  return hook


def stop_at_once(message: str) -> NoReturn:
  """Says `message`, removes the temporaries of the outputs being written and ends the process
  now, without unwinding: what is still running (Orbax's threads among them) cannot get in the
  way or print at exit. Every output written before is whole."""
  files.remove_unfinished()
  print(message, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)


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


def start_jax(command: modes.Command) -> None:
  """Joins the other processes of the run where the flags, the environment or the cluster name
  them, checks that each was started with the same command, then starts JAX's backends (which
  must come after jax.distributed, and may not start at all: hardware.start says why)."""
  timeout_seconds = cli_flags.COORDINATOR_TIMEOUT.value
  processes.initialize(processes.cluster_from(
      cli_flags.COORDINATOR_ADDRESS.value, cli_flags.NUM_PROCESSES.value,
      cli_flags.PROCESS_ID.value), timeout_seconds)
  processes.check_same_command(_compared(command), timeout_seconds)
  hardware.start()


def _compared(command: modes.Command) -> dict[str, Any]:
  """What every process of a run must have alike: each of `command`'s values, its config's keys
  one by one (config.train.num_epochs...), as JSON values."""
  compared = {field.name: getattr(command, field.name) for field in dataclasses.fields(command)
              if field.name != 'config'}
  if command.config is not None:
    compared.update(loading.flat_keys(json.loads(command.config.to_json_best_effort()),
                                      'config.'))
  return compared
