"""Privacy budgets as text: parsed from flags, written in one spelling.

Every app, folder name, table cell and JSON key spells a budget epsilon the
same way, `epsilon_text`: 'inf' for non-private training, plain digits for
integers below a million ('8'), otherwise the fewest significant digits that
give back the same float, with a bare exponent ('0.5', '1e9', '1.5e12').
The text parses back to the same float, so it can name a run's folder
(eps1e9_seed10) and be read again from it.

Example:

  >>> [epsilon_text(e) for e in parse_epsilons('8, 0.5, 1e+09, inf')]
  ['8', '0.5', '1e9', 'inf']
  >>> parse_epsilon('-1', '--epsilon')
  Traceback (most recent call last):
  ...
  ValueError: --epsilon must be positive, got '-1'.
"""

from __future__ import annotations

import math

# Integers below this are written with all their digits ('100000', not '1e5').
_PLAIN_INTEGER_LIMIT = 1e6


def parse_epsilon(text: str, name: str = '--epsilon', *,
                  finite: bool = False) -> float:
  """Parses one budget: a positive number, or 'inf' (no privacy).

  Args:
    text: e.g. '8', '0.5', '1e9' or 'inf' (any spelling Python's float
      reads, surrounding spaces allowed).
    name: what `text` came from, named in errors, e.g. '--epsilon'.
    finite: refuse 'inf' (for computations that need a finite budget).

  Returns:
    The budget; math.inf for 'inf'.

  Raises:
    ValueError: naming `name`, for a non-number, NaN, a budget that is not
      positive, or an infinite one when `finite` is set.

  Example:

    >>> parse_epsilon('1e9'), parse_epsilon(' inf ')
    (1000000000.0, inf)
  """
  what = 'a positive finite number' if finite else 'a positive number or inf'
  try:
    value = float(text)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be {what}, got {text!r}.') from None
  if math.isnan(value):
    raise ValueError(f'{name} must be {what}, got {text!r}.')
  if value <= 0:
    raise ValueError(f'{name} must be positive, got {text!r}.')
  if finite and math.isinf(value):
    raise ValueError(f'{name} must be finite, got {text!r}.')
  return value


def parse_epsilons(text: str, name: str = '--epsilon', *,
                   finite: bool = False) -> list[float]:
  """Parses a comma-separated list of budgets, each as parse_epsilon does.

  Args:
    text: e.g. '1,8,1e9,inf'.
    name: the flag `text` came from, named in errors.
    finite: refuse 'inf'.

  Returns:
    The budgets, in the given order.

  Raises:
    ValueError: naming `name`, for an empty list or item, a bad budget, or
      one given twice (in any spelling: '1e9' and '1000000000' are one).

  Example:

    >>> parse_epsilons('1, 8, inf')
    [1.0, 8.0, inf]
    >>> parse_epsilons('8,8.0', '--epsilons')
    Traceback (most recent call last):
    ...
    ValueError: --epsilons: '8.0' is given twice.
  """
  if not text.strip():
    raise ValueError(f'{name} is empty; give a comma-separated list such as '
                     f'{"1,8,32" if finite else "1,8,inf"}.')
  values = []
  for item in text.split(','):
    if not item.strip():
      raise ValueError(f'{name}: {text!r} has an empty item.')
    value = parse_epsilon(item, name, finite=finite)
    if value in values:
      raise ValueError(f'{name}: {item.strip()!r} is given twice.')
    values.append(value)
  return values


def epsilon_text(epsilon: float) -> str:
  """The one spelling of a budget in folder names, tables and JSON keys.

  Any float is written (an invalid budget is refused where it is used, not
  where it is named in a message).

  Args:
    epsilon: a budget; math.inf for no privacy.

  Returns:
    'inf'; all the digits of an integer below a million ('8', '100000');
    else the shortest text that parses back to `epsilon`, its exponent
    without '+' or leading zeros ('0.5', '1e9', '1.5e12', '2.5e-5').

  Example:

    >>> epsilon_text(8.0), epsilon_text(1e9), epsilon_text(math.inf)
    ('8', '1e9', 'inf')
  """
  if math.isinf(epsilon) or math.isnan(epsilon):
    return str(float(epsilon))  # 'inf', '-inf', 'nan'.
  if float(epsilon).is_integer() and abs(epsilon) < _PLAIN_INTEGER_LIMIT:
    return str(int(epsilon))
  for digits in range(1, 18):  # 17 significant digits always round-trip.
    text = f'{epsilon:.{digits}g}'
    if float(text) == epsilon:
      break
  mantissa, exponent_mark, exponent = text.partition('e')
  return f'{mantissa}e{int(exponent)}' if exponent_mark else text
