"""The files the project writes: where they go is checked before any work starts, and each is
replaced whole or not at all, so that a failure halfway leaves the previous file as it was."""

import contextlib
import errno
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

from cifar100_flax.errors import UsageError

# errno -> what it means, and what to do.
OS_ERRORS = {
    errno.ENOSPC: 'the disk is full: free some space',
    errno.EDQUOT: 'the disk quota is exceeded: free some space',
    errno.EACCES: 'permission denied: make it readable and writable, or use another',
    errno.EPERM: 'permission denied: make it readable and writable, or use another',
    errno.EROFS: 'the file system is read-only: use a folder on a writable one',
}


def known_os_error(error: BaseException | None) -> OSError | None:
  """The first OSError with an errno of OS_ERRORS in `error`'s chain of causes, if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in OS_ERRORS:
      return error
    error = error.__cause__ or error.__context__
  return None


def _why(error: OSError) -> str:
  return OS_ERRORS.get(error.errno, f'{error.strerror or error}')


def writable_folder(path: str, what: str) -> pathlib.Path:
  """`path` as a folder that can be written to, created if missing; else UsageError saying why.

  `what` names it for the message ('the workdir', '--output')."""
  folder = pathlib.Path(path)
  for parent in (folder, *folder.parents):
    if parent.exists() and not parent.is_dir():
      raise UsageError(f'{what} {folder}: {parent} is a file, not a folder; use another path')
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise UsageError(f'cannot write to {what} {folder}: {_why(e)}') from e
  return folder


def writable_file(path: str, what: str) -> pathlib.Path:
  """`path` as a file that can be written (its folder checked, and created, as writable_folder)."""
  file = pathlib.Path(path)
  if file.is_dir():
    raise UsageError(f'{what} {file} is a folder; name a file')
  writable_folder(str(file.parent), what)
  return file


@contextlib.contextmanager
def replaced(path: pathlib.Path) -> Iterator[pathlib.Path]:
  """A temporary path beside `path` to write to (a file, or a folder such as a SavedModel); it
  replaces `path` if the block succeeds and is removed if it fails (a full disk or a lost
  permission is a UsageError saying so)."""
  temporary = path.with_name(f'.{path.name}.partial')
  try:
    yield temporary
    if temporary.is_dir() and path.is_dir():  # os.replace takes an empty folder's place only
      shutil.rmtree(path)
    os.replace(temporary, path)
  except OSError as e:
    if known_os_error(e) is None:
      raise
    raise UsageError(f'cannot write {path}: {_why(e)}, then run the same command again (any '
                     f'earlier {path.name} is kept)') from e
  finally:
    if temporary.is_dir():
      shutil.rmtree(temporary, ignore_errors=True)
    else:
      temporary.unlink(missing_ok=True)


def write_text(path: pathlib.Path, text: str) -> None:
  """Replaces `path` by `text` whole (see `replaced`)."""
  with replaced(path) as temporary:
    temporary.write_text(text)


def write_bytes(path: pathlib.Path, data: bytes) -> None:
  """Replaces `path` by `data` whole (see `replaced`)."""
  with replaced(path) as temporary:
    temporary.write_bytes(data)
