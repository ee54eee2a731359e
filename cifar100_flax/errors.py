"""Errors caused by the user's input, which main.py reports as one line, without a traceback."""


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
