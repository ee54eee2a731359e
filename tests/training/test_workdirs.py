"""One training of a workdir at a time: a second one waits for the first to end, or (several
processes) is refused; the lock is let go, and its file removed, when a training ends."""

import subprocess
import sys
import threading
import time

import pytest

from cifar100_flax.errors import UsageError
from cifar100_flax.training import workdirs

# A process that holds the lock as a training would, until its stdin closes.
_HOLDER = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, b'process 4094 on vm')
print('held', flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held(tmp_path):
  """The workdir tmp_path, whose lock another process holds until the test closes its stdin."""
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(tmp_path / workdirs.LOCK)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'held\n'
  yield holder
  holder.stdin.close()
  holder.wait()


def test_a_training_alone_does_not_wait_and_leaves_no_lock(tmp_path):
  with workdirs.training(tmp_path, wait=True) as waited:
    assert not waited
    assert (tmp_path / workdirs.LOCK).read_text().startswith('process ')
    assert not workdirs.being_trained(str(tmp_path))  # its own lock
  assert not (tmp_path / workdirs.LOCK).exists()


def test_without_waiting_a_held_workdir_is_refused_naming_its_holder(tmp_path, held):
  assert workdirs.being_trained(str(tmp_path))
  with pytest.raises(UsageError, match='is being trained now by process 4094 on vm: wait'):
    with workdirs.training(tmp_path, wait=False):
      pass


def test_a_waiting_training_starts_once_the_holder_ends(tmp_path, held, capsys):
  def end_holder_soon():
    time.sleep(0.5)
    held.stdin.close()
  threading.Thread(target=end_holder_soon).start()
  with workdirs.training(tmp_path, wait=True) as waited:
    assert waited
    assert not workdirs.being_trained(str(tmp_path))
  said = capsys.readouterr().out
  assert 'is being trained now by process 4094 on vm: waiting until it ends' in said
