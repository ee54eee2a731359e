"""main.py with one fault injected, for the battery (tests/faults/):

  python -m tests.faults.faulty_main FAULT [main.py's flags]

FAULT is one of
  none                 no fault (the same process, to compare with)
  offline              the dataset's download host does not answer
  SIG-in-save          SIG (SIGINT, SIGTERM, SIGKILL) reaches the process while it writes the
                       checkpoint of step 10; SIG2-in-save sends it twice
"""

import os
import runpy
import signal
import sys

from tests.helpers import REPO

SAVE_STEP = 10


def _signal_during_save(name: str, times: int) -> None:
  import orbax.checkpoint as ocp
  real_save = ocp.CheckpointManager.save
  sig = getattr(signal, name)

  def save(manager, step, *args, **kwargs):
    if step != SAVE_STEP:
      return real_save(manager, step, *args, **kwargs)
    if sig == signal.SIGKILL:  # mid-write: the asynchronous write has started, not finished
      saved = real_save(manager, step, *args, **kwargs)
      os.kill(os.getpid(), sig)
      return saved
    for _ in range(times):
      os.kill(os.getpid(), sig)  # Python runs the handler at the next bytecode, inside save
    return real_save(manager, step, *args, **kwargs)
  ocp.CheckpointManager.save = save


def _inject(fault: str) -> None:
  if fault == 'offline':
    from cifar100_flax.data import tfds_pipeline
    tfds_pipeline._why_offline = lambda: 'the fault battery is offline'
  elif fault.endswith('-in-save'):
    name = fault.removesuffix('-in-save')
    times = 2 if name.endswith('2') else 1
    _signal_during_save(name.rstrip('2'), times)
  elif fault != 'none':
    sys.exit(f'unknown fault {fault!r}')


if __name__ == '__main__':
  _inject(sys.argv[1])
  sys.argv = ['main.py', *sys.argv[2:]]
  runpy.run_path(str(REPO / 'main.py'), run_name='__main__')
