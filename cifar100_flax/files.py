"""The files the project writes: where they go is checked before any work starts, and each is
replaced whole or not at all, so that a failure halfway leaves the previous file as it was."""

import contextlib
import errno
import fcntl
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence

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
def held_signals() -> Iterator[None]:
  """SIGINT and SIGTERM wait until the block ends (then their handlers run): a few renames that
  must all happen, or none, are not cut in two by a Ctrl-C."""
  held = {signal.SIGINT, signal.SIGTERM}
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def locked(path: pathlib.Path, shared: bool = False, wait: bool = True) -> Iterator[bool]:
  """An advisory lock (flock) on the file or folder `path` for the block; yields whether it was
  taken (always, when `wait`). The system releases it when the process ends, however it ends, so
  a killed process never leaves a stale lock behind."""
  descriptor = os.open(path, os.O_RDONLY)
  try:
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
      fcntl.flock(descriptor, mode)
    except BlockingIOError:
      yield False
      return
    yield True
  finally:
    os.close(descriptor)  # releases the lock


# The temporaries of the outputs being written (replaced_together's), for remove_unfinished.
_unfinished: set[pathlib.Path] = set()


def _partial_name(path: pathlib.Path) -> pathlib.Path:
  # Unique: two processes writing the same output never share a temporary file.
  return path.with_name(f'.{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial')


def _remove(path: pathlib.Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)


def _put_in_place(temporary: pathlib.Path, path: pathlib.Path) -> None:
  if temporary.is_dir() and path.is_dir():  # os.replace takes an empty folder's place only
    aside = _partial_name(path)
    path.rename(aside)
    os.replace(temporary, path)
    _remove(aside)
  else:
    os.replace(temporary, path)


@contextlib.contextmanager
def replaced_together(paths: Sequence[pathlib.Path]) -> Iterator[list[pathlib.Path]]:
  """Temporary paths beside `paths` to write to (files, or folders such as a SavedModel); if the
  block succeeds they take the places of `paths` together, with signals held and the folder
  locked against another process doing the same, else they are removed and every earlier file is
  kept. A full disk or a lost permission is a UsageError saying so."""
  paths = [pathlib.Path(p) for p in paths]
  temporaries = [_partial_name(p) for p in paths]
  _unfinished.update(temporaries)
  try:
    yield temporaries
    with held_signals(), locked(paths[0].parent):
      for temporary, path in zip(temporaries, paths):
        _put_in_place(temporary, path)
  except OSError as e:
    if known_os_error(e) is None:
      raise
    names = ' and '.join(p.name for p in paths)
    raise UsageError(f'cannot write {paths[0]}: {_why(e)}, then run the same command again (any '
                     f'earlier {names} is kept)') from e
  finally:
    for temporary in temporaries:
      _remove(temporary)
    _unfinished.difference_update(temporaries)


def remove_unfinished() -> None:
  """Removes the temporaries of the outputs being written, for a process that must end at once
  without unwinding (cli/startup.stop_at_once): it leaves no half-written file behind."""
  for temporary in list(_unfinished):
    _remove(temporary)


@contextlib.contextmanager
def replaced(path: pathlib.Path) -> Iterator[pathlib.Path]:
  """A temporary path beside `path` to write to (a file or a folder); it replaces `path` if the
  block succeeds (see `replaced_together`)."""
  with replaced_together([path]) as (temporary,):
    yield temporary


def write_text(path: pathlib.Path, text: str) -> None:
  """Replaces `path` by `text` whole (see `replaced`)."""
  with replaced(path) as temporary:
    temporary.write_text(text)


def write_bytes(path: pathlib.Path, data: bytes) -> None:
  """Replaces `path` by `data` whole (see `replaced`)."""
  with replaced(path) as temporary:
    temporary.write_bytes(data)


def write_all(contents: dict[pathlib.Path, str | bytes]) -> None:
  """Replaces each path by its text or bytes, all together (see `replaced_together`): a reader
  never finds one file of a new version beside another of an old one."""
  with replaced_together(list(contents)) as temporaries:
    for temporary, content in zip(temporaries, contents.values()):
      with temporary.open('wb') as f:
        f.write(content.encode() if isinstance(content, str) else content)
