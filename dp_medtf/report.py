"""Writes the paper's Table 3 and figure for a sweep.

Usage:

  python -m dp_medtf.report --sweep_dir=sweeps/demo --output_dir=sweeps/demo/report

Reads <sweep_dir>/<dataset>/eps<e>_seed<s>/results.json (from
`python -m dp_medtf.sweep`; dp_medtf.runs reads and checks them) and
<sweep_dir>/<dataset>/attack/summary.json (from
`python -m dp_medtf.attack --workdir=<sweep_dir>/<dataset>/attack`), and
writes table3.md, table3.csv and performance_vs_risk.png to --output_dir.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
import tensorflow as tf

from dp_medtf import cli
from dp_medtf import reporting

_SWEEP_DIR = flags.DEFINE_string('sweep_dir', None, 'The sweep folder.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where to write the '
                                  'table and figure; default '
                                  '<sweep_dir>/report.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _SWEEP_DIR.value:
    raise app.UsageError('--sweep_dir is required.')
  if not tf.io.gfile.isdir(_SWEEP_DIR.value):
    raise app.UsageError(f'--sweep_dir={_SWEEP_DIR.value} is not a folder.')
  out = _OUTPUT_DIR.value or os.path.join(_SWEEP_DIR.value, 'report')
  cli.check_output_dir('output_dir' if _OUTPUT_DIR.value else 'sweep_dir',
                       out)
  try:
    rows, problems = reporting.collect(_SWEEP_DIR.value)
  except ValueError as e:  # A run folder or results.json it cannot read.
    raise app.UsageError(f'--sweep_dir={_SWEEP_DIR.value}: {e}') from None
  if not rows:
    raise app.UsageError(f'--sweep_dir={_SWEEP_DIR.value} holds no finished '
                         'run.' + ''.join(f'\n  {p}' for p in problems))
  tf.io.gfile.makedirs(out)
  markdown = reporting.to_markdown(rows, problems)
  with tf.io.gfile.GFile(os.path.join(out, 'table3.md'), 'w') as f:
    f.write(markdown)
  with tf.io.gfile.GFile(os.path.join(out, 'table3.csv'), 'w') as f:
    f.write(reporting.to_csv(rows))
  reporting.plot(rows, os.path.join(out, 'performance_vs_risk.png'))
  print(markdown)
  print(f'Wrote table3.md, table3.csv and performance_vs_risk.png to {out}')


if __name__ == '__main__':
  cli.run(main)
