"""Table 3's risk columns: both ReRo methods, named, the paper's marked."""

from __future__ import annotations

import math

from dp_medtf import reporting
from dp_medtf import risk


def _rows() -> list[reporting.Row]:
  private = reporting.Row('demo', 8.0, [10], {'mcc': [0.5]})
  private.rero_exact_worst_case, private.rero_edgeworth_worst_case = 0.1, 0.2
  private.rero_exact_relaxed, private.rero_edgeworth_relaxed = 0.03, 0.04
  return [private, reporting.Row('demo', math.inf, [10], {'mcc': [0.7]})]


def test_table_has_both_methods_for_both_adversaries():
  header, cells = reporting.table(_rows())
  columns = [f'{adversary} ReRo {method} (%)'
             for adversary in ('worst-case', 'relaxed')
             for method in ('rero_exact', 'rero_edgeworth')]
  start = header.index(columns[0])
  assert header[start:start + 4] == columns
  assert cells[0][start:start + 4] == ['10.00', '20.00', '3.00', '4.00']
  assert cells[1][start:start + 4] == ['–'] * 4  # No DP.


def test_markdown_names_the_methods_and_the_papers():
  markdown = reporting.to_markdown(_rows(), [])
  assert 'worst-case ReRo rero_edgeworth (%)' in markdown
  assert f'rero_edgeworth: {risk.METHODS["rero_edgeworth"]}' in markdown
  assert 'the method the paper used' in markdown
  assert risk.PAPER_METHOD == 'rero_edgeworth'
