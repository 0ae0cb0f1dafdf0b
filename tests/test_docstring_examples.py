"""Runs the docstring examples (`>>>` lines) of every module of dp_medtf.

Discovery: the modules are found with pkgutil.walk_packages over the
package, so a new module is checked without being listed here. Each module
is one test case; it fails with the text of every failing example.

How the examples run (the rules an example's author can rely on):

  * Runner: the standard doctest module (DocTestFinder, DocTestRunner),
    with NORMALIZE_WHITESPACE | ELLIPSIS. `# doctest: +SKIP` marks an
    example that cannot run here (a real dataset, a long training run).
  * Globals: a copy of the module's own namespace (its functions, classes
    and imports, private names included), plus `np` (numpy) and `tf`
    (tensorflow) where the module does not bind those names itself.
    Anything else, an example imports. The examples of one docstring share
    their globals, in order; different docstrings do not share anything.
  * Working directory: a fresh empty temporary folder per module, so an
    example may write and read files under relative paths.

Programs: a module with a top-level `if __name__ == '__main__':` is a
command-line program, and importing it defines its absl flags on the
process-wide FLAGS. Two programs may define the same flag (several have
--batch_size or --dataset), and importing both in one process fails with
DuplicateFlagError, so programs are not imported into the test process. If
a program's source holds `>>>`, its examples run in a Python process of
their own (this file run with the module's name, as `python -m
tests.test_docstring_examples dp_medtf.bench` in the repository root), with
the same rules; otherwise it has nothing to run.

The package as a whole must have at least MIN_MODULES_WITH_EXAMPLES modules
with examples, so that a broken discovery cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
import tempfile

import pytest

import dp_medtf

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
# Fewer modules with examples than this means discovery is broken.
MIN_MODULES_WITH_EXAMPLES = 40
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_names() -> list[str]:
  """dp_medtf and every module and package below it, sorted."""
  names = ['dp_medtf']
  names += [info.name for info in
            pkgutil.walk_packages(dp_medtf.__path__, 'dp_medtf.')]
  return sorted(names)


def _source_path(name: str) -> str:
  spec = importlib.util.find_spec(name)
  assert spec is not None and spec.origin, name
  return spec.origin


def _read_source(name: str) -> str:
  with open(_source_path(name), encoding='utf-8') as f:
    return f.read()


def is_program(name: str) -> bool:
  """Whether the module ends in a top-level `if __name__ == '__main__':`."""
  for node in ast.parse(_read_source(name)).body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
        isinstance(node.test.left, ast.Name) and
        node.test.left.id == '__name__' and
        any(isinstance(c, ast.Constant) and c.value == '__main__'
            for c in node.test.comparators)):
      return True
  return False


def _globals(module) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  globs = dict(vars(module))
  globs.setdefault('np', np)
  globs.setdefault('tf', tf)
  return globs


def run_examples(name: str) -> tuple[int, list[str]]:
  """Runs the examples of module `name` in the current directory.

  Returns:
    The number of examples run (skipped ones not counted) and one report
    per failing example (its source, what was expected and what came).
  """
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS, verbose=False)
  failures = []
  for test in finder.find(module, name):
    test.globs = _globals(module)
    runner.run(test, out=failures.append, clear_globs=True)
  return runner.tries, failures


def _run_in_child(name: str) -> tuple[int, list[str]]:
  result = subprocess.run(
      [sys.executable, '-m', 'tests.test_docstring_examples', name],
      cwd=os.getcwd(), capture_output=True, text=True, check=False,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join(
          p for p in (_REPO_ROOT, os.environ.get('PYTHONPATH')) if p)))
  lines = result.stdout.splitlines()
  if result.returncode not in (0, 1) or not lines:
    return 0, [f'{name}: the child process failed (exit status '
               f'{result.returncode}):\n{result.stdout}{result.stderr}']
  attempted = int(lines[-1].split()[0])
  return attempted, (['\n'.join(lines[:-1])] if result.returncode else [])


MODULES = module_names()


@pytest.fixture(scope='module')
def example_counts() -> dict[str, int]:
  """Module name -> examples run, filled in by test_docstring_examples."""
  return {}


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch, example_counts):
  monkeypatch.chdir(tmp_path)
  if is_program(name):
    if '>>>' not in _read_source(name):
      example_counts[name] = 0
      return
    attempted, failures = _run_in_child(name)
  else:
    attempted, failures = run_examples(name)
  example_counts[name] = attempted
  if failures:
    pytest.fail(f'{len(failures)} failing docstring example(s) in {name}:\n'
                + ''.join(failures), pytrace=False)


def test_discovery_finds_the_package():
  expected = {'dp_medtf', 'dp_medtf.privacy.accounting',
              'dp_medtf.data.pipeline', 'dp_medtf.risk.__main__'}
  assert expected <= set(MODULES)
  assert is_program('dp_medtf.train')
  assert not is_program('dp_medtf.cli')  # Its `__main__` is in a docstring.


def test_package_has_examples(example_counts):
  counts = dict(example_counts)
  if set(counts) != set(MODULES):
    # Run alone (-k): count the examples without running them.
    counts = {}
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in MODULES:
      if is_program(name):
        counts[name] = _read_source(name).count('>>>')
      else:
        counts[name] = sum(
            len(t.examples)
            for t in finder.find(importlib.import_module(name), name))
  with_examples = sorted(n for n, c in counts.items() if c)
  assert len(with_examples) >= MIN_MODULES_WITH_EXAMPLES, with_examples


def _main(argv: list[str]) -> int:
  """Runs one module's examples in a fresh folder; prints failures, count."""
  (name,) = argv
  with tempfile.TemporaryDirectory() as folder:
    os.chdir(folder)
    attempted, failures = run_examples(name)
  print(''.join(failures), end='')
  print(f'{attempted} examples')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(_main(sys.argv[1:]))
