"""The weight commands: convert PyTorch or timm weights once (config.model.pretrained then reads
the .msgpack), and show an EfficientNet-Lite's ImageNet top-5 for two sample photos, the check
that the real weights load right."""

import pathlib

import flax
import jax
import numpy as np

from cifar100_flax import files, models
from cifar100_flax.errors import UsageError
from cifar100_flax.models import efficientnet, pretrained

PHOTOS = ('chelsea', 'coffee')  # scikit-image's sample photos: a cat and a cup of coffee


def convert(source: str, out: str, model_name: str) -> None:
  """Writes `source`'s weights, converted for `model_name`, to `out` (.msgpack) whole."""
  if model_name not in pretrained.CONVERTERS:
    raise UsageError(f'--model={model_name}: no converter for it; there are '
                     f'{sorted(pretrained.CONVERTERS)}')
  variables = jax.tree.map(np.asarray, pretrained.load(source, model_name))
  files.write_bytes(pathlib.Path(out), flax.serialization.msgpack_serialize(variables))
  count = sum(v.size for v in jax.tree.leaves(variables))
  print(f'{out}: {count:,} values for {model_name}')


def photos(model_name: str, top: int = 5) -> None:
  """Prints `model_name`'s (an EfficientNet-Lite with ImageNet weights) top classes for PHOTOS."""
  if model_name not in pretrained.IMAGENET_LITE_NAMES:
    raise UsageError(f'--model={model_name}: ImageNet weights ship for '
                     f'{list(pretrained.IMAGENET_LITE_NAMES)} only')
  import skimage.data  # an extra (pyproject: photos) that only this command needs
  variant = int(model_name.removeprefix('efficientnet_lite'))
  model = models.create_model(model_name, 1000)
  resolution = efficientnet.VARIANTS[variant][2]  # the variant's native size, as it was trained
  images = {name: pretrained.center_crop(getattr(skimage.data, name)(), resolution)
            for name in PHOTOS}
  batch = (np.stack(list(images.values())) / 255 - 0.5) / 0.5  # the weights' normalisation
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
  variables = pretrained.fit_to_model(pretrained.efficientnet_lite_imagenet(variant), template)
  probs = jax.nn.softmax(model.apply(variables, batch, train=False))
  names = pretrained.imagenet_class_names()
  for photo, p in zip(images, np.asarray(probs)):
    best = np.argsort(p)[::-1][:top]
    print(f'{photo}: ' + ', '.join(f'{names[i]} {p[i]:.3f}' for i in best))
