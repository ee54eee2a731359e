"""clu metric collections, accumulated on the device by the training and evaluation steps."""

import flax
import jax
import jax.numpy as jnp
from clu import metrics


def _top5_correct(logits: jax.Array, labels: jax.Array, **_) -> jax.Array:
  top5 = jax.lax.top_k(logits, 5)[1]
  return jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32)


@flax.struct.dataclass


class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass


class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy
  top5_accuracy: metrics.Average.from_fun(_top5_correct)
