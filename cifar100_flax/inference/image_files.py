"""The user's own pictures as CIFAR-sized uint8 images: finding them, decoding, resizing.

Any size and mode Pillow reads (JPEG, PNG, BMP, WebP, GIF, TIFF; greyscale, palette, RGBA,
16-bit) becomes RGB; the central square is resized to 32x32 with antialiasing, as CIFAR's
objects fill the frame. What the model does at its own image_size follows on the device.

Reading costs bounded memory whatever the pictures and the cores: a JPEG is decoded reduced, a
picture of more than MAX_PIXELS is refused from its header, and pictures are decoded at once only
while their costs fit in DECODING_MEMORY.
"""

import contextlib
import dataclasses
import fnmatch
import glob
import os
import pathlib
import queue
import stat
import threading
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from cifar100_flax import console
from cifar100_flax.data import cifar100

SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')
_SIXTEEN_BIT_GREY = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
# A picture is read whole: beyond this many pixels it is refused, from its header. (Pillow's own
# limit, 89 million pixels and then only a warning, lets one picture take gigabytes.)
MAX_PIXELS = 8192 * 8192
# The most decoding a picture costs, per pixel: the decoded pixels (4 bytes for RGB), its
# central square and converted copies (measured at 12 at most: transparent RGBA and
# floating-point greyscale).
_BYTES_PER_PIXEL = 16
# Pictures are decoded at once while their costs fit in this, however many cores there are: as
# many small ones as there are threads, one of MAX_PIXELS alone.
DECODING_MEMORY = MAX_PIXELS * _BYTES_PER_PIXEL
# A JPEG is decoded reduced (libjpeg scales by 1/2 to 1/8) while its short side stays at least
# this, ample for 32x32: a 12-megapixel photo then costs 64 times less memory and time.
_DRAFT_SIDE = 256
_NOT_REGULAR = {stat.S_IFIFO: 'a named pipe', stat.S_IFCHR: 'a character device',
                stat.S_IFBLK: 'a block device', stat.S_IFSOCK: 'a socket'}


@dataclasses.dataclass(frozen=True)
class Failure:
  """A path that named no readable image, and why."""
  path: str
  reason: str


class UnusablePicture(ValueError):
  """A path that is not read as a picture; the message says why and what to do."""


class _Budget:
  """Memory that threads share: each holds its share while it decodes, waiting until it is
  free; a share larger than the whole waits until nothing else is held."""

  def __init__(self, total: int):
    self._total = self._free = total
    self._changed = threading.Condition()

  @contextlib.contextmanager
  def held(self, share: int) -> Iterator[None]:
    share = min(share, self._total)
    with self._changed:
      self._changed.wait_for(lambda: self._free >= share)
      self._free -= share
    try:
      yield
    finally:
      with self._changed:
        self._free += share
        self._changed.notify_all()


_decoding = _Budget(DECODING_MEMORY)


def find(patterns: Sequence[str]) -> tuple[list[str], list[Failure]]:
  """The files `patterns` name, in order and once each (by their real path): a file as it is
  (whatever its suffix), a folder's image files (recursively, sorted), a glob's matches (`**`
  recurses). Symbolic links to folders are followed, each folder walked once: a loop of links
  ends. A pattern that matches nothing is a Failure."""
  found, failures = {}, []
  for pattern in patterns:
    matches = [pattern] if os.path.exists(pattern) else _glob(pattern)
    if not matches:
      failures.append(Failure(pattern, 'no such file, folder or match'))
    for match in matches:
      for path in _files(pathlib.Path(match)):
        found.setdefault(os.path.realpath(path), path)
  return list(found.values()), failures


def _files(path: pathlib.Path) -> list[str]:
  if not path.is_dir():
    return [str(path)]
  return sorted(str(p) for p in _walk(path)
                if p.suffix.lower() in SUFFIXES and not p.name.startswith('.') and p.is_file())


def _walk(root: pathlib.Path) -> Iterator[pathlib.Path]:
  """Every path below the folder `root`, sorted, depth first. Links to folders are followed, but
  each folder is entered once, by the first path that reaches it, and a link to a folder already
  entered is left out: glob's `**` would go round a loop of links until the path is too long,
  and Path.rglob does not follow a link at all."""
  entered, folders = {_folder_identity(root)}, [root]
  while folders:
    try:
      entries = sorted(folders.pop().iterdir())
    except OSError:  # gone, or not readable: its pictures cannot be found
      continue
    subfolders = []
    for entry in entries:
      identity = _folder_identity(entry)
      if identity in entered:
        continue
      if identity:
        entered.add(identity)
        subfolders.append(entry)
      yield entry
    folders.extend(reversed(subfolders))


def _folder_identity(path: pathlib.Path) -> tuple[int, int] | None:
  """The device and inode of the folder `path` (a link followed); None if it is no folder."""
  try:
    status = path.stat()
  except OSError:
    return None
  return (status.st_dev, status.st_ino) if stat.S_ISDIR(status.st_mode) else None


def _glob(pattern: str) -> list[str]:
  """The paths glob.glob(pattern, recursive=True) gives, sorted, with `**` walking as _walk does
  (less the folder a final `**` starts from: its files are among them)."""
  if '**' not in pattern:  # one level per part: no loop to go round
    return sorted(glob.glob(pattern))
  parts = pathlib.PurePath(pattern).parts
  fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
  root = pathlib.Path(*parts[:fixed]) if fixed else pathlib.Path()
  return sorted(str(path) for path in _walk(root)
                if _matches(path.relative_to(root).parts, parts[fixed:]))


def _matches(names: Sequence[str], parts: Sequence[str]) -> bool:
  """Whether a path's `names` match a glob's `parts` as glob.glob does: `**` stands for any
  number of folders, and a wildcard matches no hidden name (one that starts with '.')."""
  if not parts:
    return not names
  if not names:
    return all(part == '**' for part in parts)
  if parts[0] == '**':
    return (_matches(names, parts[1:])
            or (not names[0].startswith('.') and _matches(names[1:], parts)))
  visible = not names[0].startswith('.') or parts[0].startswith('.')
  return visible and fnmatch.fnmatchcase(names[0], parts[0]) and _matches(names[1:], parts[1:])


def read(path: str) -> np.ndarray:
  """uint8 [32, 32, 3] RGB: the first frame, turned upright (EXIF), its central square resized.
  Raises UnusablePicture for a path that is not a regular file (a named pipe would block), a
  picture of more than MAX_PIXELS and one with NaN pixels; what Pillow cannot read raises its
  own error."""
  kind = stat.S_IFMT(os.stat(path).st_mode)
  if kind != stat.S_IFREG:
    raise UnusablePicture(f'not a regular file but {_NOT_REGULAR.get(kind, "a special file")}: '
                          f'name picture files')
  with PIL.Image.open(path) as image:
    image.seek(0)  # An animated GIF, WebP or PNG: its first frame.
    image.draft(image.mode, (_DRAFT_SIDE, _DRAFT_SIDE))  # a JPEG reduced; others as they are
    width, height = image.size
    if width * height > MAX_PIXELS:
      raise UnusablePicture(f'{width}x{height} pixels ({_millions(width * height)}), more than '
                            f'the {_millions(MAX_PIXELS)} a picture may have: make it smaller')
    with _decoding.held(width * height * _BYTES_PER_PIXEL):
      PIL.ImageOps.exif_transpose(image, in_place=True)
      small = _rgb(_central_square(image)).resize(cifar100.IMAGE_SHAPE[:2],
                                                  PIL.Image.Resampling.BICUBIC)
  return np.asarray(small, np.uint8)


def _millions(pixels: int) -> str:
  return f'{pixels / 1e6:.0f} million'


def _central_square(image: PIL.Image.Image) -> PIL.Image.Image:
  # Cropped before resizing: resizing a box of the image would blend in pixels beside it.
  if image.width == image.height:
    return image
  side = min(image.size)
  left, top = (image.width - side) // 2, (image.height - side) // 2
  return image.crop((left, top, left + side, top + side))


def _rgb(image: PIL.Image.Image) -> PIL.Image.Image:
  if image.mode in (*_SIXTEEN_BIT_GREY, 'F'):
    image = _eight_bit_grey(image)
  if not image.has_transparency_data:
    return image if image.mode == 'RGB' else image.convert('RGB')
  # Transparent pixels as viewers show them, over white (opaque ones come through unchanged).
  rgba = image if image.mode == 'RGBA' else image.convert('RGBA')
  return PIL.Image.alpha_composite(PIL.Image.new('RGBA', rgba.size, 'white'), rgba).convert('RGB')


def _eight_bit_grey(image: PIL.Image.Image) -> PIL.Image.Image:
  """16-bit greyscale scaled to 8 bits (Pillow's own conversion clips its values at 255), and
  floating-point greyscale (TIFF) from [0, 1]; converted in place, as the copies are large."""
  grey = np.array(image, np.float32)
  if np.isnan(grey).any():
    raise UnusablePicture('holds NaN pixels, whose colour is undefined: save it without them')
  grey *= 1 / 257 if image.mode in _SIXTEEN_BIT_GREY else 255
  np.clip(np.round(grey, out=grey), 0, 255, out=grey)
  return PIL.Image.fromarray(grey.astype(np.uint8))


def read_all(paths: Sequence[str]) -> tuple[list[str], np.ndarray, list[Failure]]:
  """The paths that were read, their images (uint8 [N, 32, 32, 3]) and the failures, in order."""
  results = [None] * len(paths)
  with warnings.catch_warnings():
    # MAX_PIXELS is below Pillow's limit: its warning says nothing that read does not.
    warnings.simplefilter('ignore', PIL.Image.DecompressionBombWarning)
    for index, result in console.progress(_read_in_threads(paths),
                                          f'reading {console.plural(len(paths), "image")}',
                                          total=len(paths)):
      results[index] = result
  read_paths = [p for p, r in zip(paths, results) if not isinstance(r, Failure)]
  images = [r for r in results if not isinstance(r, Failure)]
  images = np.stack(images) if images else np.zeros((0, *cifar100.IMAGE_SHAPE), np.uint8)
  return read_paths, images, [r for r in results if isinstance(r, Failure)]


def _read_in_threads(paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray | Failure]]:
  """(index, image or Failure) of each of `paths`, as threads finish them (decoding releases the
  GIL). The threads are daemons: a signal stops the command at once, even while a read hangs
  in a file system that does not answer, which a thread pool would wait for at exit."""
  waiting, finished = queue.SimpleQueue(), queue.SimpleQueue()
  for item in enumerate(paths):
    waiting.put(item)

  def read_waiting() -> None:
    with contextlib.suppress(queue.Empty):
      while True:
        index, path = waiting.get_nowait()
        finished.put((index, _attempt(path)))

  for _ in range(min(len(paths), os.cpu_count() or 1)):
    threading.Thread(target=read_waiting, daemon=True).start()
  try:
    for _ in paths:
      yield finished.get()
  finally:  # stopped: the threads take no more paths
    with contextlib.suppress(queue.Empty):
      while True:
        waiting.get_nowait()


def _attempt(path: str) -> np.ndarray | Failure:
  try:
    return read(path)
  except Exception as e:
    return Failure(path, _why(e))


def _why(error: Exception) -> str:
  if isinstance(error, UnusablePicture):
    return str(error)
  if isinstance(error, PIL.UnidentifiedImageError):
    return 'not an image Pillow can read'
  if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
    return error.strerror.lower()
  return ' '.join(f'{type(error).__name__}: {error}'.split())
