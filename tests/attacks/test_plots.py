"""The attack's figures show every curve: nothing under the legend or border."""

from matplotlib.backends import backend_agg
import numpy as np

from dp_medtf.attacks import plots


def test_error_cdf_keeps_curves_clear_of_legend_and_border(tmp_path):
  errors = {'inf': np.zeros(10), '1e15': np.linspace(0.0, 0.3, 10),
            '1e12': np.linspace(0.7, 1.0, 10), '1e9': np.ones(10)}
  fig = plots.plot_error_cdf(errors, str(tmp_path / 'cdf.png'))
  assert (tmp_path / 'cdf.png').stat().st_size > 0
  ax = fig.axes[0]
  renderer = backend_agg.FigureCanvasAgg(fig).get_renderer()
  legend_box = ax.get_legend().get_window_extent(renderer)
  axes_box = ax.get_window_extent(renderer)
  # The legend lies wholly to the right of the plotting area.
  assert legend_box.x0 >= axes_box.x1
  # Curves at error 0 or 1 and at share 0 or 1 stay inside the view.
  x0, x1 = ax.get_xlim()
  y0, y1 = ax.get_ylim()
  assert x0 < 0.0 and x1 > 1.0 and y0 < 0.0 and y1 > 1.0
  lines = ax.get_lines()
  assert len(lines) == 4
  # Coinciding curves remain distinguishable.
  assert len({line.get_linestyle() for line in lines}) == 4
