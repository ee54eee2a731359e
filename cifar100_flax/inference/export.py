"""A trained run as one file that runs without this code or its training stack.

  onnx        model.onnx: onnxruntime, TensorRT, OpenVINO (converted by jax2onnx)
  stablehlo   model.jax_export: jax.export's serialised StableHLO for CPU, CUDA, ROCm and TPU;
              jax.export.deserialize(bytes).call(images) runs it with JAX alone
  savedmodel  saved_model/: a TensorFlow SavedModel (jax2tf), for TF Serving and TensorFlow

Each holds one function, uint8 [batch, 32, 32, 3] RGB images -> float32 [batch, 100] class
probabilities for any batch size, with what `--mode eval` does inside it: the preprocessing, the
resizing to the evaluated size, the test-time augmentation, and the evaluated weights (EMA,
recalibrated BatchNorm statistics). It is built with XLA's convolutions, as a oneDNN custom call
could not travel. ONNX computes in float32 even for a bfloat16 run, as onnxruntime has no
bfloat16 convolutions on a CPU; the other two compute in the run's dtype, exactly as eval does.
Every export is run once after writing and compared with JAX on the same images, before it
takes the previous one's place together with its FILE.json.
"""

import functools
import importlib.util
import json
import pathlib
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax._src import core as jax_core

from cifar100_flax import console, files
from cifar100_flax.data import cifar100
from cifar100_flax.errors import UsageError
from cifar100_flax.training import restore, states, steps

FORMATS = ('onnx', 'stablehlo', 'savedmodel')
FILE_NAMES = {'onnx': 'model.onnx', 'stablehlo': 'model.jax_export', 'savedmodel': 'saved_model'}
# Where a format's converter comes from, when it is missing.
_NEEDS = {'onnx': (('jax2onnx', 'onnx', 'onnx_ir', 'onnxruntime'),
                   'pip install --no-deps -r requirements-export.txt'),
          'savedmodel': (('tensorflow',), 'pip install tensorflow-cpu')}
_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


def inference_function(state: states.ModelState, config: ml_collections.ConfigDict,
                       dtype: str | None = None) -> Callable[[jax.Array], jax.Array]:
  """uint8 [B, 32, 32, 3] images -> [B, 100] probabilities, as eval computes them, with XLA's
  convolutions, computing in `dtype` (default: the run's)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.dtype = dtype or config.model.dtype
  state = state.replace(apply_fn=states.create_model(config, 'xla').apply)
  return lambda images: jax.nn.softmax(steps.predict_logits(state, images, config)).astype(
      jnp.float32)


def export(config: ml_collections.ConfigDict, workdir: str, fmt: str,
           output: str | None = None) -> pathlib.Path:
  """Writes `workdir`'s evaluated model in `fmt` (see FORMATS) to the folder `output` (default
  WORKDIR/export), with FILE.json beside it (classes, shapes, the check's difference), and
  returns the model's path."""
  if fmt not in FORMATS:
    raise UsageError(f'--format={fmt}: one of {", ".join(FORMATS)}')
  problem = format_problem(fmt)
  if problem:
    raise UsageError(f'--format={fmt} {problem}')
  with console.phase(f'restoring {workdir}'):
    state, _ = restore.restore_model(config, workdir)  # with every process, if several
  out = pathlib.Path(output or pathlib.Path(workdir) / 'export')
  if jax.process_index() != 0:  # one writer
    return out / FILE_NAMES[fmt]
  return write(jax.device_get(state), config, fmt, out, workdir)


def format_problem(fmt: str) -> str | None:
  """Why `fmt` cannot be written with what is installed ('needs ...'), or None."""
  modules, install = _NEEDS.get(fmt, ((), ''))
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    return f'needs {", ".join(missing)}: {install}'
  if fmt == 'onnx' and not hasattr(jax_core, 'ClosedJaxpr'):
    # jax2onnx 0.17.1 (its newest release, 2026-12) converts jitted calls with
    # jax._src.core.ClosedJaxpr, which JAX 0.12 folded into Jaxpr.
    return (f'needs a jax2onnx that converts with JAX {jax.__version__}; the newest reads '
            f'ClosedJaxpr, which JAX 0.12 removed: export --format=stablehlo, or install '
            f'requirements.txt\'s JAX')
  if fmt == 'savedmodel':
    return _savedmodel_problem()
  return None


@functools.cache
def _savedmodel_problem() -> str | None:
  """Why TensorFlow cannot run what jax2tf writes with this JAX, or None: tried on x + 1.

  A SavedModel holds JAX's StableHLO, which only a TensorFlow of JAX's time reads: TensorFlow
  2.21 fails on JAX 0.12.1's shape assertions ('unregistered operation vhlo.custom_call_v2').
  """
  import tensorflow as tf
  from jax.experimental import jax2tf
  probe = tf.function(jax2tf.convert(lambda x: x + 1, polymorphic_shapes=['(batch,)']),
                      autograph=False, input_signature=[tf.TensorSpec([None], tf.float32)])
  try:
    probe(tf.zeros([2]))
  except tf.errors.InvalidArgumentError as e:
    found = re.search(r': error: (?:loc\(\S+\): )?(.*?)(?: found in |$)', str(e), re.MULTILINE)
    why = found.group(1) if found else 'it cannot read the module'
    return (f'needs a TensorFlow that reads the StableHLO of JAX {jax.__version__}; TensorFlow '
            f'{tf.__version__} does not ({why}): export --format=stablehlo, or install '
            f'requirements.txt\'s JAX and TensorFlow')
  return None


def write(state: states.ModelState, config: ml_collections.ConfigDict, fmt: str,
          out: pathlib.Path, source: str = '') -> pathlib.Path:
  """Writes `state` in `fmt` to the folder `out` (see export); `source`: the workdir, for the
  record."""
  out.mkdir(parents=True, exist_ok=True)
  path = out / FILE_NAMES[fmt]
  dtype = 'float32' if fmt == 'onnx' else config.model.dtype
  fn = inference_function(state, config, dtype)
  metadata = _metadata(config, source, int(state.step), fmt, dtype)
  # Written beside the previous export, checked, then put in its place with its record: a
  # failure or a signal at any point leaves the previous pair whole, and of two exports at once
  # one pair or the other is found.
  with files.replaced_together([path, path.with_name(path.name + '.json')]) as (model, record):
    with console.phase(f'exporting to {path}'):
      run_exported = {'onnx': _onnx, 'stablehlo': _stablehlo, 'savedmodel': _savedmodel}[fmt](
          fn, model, metadata)
    with console.phase('comparing it with JAX'):
      metadata['max_abs_difference'] = _max_difference(jax.jit(fn), run_exported)
    record.write_text(json.dumps(metadata, indent=1))
  console.say(f"wrote {path} (largest difference from JAX's probabilities: "
              f"{metadata['max_abs_difference']:.2g})")
  return path


def _metadata(config: ml_collections.ConfigDict, workdir: str, step: int, fmt: str,
              dtype: str) -> dict:
  return {'format': fmt, 'file': FILE_NAMES[fmt], 'model': config.model.name,
          'workdir': str(workdir), 'checkpoint_step': step,
          'input': f'uint8 [batch, {", ".join(map(str, cifar100.IMAGE_SHAPE))}] RGB images',
          'output': f'float32 [batch, {cifar100.NUM_CLASSES}] class probabilities',
          'dtype': dtype,
          'class_names': list(cifar100.CLASS_NAMES),
          'coarse_class_names': list(cifar100.COARSE_CLASS_NAMES),
          'fine_to_coarse': cifar100.FINE_TO_COARSE.tolist()}


def _abstract_images(batch) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch, *cifar100.IMAGE_SHAPE), jnp.uint8)


def _onnx(fn: Callable, path: pathlib.Path, metadata: dict) -> Callable:
  import jax2onnx
  import onnx
  import onnx_ir
  import onnxruntime
  from onnx_ir.passes.common import DeduplicateHashedInitializersPass
  model = jax2onnx.to_onnx(fn, [_abstract_images('batch')], model_name='cifar100',
                           input_names=['images'], output_names=['probabilities'])
  # Each test-time view gets its own copy of the convolution kernels (folded into ONNX's layout):
  # six views of EfficientNet-Lite0 made 83 MB of its 15. (The pass reads the serialised
  # tensors: jax2onnx's in-memory ones can be non-contiguous views, which it rejects.)
  model = DeduplicateHashedInitializersPass()(onnx_ir.from_proto(model)).model
  # The labels travel in the file: a NumPy-only user reads them from the session's metadata.
  model.metadata_props.update({key: json.dumps(value) for key, value in metadata.items()})
  onnx_ir.save(model, str(path))
  onnx.checker.check_model(str(path))
  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  return lambda images: session.run(None, {'images': images})[0]


def _stablehlo(fn: Callable, path: pathlib.Path, metadata: dict) -> Callable:
  del metadata  # FILE.json carries it
  batch, = jax.export.symbolic_shape('batch')
  exported = jax.export.export(jax.jit(fn), platforms=_PLATFORMS)(_abstract_images(batch))
  with path.open('wb') as f:  # the temporary of write()'s files.replaced_together
    f.write(exported.serialize())
  return jax.export.deserialize(path.read_bytes()).call


def _savedmodel(fn: Callable, path: pathlib.Path, metadata: dict) -> Callable:
  del metadata  # FILE.json carries it
  import tensorflow as tf
  from jax.experimental import jax2tf
  module = tf.Module()
  module.serve = tf.function(
      jax2tf.convert(fn, polymorphic_shapes=['(batch, 32, 32, 3)'],
                     native_serialization_platforms=_PLATFORMS),
      autograph=False,
      input_signature=[tf.TensorSpec([None, *cifar100.IMAGE_SHAPE], tf.uint8, name='images')])
  tf.saved_model.save(module, str(path), signatures=module.serve)
  loaded = tf.saved_model.load(str(path))
  return lambda images: loaded.serve(tf.constant(images)).numpy()


def _max_difference(jitted_fn: Callable, run_exported: Callable) -> float:
  """The largest difference of the exported model's probabilities from JAX's, on random images
  at two batch sizes (the batch dimension must be free)."""
  rng = np.random.default_rng(0)
  differences = []
  for batch in (1, 5):
    images = rng.integers(0, 256, (batch, *cifar100.IMAGE_SHAPE), dtype=np.uint8)
    differences.append(np.abs(np.asarray(run_exported(images)) - np.asarray(jitted_fn(images))))
  return float(max(d.max() for d in differences))
