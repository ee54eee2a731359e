import glob
import os
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import PIL.Image
import pytest

from cifar100_flax.inference import image_files

RED, WHITE = (255, 0, 0), (255, 255, 255)


def _solid(mode, size, colour):
  return PIL.Image.new('RGB', size, colour).convert(mode)


def _png_16_bit_rgb(path, pixels):
  """A 16-bit-per-channel RGB PNG, which Pillow reads but cannot write."""
  height, width, _ = pixels.shape
  rows = b''.join(b'\0' + pixels[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height,
                                                                   16, 2, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('name, make, expected', [
    ('rgb.jpg', lambda: _solid('RGB', (320, 240), RED), RED),
    ('grey.png', lambda: _solid('L', (40, 50), (90, 90, 90)), (90, 90, 90)),
    ('palette.bmp', lambda: _solid('P', (64, 64), RED), RED),
    ('photo.webp', lambda: _solid('RGB', (100, 100), RED), RED),
    ('cmyk.tiff', lambda: _solid('CMYK', (33, 33), RED), RED),
    # Transparent: shown over white.
    ('clear.png', lambda: PIL.Image.new('RGBA', (32, 32), (255, 0, 0, 0)), WHITE),
    ('grey16.png', lambda: PIL.Image.fromarray(np.full((32, 32), 0x8080, np.uint16)),
     (128, 128, 128)),
])
def test_every_mode_becomes_a_32x32_rgb_image(tmp_path, name, make, expected):
  make().save(tmp_path / name)
  image = image_files.read(str(tmp_path / name))
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  # JPEG and WebP are lossy: within a few levels.
  assert np.abs(image.astype(int) - expected).max() <= 3


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
  pixels = np.zeros((8, 8, 3), np.uint16)
  pixels[..., 0], pixels[..., 2] = 0xFFFF, 0x4000
  _png_16_bit_rgb(tmp_path / 'deep.png', pixels)
  assert (image_files.read(str(tmp_path / 'deep.png')) == (255, 0, 64)).all()


def test_a_gif_gives_its_first_frame(tmp_path):
  frames = [_solid('P', (32, 32), colour) for colour in (RED, (0, 0, 255))]
  frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
  assert PIL.Image.open(tmp_path / 'anim.gif').n_frames == 2
  assert (image_files.read(str(tmp_path / 'anim.gif')) == RED).all()


def test_the_central_square_is_resized_with_antialiasing(tmp_path):
  # A wide image: red in its central square, blue bands outside it, fine stripes inside.
  pixels = np.zeros((300, 500, 3), np.uint8)
  pixels[:, :100] = pixels[:, 400:] = (0, 0, 255)
  pixels[:, 100:400, 0] = np.where(np.arange(300) % 2, 255, 155)[None, :]
  PIL.Image.fromarray(pixels).save(tmp_path / 'wide.png')
  image = image_files.read(str(tmp_path / 'wide.png')).astype(int)
  assert (image[..., 2] == 0).all()  # none of the bands
  assert np.abs(image[..., 0] - 205).max() <= 2  # the stripes averaged, not sampled


def test_exif_orientation_is_applied(tmp_path):
  pixels = np.zeros((32, 64, 3), np.uint8)
  pixels[:, :32] = 255  # white left half, black right half: as stored
  exif = PIL.Image.Exif()
  exif[0x0112] = 6  # to be shown rotated 90 degrees clockwise: white on top
  PIL.Image.fromarray(pixels).save(tmp_path / 'phone.jpg', exif=exif, quality=95)
  image = image_files.read(str(tmp_path / 'phone.jpg')).astype(int)
  assert image[:12].mean() > 240 and image[-12:].mean() < 15


def test_find_takes_files_folders_and_globs_in_order_and_once(tmp_path):
  for name in ('b/2.png', 'b/c/1.JPG', 'b/notes.txt', 'b/.hidden.png', 'a.gif', 'named.data'):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  found, failures = image_files.find([str(tmp_path / 'named.data'), str(tmp_path / 'b'),
                                 str(tmp_path / '*.gif'), str(tmp_path / 'b' / '2.png'),
                                 str(tmp_path / 'missing*.png')])
  assert found == [str(tmp_path / p) for p in ('named.data', 'b/2.png', 'b/c/1.JPG', 'a.gif')]
  assert failures == [image_files.Failure(str(tmp_path / 'missing*.png'),
                                     'no such file, folder or match')]


def test_unreadable_files_are_failures_and_the_rest_are_read(tmp_path):
  _solid('RGB', (40, 40), RED).save(tmp_path / 'good.png')
  (tmp_path / 'text.png').write_text('not an image')
  _solid('RGB', (64, 64), RED).save(tmp_path / 'cut.jpg')
  (tmp_path / 'cut.jpg').write_bytes((tmp_path / 'cut.jpg').read_bytes()[:300])  # truncated
  paths = [str(tmp_path / name) for name in ('good.png', 'text.png', 'cut.jpg', 'gone.png')]
  read, pictures, failures = image_files.read_all(paths)
  assert read == paths[:1] and pictures.shape == (1, 32, 32, 3)
  assert [f.path for f in failures] == paths[1:]
  assert failures[0].reason == 'not an image Pillow can read'
  assert 'truncated' in failures[1].reason.lower()
  assert failures[2].reason == 'no such file or directory'


def test_linked_folders_are_walked_once_and_a_loop_of_links_ends(tmp_path):
  # issue 39, 7: glob's ** went round a loop of links (one file 41 times; two links: forever).
  (tmp_path / 'photos' / 'trip').mkdir(parents=True)
  (tmp_path / 'photos' / 'a.png').write_bytes(b'')
  (tmp_path / 'photos' / 'trip' / 'b.png').write_bytes(b'')
  (tmp_path / 'photos' / 'trip' / 'up').symlink_to(tmp_path / 'photos')
  (tmp_path / 'photos' / 'again').symlink_to(tmp_path / 'photos')
  (tmp_path / 'elsewhere').mkdir()
  (tmp_path / 'elsewhere' / 'c.png').write_bytes(b'')
  (tmp_path / 'photos' / 'linked').symlink_to(tmp_path / 'elsewhere')
  expected = [str(tmp_path / 'photos' / p) for p in ('a.png', 'linked/c.png', 'trip/b.png')]
  for pattern in ('photos', 'photos/**/*.png', 'photos/**'):
    found, failures = image_files.find([str(tmp_path / pattern)])
    assert sorted(found) == expected and not failures, pattern


@pytest.mark.parametrize('pattern', ['**/*.png', 'b/**/*.png', '**/d/*', '**', 'b/**', '*/*.png',
                                     '**/.hidden/*', 'b/**/d/**/*.png'])
def test_a_glob_matches_what_glob_matches(tmp_path, monkeypatch, pattern):
  for name in ('a.png', 'b/c.png', 'b/d/e.png', 'b/.hidden/f.png', '.g.png', 'b/h.jpg'):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  monkeypatch.chdir(tmp_path)
  for written in (pattern, str(tmp_path / pattern)):  # relative, absolute
    from_glob = glob.glob(written, recursive=True)
    assert image_files._glob(written) == sorted(p for p in from_glob if not p.endswith('/'))


def test_a_path_that_is_not_a_regular_file_is_a_failure_without_being_opened(tmp_path):
  # issue 39, 6: a named pipe blocked predict for ever.
  os.mkfifo(tmp_path / 'pipe.png')
  _, pictures, failures = image_files.read_all([str(tmp_path / 'pipe.png')])
  assert len(pictures) == 0
  assert failures[0].reason.startswith('not a regular file but a named pipe')


def test_a_picture_of_too_many_pixels_is_refused_from_its_header_and_a_jpeg_is_reduced(
    tmp_path, monkeypatch):
  # issue 39, 18: a 13000x13000 PNG cost 4.1 GB.
  monkeypatch.setattr(image_files, 'MAX_PIXELS', 1000 * 1000)
  _solid('RGB', (2000, 1000), RED).save(tmp_path / 'large.png')
  _solid('RGB', (2000, 1000), RED).save(tmp_path / 'large.jpg')  # decoded at 1/2: 1000x500
  read, pictures, failures = image_files.read_all([str(tmp_path / 'large.png'),
                                                   str(tmp_path / 'large.jpg')])
  assert read == [str(tmp_path / 'large.jpg')] and np.abs(pictures[0].astype(int) - RED).max() <= 3
  assert failures[0].reason == ('2000x1000 pixels (2 million), more than the 1 million a '
                                'picture may have: make it smaller')


def test_a_float_tiff_with_nan_pixels_is_a_failure_without_a_warning(tmp_path):
  # issue 39, 19: classified silently, with NumPy's RuntimeWarning on stderr.
  pixels = np.full((8, 8), 0.5, np.float32)
  pixels[2, 3] = np.nan
  PIL.Image.fromarray(pixels).save(tmp_path / 'nan.tif')
  PIL.Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / 'grey.tif')
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    read, pictures, failures = image_files.read_all([str(tmp_path / 'nan.tif'),
                                                     str(tmp_path / 'grey.tif')])
  assert read == [str(tmp_path / 'grey.tif')] and (pictures == 128).all()
  assert failures[0].reason.startswith('holds NaN pixels')


def test_pictures_are_decoded_at_once_within_the_memory_budget_whatever_the_cores(
    tmp_path, monkeypatch):
  # issue 39, 18: one picture decoded per core, on a 64-core host 64 at once.
  monkeypatch.setattr(image_files.os, 'cpu_count', lambda: 64)
  share = 64 * 64 * image_files._BYTES_PER_PIXEL
  monkeypatch.setattr(image_files, '_decoding', image_files._Budget(3 * share))
  decoding, most = set(), []
  real_transpose = image_files.PIL.ImageOps.exif_transpose

  def transpose(image, **kwargs):  # called while the picture's share is held
    decoding.add(threading.get_ident())
    most.append(len(decoding))
    time.sleep(0.05)
    decoding.discard(threading.get_ident())
    return real_transpose(image, **kwargs)
  monkeypatch.setattr(image_files.PIL.ImageOps, 'exif_transpose', transpose)
  for i in range(24):
    _solid('RGB', (64, 64), RED).save(tmp_path / f'{i}.png')
  read, _, _ = image_files.read_all([str(tmp_path / f'{i}.png') for i in range(24)])
  assert len(read) == 24 and max(most) == 3
