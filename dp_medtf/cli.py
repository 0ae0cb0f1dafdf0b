"""Shared plumbing of the command-line programs.

Every program runs its absl `main` through `run`, which

  * keeps TensorFlow's Python-side notes off the console,
  * answers --help, --helpshort and --helpfull with exit status 0,
  * turns a flag error or an `app.UsageError` into one line,
    `error: <message>` on stderr, and exit status 2,
  * turns a `Fault` (the run cannot go on) into the same line and exit
    status 1.

Output locations are checked at start-up with `check_output_dir` and
`check_output_file`, before any work, so that a bad one costs nothing.

Example:

  >>> def main(argv):
  ...   cli.check_output_dir('workdir', _WORKDIR.value)
  ...   ...
  >>> if __name__ == '__main__':
  ...   cli.run(main)
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import tempfile
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags

USAGE_EXIT = 2
FAULT_EXIT = 1
_HELP_FLAGS = ('-h', '-?', '--help', '--helpshort', '--helpfull',
               '--helpxml')


class Fault(Exception):
  """A run that cannot go on; its message is the line shown to the user."""


def is_remote(path: str) -> bool:
  """Whether `path` names another file system (gs://, ...)."""
  return '://' in path


def _nearest_existing(path: str) -> str:
  """`path` itself if it exists, else its nearest existing ancestor."""
  current = os.path.abspath(path)
  while not os.path.lexists(current):
    parent = os.path.dirname(current)
    if parent == current:
      break
    current = parent
  return current


def _can_write_in(folder: str) -> bool:
  """Whether a new entry can be made in `folder`.

  os.access alone says yes to root even on read-only or pseudo file systems
  (/sys), so a throw-away folder is made and removed.
  """
  if not os.access(folder, os.W_OK | os.X_OK):
    return False
  try:
    probe = tempfile.mkdtemp(prefix='.dp_medtf_probe_', dir=folder)
  except OSError:
    return False
  os.rmdir(probe)
  return True


def _folder_problem(path: str) -> str | None:
  """Why `path` cannot be (made) a writable folder; None if it can."""
  existing = _nearest_existing(path)
  if existing == os.path.abspath(path):
    if not os.path.isdir(existing):
      return 'is a file, not a folder'
    if not _can_write_in(existing):
      return 'is not writable'
    return None
  if not os.path.isdir(existing):
    return f'cannot be made: {existing} is a file, not a folder'
  if not _can_write_in(existing):
    return f'cannot be made: {existing} is not writable'
  return None


def check_output_dir(flag: str, path: str | None) -> None:
  """Checks that an output folder exists and is writable, or can be made.

  Nothing is created. Remote paths (gs://...) are left to the file system
  that serves them.

  Args:
    flag: the flag's name without dashes, for the message.
    path: the flag's value; None or '' is not checked.

  Raises:
    app.UsageError: naming the flag, when the folder cannot be used.
  """
  if not path or is_remote(path):
    return
  problem = _folder_problem(path)
  if problem:
    raise app.UsageError(f'--{flag}={path} {problem}.')


def check_output_file(flag: str, path: str | None) -> None:
  """Checks that an output file can be written (its folder may be missing).

  Args:
    flag: the flag's name without dashes, for the message.
    path: the flag's value; None or '' is not checked.

  Raises:
    app.UsageError: naming the flag, when the file cannot be written.
  """
  if not path or is_remote(path):
    return
  if os.path.isdir(path):
    raise app.UsageError(f'--{flag}={path} is a folder, not a file.')
  if os.path.lexists(path):
    if not os.access(path, os.W_OK):
      raise app.UsageError(f'--{flag}={path} is not writable.')
    folder = os.path.dirname(os.path.abspath(path))
    if not _can_write_in(folder):  # Writing replaces the file.
      raise app.UsageError(f'--{flag}={path}: {folder} is not writable.')
    return
  folder = os.path.dirname(os.path.abspath(path))
  problem = _folder_problem(folder)
  if problem:
    raise app.UsageError(f'--{flag}={path}: folder {folder} {problem}.')


def error(message: str, exit_code: int) -> NoReturn:
  """Prints `error: <message>` to stderr and exits with `exit_code`."""
  print(f'error: {str(message).strip() or "failed"}', file=sys.stderr,
        flush=True)
  sys.exit(exit_code)


def last_line(text: str) -> str:
  """The last non-empty line of `text` (an error's most specific part)."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[-1] if lines else ''



def unknown_field_message(e: Exception, argv: Sequence[str]) -> str:
  """The line for a --config.<field> override of a field the recipe lacks.

  Args:
    e: the KeyError or AttributeError that ml_collections raised.
    argv: the command line, to name the override.

  Returns:
    e.g. '--config.no_such_field: the recipe has no such field.'
  """
  field = str(e).strip('"\' ')
  override = next((a.split('=', 1)[0] for a in argv[1:]
                   if a.startswith('--config.') and field and field in a),
                  None)
  if override:
    return f'{override}: the recipe has no such field.'
  return f'--config: the recipe has no field {field!r}.'


def _own_flags() -> list[str]:
  """Flags defined by this package or the program (not by dependencies)."""
  names = []
  for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
    # absl files the flags of `python -m x` or `python x.py` under argv[0].
    if module.startswith('dp_medtf') or module == sys.argv[0]:
      names += [f.name for f in module_flags]
  return names


def _unknown_flag_message(e: flags.UnrecognizedFlagError) -> str:
  """'unknown flag --x', with close names among the program's own flags."""
  close = difflib.get_close_matches(e.flagname, _own_flags(), n=3)
  hint = (f'; did you mean {" or ".join("--" + n for n in close)}?' if close
          else '; see --helpshort.')
  return f'unknown flag --{e.flagname}{hint}'


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with one-line errors and help that exits 0.

  Args:
    argv: the command line, program name first.

  Returns:
    The arguments that are not flags, program name first.
  """
  try:
    return flags.FLAGS(list(argv))
  except flags.UnrecognizedFlagError as e:
    error(_unknown_flag_message(e), USAGE_EXIT)
  except flags.Error as e:
    error(str(e), USAGE_EXIT)
  except OSError as e:  # A --config file that cannot be read.
    config = next((a for a in argv[1:] if a.startswith('--config=')),
                  '--config')
    error(f'{config}: {last_line(str(e))}', USAGE_EXIT)
  except (AttributeError, KeyError) as e:  # A --config.<field> override.
    error(unknown_field_message(e, argv), USAGE_EXIT)
  except SystemExit as e:
    if e.code and any(a.split('=', 1)[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)  # absl exits 1 after printing the help that was asked for.
    raise


def one_line_errors(
    main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int]:
  """Wraps an absl main: usage errors and Faults become one line on stderr.

  Args:
    main: the program's main(argv).

  Returns:
    main, printing `error: <message>` and exiting 2 for an app.UsageError or
    a flag error, 1 for a Fault. Other exceptions (bugs) keep their
    traceback.
  """

  def wrapped(argv: list[str]) -> int:
    try:
      return main(argv) or 0
    except app.UsageError as e:
      error(str(e), USAGE_EXIT)
    except flags.Error as e:
      error(str(e), USAGE_EXIT)
    except Fault as e:
      error(str(e), FAULT_EXIT)

  return wrapped


def quiet_python_logs() -> None:
  """Keeps TensorFlow's Python-side warnings (retracing, ...) off stderr.

  Its C++ start-up lines are kept off by TF_CPP_MIN_LOG_LEVEL, which
  dp_medtf/__init__.py sets before TensorFlow loads.
  """
  logging.getLogger('tensorflow').setLevel(logging.ERROR)


def run(main: Callable[[list[str]], int | None],
        argv: Sequence[str] | None = None) -> NoReturn:
  """Runs an absl main with one-line errors; exits with its status.

  Args:
    main: the program's main(argv), returning an exit status or None.
    argv: the command line; default sys.argv.
  """
  quiet_python_logs()
  app.run(one_line_errors(main), argv=None if argv is None else list(argv),
          flags_parser=parse_flags)
