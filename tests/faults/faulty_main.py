"""main.py with one fault injected, for the battery (tests/faults/):

  python -m tests.faults.faulty_main FAULT [main.py's flags]

FAULT is one of
  none                 no fault (the same process, to compare with)
  offline              the dataset's download host does not answer
  SIG-in-save          SIG (SIGINT, SIGTERM, SIGKILL) reaches the process while it writes the
                       checkpoint of step 10; SIG2-in-save sends it twice
  SIG-in-gc            SIG reaches the process inside a garbage collection's callback (where
                       Python cannot raise), as the first output's temporary file is opened
  SIG-at-MODULE:NAME   SIG reaches the process as the function MODULE.NAME is first called (NAME
                       may be dotted: tensorflow:saved_model.save)
  hang-at-MODULE:NAME  its first call prints 'hanging' and never returns, as a read from a file
                       system that does not answer
  pause-at-MODULE:NAME its first call prints 'paused' and waits for a line on stdin
"""

import functools
import importlib
import os
import runpy
import signal
import sys
import threading
from collections.abc import Callable

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


def _signal_in_gc_while_writing(name: str) -> None:
  import gc
  import pathlib
  real_open = pathlib.Path.open
  sig = getattr(signal, name)

  def in_collection(phase, info):
    gc.callbacks.remove(in_collection)
    signal.raise_signal(sig)  # its handler runs here, before raise_signal returns

  def open_(path, mode='r', *args, **kwargs):
    opened = real_open(path, mode, *args, **kwargs)
    if 'w' in mode and path.name.endswith('.partial'):  # files.replaced's temporary
      pathlib.Path.open = real_open
      gc.callbacks.append(in_collection)
      gc.collect()
    return opened
  pathlib.Path.open = open_


def _on_first_call(target: str, before: Callable[[], None]) -> None:
  """Runs `before` as the function `target` (MODULE:NAME) is first called."""
  module, name = target.split(':')
  *owners, attribute = name.split('.')
  owner = functools.reduce(getattr, owners, importlib.import_module(module))
  real = getattr(owner, attribute)

  def first_call(*args, **kwargs):
    setattr(owner, attribute, real)
    before()  # a signal's handler runs at the next bytecode: here, before the real call
    return real(*args, **kwargs)
  setattr(owner, attribute, first_call)


def _say_and_wait(word: str, wait: Callable[[], object]) -> Callable[[], None]:
  def before() -> None:
    print(word, flush=True)
    wait()
  return before


def _action(name: str) -> Callable[[], None]:
  if name == 'hang':
    return _say_and_wait('hanging', threading.Event().wait)
  if name == 'pause':
    return _say_and_wait('paused', sys.stdin.readline)
  return functools.partial(os.kill, os.getpid(), getattr(signal, name))


def _inject(fault: str) -> None:
  if fault == 'offline':
    from cifar100_flax.data import tfds_pipeline
    tfds_pipeline._why_offline = lambda: 'the fault battery is offline'
  elif fault.endswith('-in-save'):
    name = fault.removesuffix('-in-save')
    times = 2 if name.endswith('2') else 1
    _signal_during_save(name.rstrip('2'), times)
  elif fault.endswith('-in-gc'):
    _signal_in_gc_while_writing(fault.removesuffix('-in-gc'))
  elif '-at-' in fault:
    action, target = fault.split('-at-', 1)
    _on_first_call(target, _action(action))
  elif fault != 'none':
    sys.exit(f'unknown fault {fault!r}')


if __name__ == '__main__':
  _inject(sys.argv[1])
  sys.argv = ['main.py', *sys.argv[2:]]
  runpy.run_path(str(REPO / 'main.py'), run_name='__main__')
