import json
import re

import pytest

from cifar100_flax.training import processes
from cifar100_flax.training.processes import Cluster, DistributedError, jax_distributed

_LAUNCHER_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                       'SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
                       'TPU_WORKER_HOSTNAMES')


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
  for variable in _LAUNCHER_VARIABLES:
    monkeypatch.delenv(variable, raising=False)


def test_one_process_needs_nothing():
  cluster = processes.cluster_from(None, None, None)
  assert cluster == Cluster() and not cluster.is_multi_process
  processes.initialize(cluster)  # a no-op: nothing to join
  assert processes.any_process(True) and not processes.any_process(False)


def test_flags_name_the_cluster():
  cluster = processes.cluster_from('127.0.0.1:1234', 2, 1)
  assert cluster == Cluster('127.0.0.1:1234', 2, 1) and cluster.is_multi_process
  assert not processes.cluster_from('[::1]:1234', 1, 0).is_multi_process


def test_the_jax_variables_stand_in_for_the_flags(monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'node-0.cluster:8476')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert processes.cluster_from(None, None, None) == Cluster('node-0.cluster:8476', 4, 3)
  assert processes.cluster_from(None, None, 2).process_id == 2  # a flag wins


@pytest.mark.parametrize('variable, value, multi', [
    ('SLURM_NTASKS', '8', True), ('SLURM_NTASKS', '1', False),
    ('OMPI_COMM_WORLD_SIZE', '2', True), ('TPU_WORKER_HOSTNAMES', 'w-0,w-1', True),
    ('TPU_WORKER_HOSTNAMES', 'w-0', False)])
def test_a_cluster_launcher_with_several_tasks_is_left_to_jax(monkeypatch, variable, value, multi):
  monkeypatch.setenv(variable, value)
  cluster = processes.cluster_from(None, None, None)
  assert cluster.auto == multi and cluster.coordinator_address is None


@pytest.mark.parametrize('flags, message', [
    (('127.0.0.1:1234', 2, None), '--process_id missing'),
    ((None, 2, 0), '--coordinator_address missing'),
    (('localhost', 2, 0), "'localhost': give HOST:PORT"),
    (('127.0.0.1:1234', 0, 0), '--num_processes=0: at least 1'),
    (('127.0.0.1:1234', 2, 2), r'--process_id=2: must be in \[0, 2\)'),
    (('127.0.0.1:1234', 2, -1), r'--process_id=-1: must be in \[0, 2\)'),
    (('127.0.0.1:99999', 2, 0), 'the port must be in 1-65535, e.g. 127.0.0.1:1234'),
    (('[::1]:0', 2, 0), 'the port must be in 1-65535'),
])
def test_wrong_or_inconsistent_values_are_one_line_errors(flags, message):
  with pytest.raises(DistributedError, match=message):
    processes.cluster_from(*flags)


def test_a_malformed_variable_is_named(monkeypatch):
  monkeypatch.setenv('JAX_NUM_PROCESSES', 'two')
  with pytest.raises(DistributedError, match='must be integers'):
    processes.cluster_from('127.0.0.1:1234', None, 0)


class _KeyValueStore:
  """The coordination service's key-value store as jax.distributed's client sees it."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key: str, value: str) -> None:
    assert key not in self.values
    self.values[key] = value

  def blocking_key_value_get(self, key: str, timeout_ms: int) -> str:
    return self.values[key]


def _as_process_0_of(monkeypatch, others: list[dict]) -> _KeyValueStore:
  """This process as process 0 of 1 + len(others), the others' commands already published."""
  store = _KeyValueStore()
  for index, command in enumerate(others, start=1):
    store.key_value_set(f'cifar100-flax-command/{index}', json.dumps(command))
  for name, value in (('client', store), ('process_id', 0), ('num_processes', len(others) + 1)):
    monkeypatch.setattr(jax_distributed.global_state, name, value)
  return store


def test_one_command_in_every_process_goes_on(monkeypatch):
  command = {'mode': 'train', 'config.train.num_epochs': 2, 'overrides': {'widths': (8, 16)}}
  store = _as_process_0_of(monkeypatch, [command, command])
  processes.check_same_command(command, timeout_seconds=1)
  assert store.values['cifar100-flax-command/verdict'] == ''


def test_different_commands_stop_every_process_naming_the_keys(monkeypatch):
  command = {'mode': 'train', 'config.train.num_epochs': 2, 'config.train.seed': 0}
  other = {**command, 'config.train.num_epochs': 3, 'config.train.seed': 1, 'mode': 'eval',
           'config.optim.name': 'adam'}
  store = _as_process_0_of(monkeypatch, [command, other, other])
  expected = ("process 2 has config.optim.name='adam' where process 0 has None; "
              "config.train.num_epochs=3 where process 0 has 2; config.train.seed=1 where "
              "process 0 has 0 (and 1 more) (other processes that differ: 3)")
  with pytest.raises(DistributedError, match=re.escape(expected)):
    processes.check_same_command(command, timeout_seconds=1)
  # The others read process 0's verdict, and stop with the same line.
  assert expected in store.values['cifar100-flax-command/verdict']
