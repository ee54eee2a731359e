"""Several processes as one run: start-up (`jax.distributed.initialize`) and agreeing on a flag.

One process needs nothing. Several (the hosts of a GPU cluster or a TPU pod slice, or processes
on one machine) are told apart by `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or are found by
JAX itself on the clusters it knows (SLURM, Open MPI, Cloud TPU) when they hold several tasks.
Every process must be started with the same command (checked as they join); each then runs the
same program on its own slice of each global batch (data/tfds_pipeline.py, sharding); the
collectives between them run over the accelerator's network, or gloo on CPUs.
"""

import dataclasses
import json
import os
import re
import socket
import time
from typing import Any

import jax
import numpy as np
from jax._src import distributed as jax_distributed  # its coordination service's key-value store
from jax.experimental import multihost_utils

from cifar100_flax.errors import UserError

_ADDRESS = re.compile(r'^\[?[\w.:-]+\]?:\d+$')  # HOST:PORT, an IPv6 host in brackets
# A process that stops answering (killed, its host lost) makes the others stop after this.
HEARTBEAT_TIMEOUT_SECONDS = 30
_COMMAND_KEY = 'cifar100-flax-command'  # /<process id>: its command; /verdict: process 0's
_SHOWN_KEYS = 3  # of those that differ, in the one line


class DistributedError(UserError):
  """Processes that cannot form one run: wrong or inconsistent start-up values, no coordinator."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """How this process joins the run: given explicitly, or found by JAX (auto)."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False

  @property
  def is_multi_process(self) -> bool:
    return self.auto or (self.num_processes or 1) > 1


def _cluster_tasks() -> int:
  """Tasks of the job on the clusters whose launchers JAX reads (1 outside them)."""
  for variable in ('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if os.environ.get(variable, '').isdigit():
      return int(os.environ[variable])
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return len(hosts.split(',')) if hosts else 1


def cluster_from(coordinator_address: str | None, num_processes: int | None,
                 process_id: int | None) -> Cluster:
  """The run's cluster from the flags (None: not given), else the JAX_* variables, else what a
  cluster's launcher says. Raises DistributedError for missing, malformed or inconsistent
  values."""
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  for name in given:
    variable = f'JAX_{name.upper()}'
    if given[name] is None and os.environ.get(variable):
      given[name] = os.environ[variable]
  if not any(value is not None for value in given.values()):
    return Cluster(auto=_cluster_tasks() > 1)
  missing = [f'--{name}' for name, value in given.items() if value is None]
  if missing:
    raise DistributedError(f'several processes need all of --coordinator_address, '
                           f'--num_processes and --process_id; {", ".join(missing)} missing')
  address = str(given['coordinator_address'])
  if not _ADDRESS.match(address):
    raise DistributedError(f'--coordinator_address={address!r}: give HOST:PORT, e.g. '
                           f'10.0.0.1:1234 (process 0 listens there)')
  host, port = address.rsplit(':', 1)
  if not 1 <= int(port) <= 65535:  # JAX's coordinator aborts the process on another port
    raise DistributedError(f'--coordinator_address={address!r}: the port must be in 1-65535, '
                           f'e.g. {host}:1234 (a free port of process 0\'s host)')
  try:
    count, index = int(given['num_processes']), int(given['process_id'])
  except ValueError as e:
    raise DistributedError(f'--num_processes and --process_id must be integers ({e})') from e
  if count < 1:
    raise DistributedError(f'--num_processes={count}: at least 1')
  if not 0 <= index < count:
    raise DistributedError(f'--process_id={index}: must be in [0, {count}) for '
                           f'--num_processes={count}')
  return Cluster(address, count, index)


def initialize(cluster: Cluster, timeout_seconds: int = 120) -> None:
  """Joins the other processes, waiting at most `timeout_seconds` for all of them (a coordinator
  that never answers is an error, not a hang); before any other JAX call. Nothing to do for one
  process."""
  if not cluster.is_multi_process:
    return
  where = (f'the coordinator at {cluster.coordinator_address}' if cluster.coordinator_address
           else 'the processes of this cluster job')
  if cluster.coordinator_address and cluster.process_id != 0:
    _wait_for_listener(cluster.coordinator_address, timeout_seconds, where)
  try:
    jax.distributed.initialize(cluster.coordinator_address, cluster.num_processes,
                               cluster.process_id, initialization_timeout=timeout_seconds,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS)
  except Exception as e:  # XLA's errors carry no finer type
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(_hint(where, timeout_seconds, first_line[:200])) from e


def _hint(where: str, timeout_seconds: int, why: str) -> str:
  return (f'could not join {where} within {timeout_seconds} s ({why}). Start every process with '
          f'the same --coordinator_address (process 0\'s host, a free port) and '
          f'--num_processes, each with its own --process_id.')


def _wait_for_listener(address: str, timeout_seconds: int, where: str) -> None:
  """Waits until process 0 listens at `address`. JAX's client ends the process with a C++ fatal
  error, not an exception, when the coordinator does not answer in time; this wait comes first
  so that the common case (process 0 not started, or another address) is a one-line error."""
  host, port = address.rsplit(':', 1)
  deadline = time.monotonic() + timeout_seconds
  while True:
    try:
      with socket.create_connection((host.strip('[]'), int(port)), timeout=1):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(_hint(where, timeout_seconds, f'nothing listens there: {e}')) from e
      time.sleep(0.5)


def check_same_command(command: dict[str, Any], timeout_seconds: int) -> None:
  """Raises DistributedError in every process, process 0 included, unless all were started with
  the same `command` (each flag and config key: its value, which JSON can hold). Processes with
  different commands would compile different programs and wait for each other in the first
  collective until the heartbeat ends them with C++ crash dumps; right after joining, each
  publishes its command in the coordination service's key-value store, process 0 compares them
  and publishes its verdict, which every process reads. Nothing to do for one process."""
  client, index = jax_distributed.global_state.client, jax_distributed.global_state.process_id
  if client is None:
    return
  timeout_ms = timeout_seconds * 1000
  published = json.dumps(command)
  client.key_value_set(f'{_COMMAND_KEY}/{index}', published)
  if index == 0:  # compared as the others' are read back: a tuple is a list
    verdict = _differences(client, json.loads(published),
                           jax_distributed.global_state.num_processes, timeout_ms)
    client.key_value_set(f'{_COMMAND_KEY}/verdict', verdict)
  else:
    verdict = client.blocking_key_value_get(f'{_COMMAND_KEY}/verdict', timeout_ms)
  if verdict:
    raise DistributedError(verdict)


def _differences(client, command: dict[str, Any], count: int, timeout_ms: int) -> str:
  """'' if every process's command is process 0's `command`, else what differs, in one line."""
  differing = {}
  for index in range(1, count):
    other = json.loads(client.blocking_key_value_get(f'{_COMMAND_KEY}/{index}', timeout_ms))
    keys = sorted(key for key in command.keys() | other.keys()
                  if command.get(key) != other.get(key))
    if keys:
      differing[index] = (other, keys)
  if not differing:
    return ''
  index, (other, keys) = next(iter(differing.items()))
  shown = '; '.join(f'{key}={other.get(key)!r} where process 0 has {command.get(key)!r}'
                    for key in keys[:_SHOWN_KEYS])
  more = f' (and {len(keys) - _SHOWN_KEYS} more)' if len(keys) > _SHOWN_KEYS else ''
  also = (f' (other processes that differ: {", ".join(map(str, list(differing)[1:]))})'
          if len(differing) > 1 else '')
  return (f'the processes of this run were started with different commands: process {index} '
          f'has {shown}{more}{also}. Start every process with the same flags and config, each '
          f'with its own --process_id.')


def any_process(flag: bool) -> bool:
  """Whether `flag` is set in any process (every process must call this at the same point)."""
  if jax.process_count() == 1:
    return flag
  flags = multihost_utils.process_allgather(np.array([flag], np.int32))
  return bool(np.asarray(flags).any())
