"""Analysis: figures of merit and alignment modulo the trivial ambiguities."""

from ._align import Alignment, align, fourier_shift, subpixel_shift, twin
from ._fom import calc_intensity, data_metrics, llk, rfactor, truth_metrics
from ._stage import Metrics, MetricsParams, compute_metrics

__all__ = ["Alignment", "Metrics", "MetricsParams", "align", "calc_intensity", "compute_metrics",
           "data_metrics", "fourier_shift", "llk", "rfactor", "subpixel_shift", "truth_metrics",
           "twin"]
