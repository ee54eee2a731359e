"""One Orbax manager keeps the newest N and the best; damage is recognised, other errors move
nothing; runs of the two-folder layout (checkpoints/latest, checkpoints/best) resume into it."""

import json
import tarfile

import pytest

from cifar100_flax.config import loading
from cifar100_flax.errors import CheckpointError
from cifar100_flax.evaluation import evaluate
from cifar100_flax.training import checkpoints, loop, states
from tests.helpers import REPO, best_step, saved_steps, tiny_config

TWO_FOLDER_RUN = REPO / 'tests' / 'fixtures' / 'two_folder_run.tar.gz'


def _state(step: int):
  state, _ = states.create_train_state(tiny_config(), steps_per_epoch=1)
  return state.replace(step=step)


def test_the_newest_n_and_the_best_are_kept(tmp_path):
  with checkpoints.Checkpointer(str(tmp_path), keep=2) as checkpointer:
    for step, is_best in [(1, True), (2, False), (3, False), (4, False)]:
      checkpointer.save(_state(step), {'step': step}, is_best)
  assert saved_steps(tmp_path) == [1, 3, 4] and best_step(tmp_path) == 1
  with checkpoints.Checkpointer(str(tmp_path), keep=2) as checkpointer:  # as a resumed run
    checkpointer.save(_state(5), {'step': 5}, is_best=True)
    checkpointer.save(_state(5), {'step': 5}, is_best=False)  # the same step again: kept once
  assert saved_steps(tmp_path) == [4, 5] and best_step(tmp_path) == 5


@pytest.mark.parametrize('error, damage', [
    (json.JSONDecodeError('Expecting value', '', 0), True),
    (ValueError('DATA_LOSS: Error reading "state/d/0"'), True),
    (FileNotFoundError(2, 'No such file or directory'), True),
    (ValueError('an array of another dtype'), False),
    (RuntimeError('DATA_LOSS: a transient failure of a remote file system'), False),
    (TimeoutError('the file system did not answer'), False),
])
def test_only_recognised_damage_counts_as_damage(error, damage):
  assert checkpoints.is_damage(error) is damage
  wrapped = RuntimeError('orbax wrapped it')
  wrapped.__cause__ = error
  assert checkpoints.is_damage(wrapped) is damage


def test_an_unclassified_error_moves_nothing(tmp_path, monkeypatch):
  with checkpoints.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(_state(3), {'step': 3}, is_best=True)

  def fails(*args, **kwargs):
    raise TimeoutError('the file system did not answer')
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'restore', fails)
  with pytest.raises(CheckpointError, match='nothing was changed'):
    with checkpoints.Checkpointer(str(tmp_path)) as checkpointer:
      checkpointer.restore_latest(_state(0))
  assert saved_steps(tmp_path) == [3] and not (tmp_path / 'checkpoints' / 'unreadable').exists()


def test_a_two_folder_run_resumes_saves_in_one_folder_and_evaluates(mock_cifar, tmp_path):
  """tests/fixtures/two_folder_run.tar.gz: tests/tiny_config.py trained by commit e73b751 (before
  one manager), stopped at step 10 of 20: latest/10 and best/10."""
  with tarfile.open(TWO_FOLDER_RUN) as archive:
    archive.extractall(tmp_path, filter='data')
  workdir = tmp_path / 'two_folder_run'
  config = loading.load_config(str(workdir))
  with checkpoints.Checkpointer(str(workdir), read_only=True) as checkpointer:
    state, progress = checkpointer.restore_latest(_state(0))
  assert int(state.step) == 10 and progress['best_step'] == 10
  progress = loop.train_and_evaluate(config, str(workdir))
  assert progress['total_steps'] == 20 and saved_steps(workdir)[-1] == 20
  assert (workdir / 'checkpoints' / 'latest' / '10').is_dir()  # the old folders are kept
  report = evaluate.evaluate(config, str(workdir))
  assert report['checkpoint_step'] == progress['best_step']
  with checkpoints.Checkpointer(str(workdir), read_only=True) as checkpointer:
    newest, _ = checkpointer.restore_latest(_state(0))
  assert int(newest.step) == 20  # from the new layout, not the old folders
