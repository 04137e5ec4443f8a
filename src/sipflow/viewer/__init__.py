"""The napari plugin of sipflow (npe2): a reader, the "Result" and "Run" widgets, sample data.

napari is imported only in this package and only by the modules that need it; the layer,
table and form logic lives in napari-free modules (``_layers``, ``_results``, ``_forms``)
that are tested without Qt. Install with ``pip install 'sipflow[napari]'``; open results
with ``sipflow view RESULT.zarr`` or napari's File ▸ Open.
"""

from ._layers import META_KEY, ROLES, classify, real_space_scale, result_layers, scan_layers

__all__ = ["META_KEY", "ROLES", "classify", "real_space_scale", "result_layers", "scan_layers"]
