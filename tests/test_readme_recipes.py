"""The README's recipe table states the values the recipes really hold."""

from __future__ import annotations

import ast
import importlib
import math
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
SECTION = '## Recipes next to the paper'


def _table_rows() -> list[tuple[str, str, str]]:
  """(recipe, field, value text) of every row of the README's recipe table."""
  text = README.read_text(encoding='utf-8')
  assert SECTION in text, f'README.md has no section {SECTION!r}'
  section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) < 3 or not cells[1].startswith('`'):
      continue
    rows.append((cells[0], cells[1].strip('`'), cells[2].strip('`')))
  return rows


def _literal(text: str):
  """A Python literal, where the bare names inf and nan are floats."""
  node = ast.parse(text, mode='eval')
  names = {'inf': math.inf}

  def convert(n):
    if isinstance(n, ast.Name) and n.id in names:
      return names[n.id]
    if isinstance(n, ast.Tuple):
      return tuple(convert(e) for e in n.elts)
    if isinstance(n, ast.List):
      return [convert(e) for e in n.elts]
    if isinstance(n, ast.Dict):
      return {convert(k): convert(v) for k, v in zip(n.keys, n.values)}
    return ast.literal_eval(n)

  return convert(node.body)


def _normalise(value):
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if isinstance(value, (list, tuple)):
    return tuple(_normalise(v) for v in value)
  if isinstance(value, dict):
    return {k: _normalise(v) for k, v in value.items()}
  return value


def _field(config, path: str):
  value = config
  for part in path.split('.'):
    value = value[part]
  return value


ROWS = _table_rows()


def test_the_table_covers_every_recipe():
  recipes_in_table = {recipe for recipe, _, _ in ROWS}
  assert recipes_in_table >= {
      'radimagenet', 'radimagenet_baseline', 'ham10000', 'ham10000_baseline',
      'msd_liver', 'msd_liver_baseline'}
  assert len(ROWS) >= 60


@pytest.mark.parametrize('recipe,field,text', ROWS,
                         ids=[f'{r}:{f}' for r, f, _ in ROWS])
def test_readme_value_is_the_recipes(recipe, field, text):
  config = importlib.import_module(f'dp_medtf.configs.{recipe}').get_config()
  assert re.fullmatch(r'[\w.]+', field), field
  assert _normalise(_field(config, field)) == _normalise(_literal(text))
