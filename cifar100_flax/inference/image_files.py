"""The user's own pictures as CIFAR-sized uint8 images: finding them, decoding, resizing.

Any size and mode Pillow reads (JPEG, PNG, BMP, WebP, GIF, TIFF; greyscale, palette, RGBA,
16-bit) becomes RGB; the central square is resized to 32x32 with antialiasing, as CIFAR's
objects fill the frame. What the model does at its own image_size follows on the device.
"""

import concurrent.futures
import dataclasses
import glob
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from cifar100_flax import console
from cifar100_flax.data import cifar100

SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')
_SIXTEEN_BIT_GREY = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


@dataclasses.dataclass(frozen=True)
class Failure:
  """A path that named no readable image, and why."""
  path: str
  reason: str


def find(patterns: Sequence[str]) -> tuple[list[str], list[Failure]]:
  """The files `patterns` name, in order and once each: a file as it is (whatever its suffix), a
  folder's image files (recursively, sorted), a glob's matches (`**` recurses). A pattern that
  matches nothing is a Failure."""
  found, failures = {}, []
  for pattern in patterns:
    matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern, recursive=True))
    if not matches:
      failures.append(Failure(pattern, 'no such file, folder or match'))
    for match in matches:
      for path in _files(pathlib.Path(match)):
        found.setdefault(path, None)
  return list(found), failures


def _files(path: pathlib.Path) -> list[str]:
  if not path.is_dir():
    return [str(path)]
  return sorted(str(p) for p in path.rglob('*')
                if p.suffix.lower() in SUFFIXES and not p.name.startswith('.') and p.is_file())


def read(path: str) -> np.ndarray:
  """uint8 [32, 32, 3] RGB: the first frame, turned upright (EXIF), its central square resized."""
  with PIL.Image.open(path) as image:
    image.seek(0)  # An animated GIF, WebP or PNG: its first frame.
    rgb = _rgb(PIL.ImageOps.exif_transpose(image))
  # Cropped before resizing: resizing a box of the image would blend in pixels beside it.
  side = min(rgb.size)
  left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
  square = rgb.crop((left, top, left + side, top + side))
  return np.asarray(square.resize(cifar100.IMAGE_SHAPE[:2], PIL.Image.Resampling.BICUBIC),
                    np.uint8)


def _rgb(image: PIL.Image.Image) -> PIL.Image.Image:
  # Pillow's own conversion clips 16-bit values at 255 instead of scaling them; floating-point
  # greyscale (TIFF) is in [0, 1].
  scale = 1 / 257 if image.mode in _SIXTEEN_BIT_GREY else 255 if image.mode == 'F' else None
  if scale:
    grey = np.round(np.asarray(image, np.float64) * scale)
    image = PIL.Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
  # Transparent pixels as viewers show them, over white (opaque ones come through unchanged).
  rgba = image.convert('RGBA')
  return PIL.Image.alpha_composite(PIL.Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')


def read_all(paths: Sequence[str]) -> tuple[list[str], np.ndarray, list[Failure]]:
  """The paths that were read, their images (uint8 [N, 32, 32, 3]) and the failures, in order."""
  def attempt(path):
    try:
      return read(path)
    except Exception as e:
      return Failure(path, _why(e))

  # Decoding releases the GIL: threads read a large folder on every core.
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
    results = list(console.progress(pool.map(attempt, paths),
                                    f'reading {console.plural(len(paths), "image")}',
                                    total=len(paths)))
  read_paths = [p for p, r in zip(paths, results) if not isinstance(r, Failure)]
  images = [r for r in results if not isinstance(r, Failure)]
  images = np.stack(images) if images else np.zeros((0, *cifar100.IMAGE_SHAPE), np.uint8)
  return read_paths, images, [r for r in results if isinstance(r, Failure)]


def _why(error: Exception) -> str:
  if isinstance(error, PIL.UnidentifiedImageError):
    return 'not an image Pillow can read'
  if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
    return error.strerror.lower()
  return ' '.join(f'{type(error).__name__}: {error}'.split())
