"""The entry point: parse the flags, start the process up, run the mode; every error in what the
user gave is one line (--traceback shows it whole)."""

import sys

from absl import app

from cifar100_flax.cli import config_errors, modes, startup
from cifar100_flax.cli import flags as cli_flags
from cifar100_flax.errors import UserError, one_line

USAGE = """Train, evaluate and report on a CIFAR-100 classifier.

  python main.py --config configs/cnn.py --workdir runs/cnn               # train (or resume)
  python main.py --workdir runs/cnn --mode eval                           # test-set metrics
  python main.py --workdir runs/cnn --mode eval --split validation        # on the carve-out
  python main.py --mode eval --workdir runs/a --workdir runs/b --output runs/ab   # an ensemble
  python main.py --mode report --workdir runs/cnn [--workdir runs/b ...]  # runs/cnn/report/*.pdf
  python main.py --mode predict --workdir runs/cnn --images photos/ cat.jpg  # your own pictures
  python main.py --mode export --workdir runs/cnn --format onnx           # export/model.onnx
  python main.py --mode convert --weights resnet50.pth --model resnet50 --output r50.msgpack
  python main.py --mode photos --model efficientnet_lite0                 # ImageNet weights check

Any key of the config can be overridden, e.g. --config.optim.learning_rate=0.05
--config.train.num_epochs=5; every key, with its meaning and default, is in
cifar100_flax/config/defaults.py. --print_config prints the resolved config (with --config and
its overrides, or a --workdir's config.json) and exits. --helpfull lists every flag.

Several processes (hosts) form one run with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I on each (process 0 listens at HOST:PORT), or by themselves under SLURM, Open MPI
and on Cloud TPU; see README, Many devices and hosts.

Errors in what the user gave (flags, config values, data, checkpoints) are one line without a
traceback; --traceback (or CIFAR100_FLAX_TRACEBACK=1) shows it. TensorFlow's, XLA's and absl's
start-up messages are off unless --verbosity=0 (absl's flag: 0 is INFO, 1 DEBUG) asks for them.
`python -m cifar100_flax` and the `cifar100-flax` script are the same command.
"""

def main(argv: list[str]) -> None:
  startup.exit_on_signals()
  mode = cli_flags.MODE.value
  try:
    command = _command(argv)
    if cli_flags.PRINT_CONFIG.value:
      print(modes.resolved_config(command))
      return
    startup.quiet_logs()
    tuned = startup.tune_for_cpu(mode, cli_flags.CPU_TUNING.value)  # before JAX's backends start
    startup.start_jax(command)
    startup.say_if_untuned_cpu(mode, cli_flags.CPU_TUNING.value, tuned)
    modes.check_usage(command)
    modes.run(command)
  except UserError as e:
    if cli_flags.TRACEBACK.value:
      raise
    sys.exit(f'error: {one_line(e)}')
  except KeyboardInterrupt as e:  # the training loop's says where it stopped
    if str(e):
      sys.exit(f'interrupted: {e}')
    # A second Ctrl-C: Orbax may still be writing the stop's checkpoint in its threads, which the
    # interpreter's shutdown would break, each printing its traceback. Like a kill, leaving now
    # keeps every finished checkpoint; the next start removes the unfinished one.
    startup.stop_at_once(f'interrupted: {startup.STOPPED_AT_ONCE}')


def _command(argv: list[str]) -> modes.Command:
  """The flags as a modes.Command."""
  mode = cli_flags.MODE.value
  if argv[1:] and mode != 'predict':
    raise UserError(f'unexpected arguments {" ".join(argv[1:])} (flags are --name=value)')
  return modes.Command(
      mode=mode, workdirs=cli_flags.WORKDIR.value or [], config=config_errors.given_config(),
      images=(cli_flags.IMAGES.value or []) + argv[1:],  # the shell's expansion of photos/*.jpg
      output=cli_flags.OUTPUT.value, split=cli_flags.SPLIT.value, top_k=cli_flags.TOP_K.value,
      format=cli_flags.FORMAT.value, gradcam_layer=cli_flags.GRADCAM_LAYER.value,
      paper=cli_flags.PAPER.value,
      weights=cli_flags.WEIGHTS.value, model=cli_flags.MODEL.value,
      overrides=config_errors.run_overrides(sys.argv))


def run() -> None:
  """`python main.py`, `python -m cifar100_flax` and the `cifar100-flax` script."""
  sys.modules['__main__'].__doc__ = USAGE  # what absl's --help prints, the same for all three
  # config_flags reads the overrides from sys.argv itself: flat keys are placed there.
  sys.argv = config_errors.nested_overrides(sys.argv)
  app.run(main, flags_parser=config_errors.parse_flags)
