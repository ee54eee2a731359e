import pytest

from cifar100_flax.training import processes
from cifar100_flax.training.processes import Cluster, DistributedError

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
])
def test_wrong_or_inconsistent_values_are_one_line_errors(flags, message):
  with pytest.raises(DistributedError, match=message):
    processes.cluster_from(*flags)


def test_a_malformed_variable_is_named(monkeypatch):
  monkeypatch.setenv('JAX_NUM_PROCESSES', 'two')
  with pytest.raises(DistributedError, match='must be integers'):
    processes.cluster_from('127.0.0.1:1234', None, 0)
