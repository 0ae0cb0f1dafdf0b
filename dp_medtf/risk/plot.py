"""Presentation of risk profiles: the printed table and the figure.

Example:

  >>> from dp_medtf.risk import bounds
  >>> rows = bounds.risk_profile(num_examples=106, batch_size=1, epochs=500,
  ...                            delta=8e-7, epsilons=[8.0])
  >>> print(format_table({'msd_liver': rows}))  # doctest: +SKIP
  >>> plot_profiles({'msd_liver': rows}, '/tmp/risk.png')  # doctest: +SKIP
"""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

_WORST_COLOR = '#6a3d9a'  # Purple, as in the paper's Fig. 2.
_RELAXED_COLOR = '#ff7f00'  # Orange.


def _percent(value: float | None) -> str:
  return 'n/a' if value is None else f'{100.0 * value:.4f}'


def _edgeworth_cell(check: dict) -> str:
  """The Edgeworth value where it disagrees with the numerical one."""
  if check['agree']:
    return ''
  return 'n/a' if check['edgeworth'] is None else _percent(check['edgeworth'])


def format_table(profiles: dict[str, list[dict]]) -> str:
  """A text table of risk profiles, one line per budget.

  Risks are in percent. The Edgeworth columns are filled only where that
  method disagrees with the reported numerical value ('n/a': the expansion
  does not apply there).

  Args:
    profiles: rows of bounds.risk_profile, keyed by a label (the dataset).

  Returns:
    The table, with a closing note on the methods.
  """
  header = (f'{"dataset":<12} {"epsilon":>8} {"sigma":>10} {"q":>9} '
            f'{"T":>7} {"kappa":>9} {"worst %":>9} {"relaxed %":>9} '
            f'{"EW worst %":>10} {"EW relax %":>10}')
  lines = [header, '-' * len(header)]
  tolerance, largest_error = None, 0.0
  for label, rows in profiles.items():
    for row in rows:
      check = row['cross_check']
      tolerance = check['tolerance']
      largest_error = max(largest_error,
                          check['worst_case']['numerical_error'],
                          check['relaxed']['numerical_error'])
      lines.append(
          f'{label:<12} {row["epsilon"]:>8.3g} '
          f'{row["noise_multiplier"]:>10.4g} {row["sampling_rate"]:>9.3g} '
          f'{row["steps"]:>7d} {row["kappa"]:>9.3g} '
          f'{_percent(row["rero_worst_case"]):>9} '
          f'{_percent(row["rero_relaxed"]):>9} '
          f'{_edgeworth_cell(check["worst_case"]):>10} '
          f'{_edgeworth_cell(check["relaxed"]):>10}')
  if tolerance is not None:
    lines.append(
        'Risks: upper ends of numerical brackets (lattice compositions, valid '
        f'for any q, T, epsilon; widest bracket {largest_error:.1g}). EW: '
        'five-cumulant Edgeworth expansion, shown where it differs by more '
        f'than {tolerance:g} plus the bracket; n/a where it does not apply '
        '(few steps, or rare large jumps of the privacy loss).')
  return '\n'.join(lines)


def plot_profiles(profiles: dict[str, list[dict]], path: str) -> None:
  """Risk against epsilon (log axis), one panel per profile, like Fig. 2.

  Args:
    profiles: rows of bounds.risk_profile, keyed by the panel title.
    path: the PNG to write.
  """
  fig, axes = plt.subplots(1, len(profiles), figsize=(4.5 * len(profiles), 3.6),
                           squeeze=False, sharey=True)
  for ax, (label, rows) in zip(axes[0], profiles.items()):
    rows = sorted(rows, key=lambda row: row['epsilon'])
    epsilons = [row['epsilon'] for row in rows]
    for key, name, color in (('worst_case', 'worst case', _WORST_COLOR),
                             ('relaxed', 'relaxed', _RELAXED_COLOR)):
      ax.plot(epsilons, [row[f'rero_{key}'] for row in rows], '-o',
              color=color, markersize=3, label=name)
      edgeworth = [(row['epsilon'], row['cross_check'][key]['edgeworth'])
                   for row in rows
                   if row['cross_check'][key]['edgeworth'] is not None]
      if edgeworth:
        ax.plot(*zip(*edgeworth), ':', color=color, linewidth=1,
                label=f'{name} (Edgeworth)')
    ax.axhline(rows[0]['kappa'], color='gray', linestyle='--', linewidth=0.8,
               label='prior (1/N)')
    ax.set_xscale('log')
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('privacy budget epsilon')
    ax.set_title(label)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('reconstruction risk bound (ReRo)')
  axes[0][-1].legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
