"""Budgets as text: parsing flags, and the one spelling written everywhere."""

import math

import pytest

from dp_medtf import epsilons

GOOD = [
    ('1', 1.0, '1'),
    ('8', 8.0, '8'),
    ('0.5', 0.5, '0.5'),
    ('1e9', 1e9, '1e9'),
    ('1e18', 1e18, '1e18'),
    ('inf', math.inf, 'inf'),
    # Other spellings of the same budgets come out in the one spelling.
    (' 8.0 ', 8.0, '8'),
    ('1e+09', 1e9, '1e9'),
    ('1000000000', 1e9, '1e9'),
    ('Infinity', math.inf, 'inf'),
    ('123456', 123456.0, '123456'),
    ('1.5e12', 1.5e12, '1.5e12'),
    ('2.5e-05', 2.5e-5, '2.5e-5'),
]
BAD = [
    ('0', 'must be positive'),
    ('-1', 'must be positive'),
    ('-inf', 'must be positive'),
    ('nan', 'must be a positive number or inf'),
    ('abc', 'must be a positive number or inf'),
    ('', 'must be a positive number or inf'),
]


@pytest.mark.parametrize('text,value,spelling', GOOD)
def test_parse_and_spell(text, value, spelling):
  assert epsilons.parse_epsilon(text) == value
  assert epsilons.epsilon_text(value) == spelling
  # The spelling reads back to the same budget (folder names, JSON keys).
  assert epsilons.parse_epsilon(spelling) == value


@pytest.mark.parametrize('text,message', BAD)
def test_bad_budget_names_the_flag(text, message):
  with pytest.raises(ValueError, match=f'^--epsilon {message}, got '
                     f'{text!r}.$'):
    epsilons.parse_epsilon(text, '--epsilon')


@pytest.mark.parametrize('text', ['inf', 'Infinity', '1e400'])
def test_finite_refuses_infinity(text):
  assert epsilons.parse_epsilon(text) == math.inf
  with pytest.raises(ValueError, match='^--delta_free must be finite'):
    epsilons.parse_epsilon(text, '--delta_free', finite=True)


@pytest.mark.parametrize('value', [
    1.0, 0.5, 0.1, 1 / 3, 2 / 3, 3.14159, 999999.0, 1e6, 1234567.0, 1e9,
    1.5e9, 123456789.0, 1e12, 1e15, 1e18, 1e300, 5e-324, 1e-7])
def test_spelling_is_short_and_exact(value):
  text = epsilons.epsilon_text(value)
  assert float(text) == value
  assert '+' not in text and 'e0' not in text and 'e-0' not in text
  assert len(text) <= len(repr(value))


def test_parse_list_in_order():
  assert epsilons.parse_epsilons('1,8, 1e9 ,inf') == [1.0, 8.0, 1e9, math.inf]
  assert epsilons.parse_epsilons('32') == [32.0]


@pytest.mark.parametrize('text,message', [
    ('', '^--epsilons is empty; give a comma-separated list such as '
         '1,8,inf.$'),
    ('  ', '^--epsilons is empty'),
    ('1,,8', "^--epsilons: '1,,8' has an empty item.$"),
    ('1,8,', 'has an empty item'),
    ('1,-8', "^--epsilons must be positive, got '-8'.$"),
    ('1,0', "^--epsilons must be positive, got '0'.$"),
    ('nan,1', "^--epsilons must be a positive number or inf, got 'nan'.$"),
    ('1,abc', "^--epsilons must be a positive number or inf, got 'abc'.$"),
    ('8,8.0', "^--epsilons: '8.0' is given twice.$"),
    ('1e9,1000000000', "^--epsilons: '1000000000' is given twice.$"),
    ('inf,Infinity', 'is given twice'),
])
def test_bad_lists_name_the_flag(text, message):
  with pytest.raises(ValueError, match=message):
    epsilons.parse_epsilons(text, '--epsilons')


def test_finite_list():
  assert epsilons.parse_epsilons('1,1e18', '--epsilon', finite=True) == [
      1.0, 1e18]
  with pytest.raises(ValueError, match="^--epsilon must be finite, got 'inf'"):
    epsilons.parse_epsilons('1,inf', '--epsilon', finite=True)
  with pytest.raises(ValueError, match='such as 1,8,32'):
    epsilons.parse_epsilons('', '--epsilon', finite=True)
