"""Data parallelism with jit: a 1-D device mesh, batches split along it, state replicated.

Under jit the global batch is one array, so BatchNorm's statistics are computed over the whole
batch on every device count, with no `axis_name` or explicit collectives.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def create_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec('data'))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This process's part of a global batch -> global arrays split along the batch axis."""
  sharding = data_sharded(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def shard_whole_batch(batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """A batch that every process holds whole -> a global array split along the batch axis, each
  process putting only its own devices' rows."""
  return jax.make_array_from_callback(batch.shape, data_sharded(mesh), lambda index: batch[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))
