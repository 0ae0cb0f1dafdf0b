"""Presentation of risk profiles: the printed table, CSV and the figure.

Each shows both methods by name: rero_exact and rero_edgeworth (the paper's).

Example:

  >>> from dp_medtf.risk import bounds
  >>> rows = bounds.risk_profile(num_examples=106, batch_size=1, epochs=500,
  ...                            delta=8e-7, epsilons=[8.0])
  >>> print(format_table({'msd_liver': rows}))  # doctest: +SKIP
  >>> print(format_csv({'msd_liver': rows}))  # doctest: +SKIP
  >>> plot_profiles({'msd_liver': rows}, '/tmp/risk.png')  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from dp_medtf.risk import bounds  # pylint: disable=wrong-import-position

_WORST_COLOR = '#6a3d9a'  # Purple, as in the paper's Fig. 2.
_RELAXED_COLOR = '#ff7f00'  # Orange.


_ADVERSARIES = (('worst_case', 'worst case'), ('relaxed', 'relaxed'))


def _percent(value: float | None) -> str:
  return 'n/a' if value is None else f'{100.0 * value:.4f}'


def format_table(profiles: dict[str, list[dict]]) -> str:
  """A text table of risk profiles, one line per budget, both methods.

  Risks are in percent, by the exact method (rero_exact) and by the
  Edgeworth expansion the paper used (rero_edgeworth; 'n/a' where it does
  not apply), side by side for each adversary.

  Args:
    profiles: rows of bounds.risk_profile, keyed by a label (the dataset).

  Returns:
    The table, with closing notes naming the methods.
  """
  method_cells = ' '.join(f'{method:>14}' for _ in _ADVERSARIES
                          for method in bounds.METHODS)
  lead = (f'{"dataset":<12} {"epsilon":>8} {"sigma":>10} {"q":>9} '
          f'{"T":>7} {"kappa":>9}')
  groups = ''.join(f' {name + " %":^29}' for _, name in _ADVERSARIES)
  header = f'{lead} {method_cells}'
  lines = [(' ' * len(lead) + groups).rstrip(), header, '-' * len(header)]
  largest_error = 0.0
  for label, rows in profiles.items():
    for row in rows:
      cells = []
      for key, _ in _ADVERSARIES:
        largest_error = max(largest_error, row[key]['rero_exact_error'])
        cells += [f'{_percent(row[key][method]):>14}'
                  for method in bounds.METHODS]
      lines.append(
          f'{label:<12} {row["epsilon"]:>8.3g} '
          f'{row["noise_multiplier"]:>10.4g} {row["sampling_rate"]:>9.3g} '
          f'{row["steps"]:>7d} {row["kappa"]:>9.3g} ' + ' '.join(cells))
  lines += [
      f'rero_exact: {bounds.METHODS["rero_exact"]}; widest bracket '
      f'{largest_error:.1g}; valid for any q, T, epsilon.',
      f'rero_edgeworth: {bounds.METHODS["rero_edgeworth"]}; no error bound; '
      'n/a where it does not apply (few steps, or rare large jumps of the '
      'privacy loss).',
  ]
  return '\n'.join(lines)


def csv_columns() -> list[str]:
  """The columns of `format_csv`: nested keys joined by a dot."""
  fields = [f.name for f in dataclasses.fields(bounds.Rero)]
  return (['dataset', 'epsilon', 'noise_multiplier', 'sampling_rate', 'steps',
           'kappa'] + [f'{key}.{field}' for key, _ in _ADVERSARIES
                       for field in fields] + ['paper_method'])


def format_csv(profiles: dict[str, list[dict]]) -> str:
  """Risk profiles as CSV, one line per budget, both methods.

  Args:
    profiles: rows of bounds.risk_profile, keyed by a label (the dataset;
      'explicit' is written as an empty cell).

  Returns:
    The CSV text with a header line of csv_columns().
  """
  out = io.StringIO()
  writer = csv.DictWriter(out, csv_columns(), lineterminator='\n')
  writer.writeheader()
  for label, rows in profiles.items():
    for row in rows:
      flat = {name: value for name, value in row.items()
              if not isinstance(value, dict)}
      for key, _ in _ADVERSARIES:
        flat.update({f'{key}.{field}': value
                     for field, value in row[key].items()})
      flat['dataset'] = '' if label == 'explicit' else label
      writer.writerow(flat)
  return out.getvalue()


def plot_profiles(profiles: dict[str, list[dict]], path: str) -> None:
  """Risk against epsilon (log axis), one panel per profile, like Fig. 2.

  Solid lines: the exact method; dotted: the Edgeworth expansion (the
  paper's method), each named in the legend.

  Args:
    profiles: rows of bounds.risk_profile, keyed by the panel title.
    path: the PNG to write.
  """
  fig, axes = plt.subplots(1, len(profiles), figsize=(4.5 * len(profiles), 3.6),
                           squeeze=False, sharey=True)
  for ax, (label, rows) in zip(axes[0], profiles.items()):
    rows = sorted(rows, key=lambda row: row['epsilon'])
    epsilons = [row['epsilon'] for row in rows]
    for (key, name), color in zip(_ADVERSARIES,
                                  (_WORST_COLOR, _RELAXED_COLOR)):
      ax.plot(epsilons, [row[key]['rero_exact'] for row in rows], '-o',
              color=color, markersize=3, label=f'{name}, rero_exact')
      edgeworth = [(row['epsilon'], row[key]['rero_edgeworth'])
                   for row in rows if row[key]['rero_edgeworth'] is not None]
      if edgeworth:
        ax.plot(*zip(*edgeworth), ':', color=color, linewidth=1.2,
                label=f'{name}, rero_edgeworth (paper)')
    ax.axhline(rows[0]['kappa'], color='gray', linestyle='--', linewidth=0.8,
               label='prior (1/N)')
    ax.set_xscale('log')
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('privacy budget epsilon')
    ax.set_title(label)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('reconstruction risk bound (ReRo)')
  axes[0][-1].legend(fontsize=7, loc='upper left')
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
