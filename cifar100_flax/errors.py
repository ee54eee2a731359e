"""Errors caused by the user's input, which the command line reports as one line, without a
traceback; and the `require` checks that raise them for a config's values."""

import re


class UserError(Exception):
  """Base class: the message alone tells the user what to fix."""


class ConfigError(UserError, ValueError):
  """An unknown or impossible configuration value."""


class DataError(UserError):
  """The dataset cannot be found or downloaded."""


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt or does not fit the configured model."""


class UsageError(UserError, ValueError):
  """A flag or argument that names something that does not exist (e.g. a Grad-CAM layer)."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite."""


def one_line(error: BaseException) -> str:
  """The error's message as one line (config_flags' messages hold escaped newlines; the
  project's own may list items on lines of their own)."""
  text = str(error).strip()
  if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':  # a KeyError's repr
    text = text[1:-1]
  text = text.replace('\\n', '\n').replace("\\'", "'")
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def require(ok: bool, message: str) -> None:
  """Raises ConfigError(message) unless `ok`: how each package checks its part of the config."""
  if not ok:
    raise ConfigError(message)


def require_non_negative(subtree, prefix: str, keys: tuple[str, ...]) -> None:
  """Each of `keys` of `subtree` (named `prefix`.key in the message) is >= 0."""
  for key in keys:
    require(subtree[key] >= 0, f'{prefix}.{key} must be >= 0, got {subtree[key]}')


def require_regex(key: str, pattern: str) -> None:
  """`pattern` (the value of config key `key`) compiles as a regex."""
  try:
    re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ConfigError(f'{key}: {pattern!r} is not a regex: {e}') from e
