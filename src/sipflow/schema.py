"""The shared vocabulary of sipflow datasets.

Every stage takes and returns an :class:`xarray.Dataset`. These are the names
they agree on; a plugin should import them from here rather than spell them.

Variables
---------
intensity : float32, detector dims
    Photon counts per pixel (after preprocessing: dark-subtracted, thresholded).
mask : bool, detector dims (or the last two of them)
    True where a pixel is valid (measured). Unmeasured pixels are left free by
    the projections.
dark : float32, detector dims (2-D)
    Dark frame, subtracted by ``prep.standard``.
obj : complex64, real-space dims
    The selected or averaged reconstruction. Never has a ``run`` dimension.
support : bool, real-space dims
    Support of ``obj``.
obj_runs, support_runs : complex64 / bool, (run, *real-space dims)
    Every independent random start that was kept.
llk : float32, (run, iter)
    Poisson log-likelihood on the projected pixels, normalised so that an ideal fit
    is ~1; ``iter`` holds the iteration numbers at which it was evaluated.
llk_free : float32, (run, iter)
    The same on the free pixels held out of the projections (ranks the runs).
free_mask : bool, detector dims
    The held-out free pixels.
loss : float32, (run, iter)
    The loss an optimisation-based stage minimised (e.g. the deep priors' NLL per
    fitted pixel); NaN after a run stopped.
es_variance : float32, (run, iter)
    Relative variance of a deep prior's recent outputs, the early-stopping criterion.
error : float32, (run, iter)
    Relative error modulo phase, translation and twin against ``obj_true``, when the
    data are simulated.
prtf : float32, (q_shell,)
    Phase-retrieval transfer function of ``obj`` per one-pixel shell of |q|.
phase : float32 [rad], real-space dims
    Unwrapped phase of ``obj`` with its ramp and offset removed (``bragg.strain``);
    NaN outside the support.
displacement : float32 [nm], real-space dims
    Displacement along the Bragg vector, ``φ / |G|``.
strain : float32, real-space dims
    ``∂u/∂ĝ`` along the Bragg vector; NaN outside the support.
surface : bool, real-space dims
    The support's outer layer, where strain is one-sided (flagged, not in statistics).
obj_true, support_true : complex64 / bool, real-space dims
    Ground truth, present for simulated data; used by ``analyse.metrics``.

Dimensions
----------
Detector data are ``(frame, det_y, det_x)`` for a 3-D rocking scan and
``(det_y, det_x)`` for a single 2-D pattern. Real-space arrays are
``(z, y, x)`` or ``(y, x)``. Independent runs use ``run``, iterations ``iter``.
After ``prep.standard`` the diffraction pattern is centred: q = 0 sits at index
``n // 2`` of every axis, the convention of :func:`numpy.fft.fftshift`.

Attributes
----------
Geometry lives in ``attrs`` in SI units: ``wavelength_m``, ``energy_eV``,
``distance_m``, ``pixel_size_m``. The source file is ``source`` and its
SHA-256 ``source_sha256``. Provenance of a run is the JSON-compatible dict
``attrs["provenance"]``; figures of merit are ``attrs["metrics"]``.
"""

from __future__ import annotations

INTENSITY = "intensity"
MASK = "mask"
DARK = "dark"
FLAT = "flat"
OBJ = "obj"
SUPPORT = "support"
OBJ_RUNS = "obj_runs"
SUPPORT_RUNS = "support_runs"
LLK = "llk"
LLK_FREE = "llk_free"
FREE_MASK = "free_mask"
PRTF = "prtf"
LOSS = "loss"
ES_VARIANCE = "es_variance"
ERROR = "error"
PHASE = "phase"
DISPLACEMENT = "displacement"
STRAIN = "strain"
SURFACE = "surface"
#: partial-coherence kernel on the intensity (detector dims, centred, sums to 1)
COHERENCE_KERNEL = "coherence_kernel"
OBJ_TRUE = "obj_true"
SUPPORT_TRUE = "support_true"

RUN = "run"
ITER = "iter"
DETECTOR_DIMS = {2: ("det_y", "det_x"), 3: ("frame", "det_y", "det_x")}
REAL_DIMS = {2: ("y", "x"), 3: ("z", "y", "x")}

GEOMETRY_ATTRS = ("wavelength_m", "energy_eV", "distance_m", "pixel_size_m")

#: root attribute that marks a store written completely by sipflow
COMPLETE_ATTR = "sipflow_complete"
#: root attribute with the store layout version
FORMAT_ATTR = "sipflow_format"
FORMAT_VERSION = 2
#: root attribute with the SHA-256 of every array's stored chunks, written at completion
CHECKSUM_ATTR = "sipflow_checksums"


def detector_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names of detector data with `ndim` dimensions (2 or 3)."""
    from .errors import DataError

    try:
        return DETECTOR_DIMS[ndim]
    except KeyError:
        raise DataError(
            f"detector data must be 2-D (rows, cols) or 3-D (frames, rows, cols); got {ndim}-D"
        ) from None


def real_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names of real-space arrays with `ndim` dimensions (2 or 3)."""
    from .errors import DataError

    try:
        return REAL_DIMS[ndim]
    except KeyError:
        raise DataError(f"objects must be 2-D or 3-D; got {ndim}-D") from None


#: what a phase stage produces per run and per iteration: replaced, never mixed, by the next one
PHASE_RESULTS = (OBJ_RUNS, SUPPORT_RUNS, LLK, LLK_FREE, LOSS, ES_VARIANCE, ERROR, PRTF, RUN,
                 ITER, "q_shell")


def without_phase_results(ds):
    """`ds` without an earlier phase stage's per-run arrays and curves (:data:`PHASE_RESULTS`).

    A phase stage calls it before writing its own, so that runs and curves of two
    stages (of different run counts) are never mixed in one dataset.
    """
    return ds.drop_vars([v for v in ds.variables if v in PHASE_RESULTS])
