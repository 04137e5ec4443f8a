"""The argument parser of the sipflow command (a declarative table of commands and options)."""

from __future__ import annotations

import argparse

from .._version import __version__
from ._commands import (
    cmd_beamlines,
    cmd_demo,
    cmd_evaluate,
    cmd_export,
    cmd_plugins,
    cmd_run,
    cmd_simulate,
    cmd_stages,
    cmd_train,
    cmd_validate,
    cmd_view,
)
from ._facility import cmd_batch, cmd_serve, cmd_watch

#: one default engine for every command that runs pipelines (run, batch, watch, demo)
ENGINE_HELP = ("prefect (default): each scan a Prefect flow run, on the server of "
               "PREFECT_API_URL when it is set, else on one started for this command; "
               "local: in this process, without Prefect")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipflow", description="Coherent-imaging workflows: HDF5 "
                                "in, plugin stages, Zarr out.")
    p.add_argument("--version", action="version", version=f"sipflow {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a simulated scan (with its truth) to HDF5")
    s.add_argument("output")
    s.add_argument("--shape", type=int, nargs="+", default=[128, 128])
    s.add_argument("--kind", "--object", dest="kind", default=None, help="object shape (2-D: "
                   "blob, ellipse, hexagon, cells, lithograph, logo; 3-D: crystal, ellipsoid, "
                   "blob)")
    s.add_argument("--extent", type=float, default=0.4, help="object size / array size")
    s.add_argument("--photons", default="1e9", help="total photons, or 'none' for noiseless")
    s.add_argument("--beamstop", type=float, default=0.0, help="beamstop radius [pixels]")
    s.add_argument("--beamstop-size", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="a rectangular beamstop of this size around q = 0 [pixels]")
    s.add_argument("--masked-squares", type=int, default=0,
                   help="small masked squares (4-8 px) scattered around q = 0")
    s.add_argument("--processed", action="store_true", help="write the pattern as a provider "
                   "hands it out: centro-symmetrised, rescaled, float32 (not counts)")
    s.add_argument("--gaps", type=int, default=0, help="detector gap width [pixels]")
    s.add_argument("--hot-pixels", type=int, default=0)
    s.add_argument("--dead-pixels", type=float, default=0.0,
                   help="share of dead (masked) pixels, scattered")
    s.add_argument("--centre-offset", type=int, nargs=2, default=[0, 0], metavar=("ROWS", "COLS"),
                   help="q = 0 this far from the array centre [pixels]")
    s.add_argument("--background", type=float, default=0.0,
                   help="incoherent background [photons per pixel]")
    s.add_argument("--phase", type=float, default=1.0, help="phase field amplitude [rad]")
    s.add_argument("--coherence-sigma", type=float, default=0.0, help="partial coherence: "
                   "Gaussian blur of the intensity [pixels]")
    s.add_argument("--beam-centre", choices=["pixel", "m"], default=None,
                   help="write the beam centre (q = 0) as beam_center_x/y in pixels or metres")
    s.add_argument("--layout", choices=["cxi", "nexus", "eiger"], default="cxi")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run a pipeline on one scan and write a Zarr store")
    r.add_argument("pipeline", help="template name (default, cdi, bcdi) or YAML file")
    r.add_argument("input", help="detector data: an HDF5 file, a SPEC file (with --scan), "
                   "an EDF/CBF/TIFF frame file, a folder of frames or a quoted glob")
    r.add_argument("-o", "--output", required=True, help="result store (.zarr)")
    r.add_argument("--engine", choices=["prefect", "local"], default="prefect",
                   help=ENGINE_HELP)
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    r.add_argument("--dataset", default=None, help="HDF5 path of the frames")
    r.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="time budget of the phase stages (max_seconds): no new run set once "
                   "it is spent; the best so far is returned, marked as such")
    _input_options(r)
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="train an end-to-end model on simulated pairs (resumes "
                       "in its folder)")
    t.add_argument("output", help="model folder: model.pt (the checkpoint a pipeline names) "
                   "and history.csv; training the same settings there resumes")
    t.add_argument("--config", default=None, help="YAML file of training settings (options "
                   "given here override it)")
    t.add_argument("--shape", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"))
    t.add_argument("--kinds", nargs="+", default=None, help="object shapes (2-D kinds of "
                   "sipflow simulate)")
    t.add_argument("--samples", type=int, default=None, help="training pairs")
    t.add_argument("--validation", type=int, default=None, help="held-out pairs")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--photons", default=None, help="total photons per pattern, or 'none'")
    t.add_argument("--symmetry-break", action=argparse.BooleanOptionalAction, default=None,
                   help="train on canonical targets (default on)")
    t.add_argument("--group", default=None, help="ambiguity group of the targets")
    t.add_argument("--width", type=int, default=None)
    t.add_argument("--depth", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--overwrite", action="store_true", help="replace a model of other "
                   "settings in the folder")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("batch", help="run a pipeline on many scans: one store per scan, a "
                       "summary table, exit status 1 when any failed")
    b.add_argument("pipeline", help="template name or YAML file")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="HDF5 detector files")
    b.add_argument("-o", "--output", required=True, help="folder of the result stores "
                   "(<input stem>.zarr each)")
    b.add_argument("--engine", choices=["prefect", "local", "dask"], default="prefect",
                   help="prefect (default): one Prefect flow run, on the server of "
                   "PREFECT_API_URL when it is set, else on one started for this command; "
                   "local: processes of this machine; dask: that flow run's scans on a "
                   "Dask cluster")
    b.add_argument("--concurrency", type=int, default=1, help="scans at once (each gets "
                   "its share of the cores; under dask, the local cluster's workers)")
    b.add_argument("--dask-address", default=None, metavar="ADDRESS", help="scheduler of "
                   "an existing Dask cluster (tcp://host:8786) instead of a local one")
    b.add_argument("--device", default="auto")
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--skip-existing", action="store_true", help="resume an interrupted "
                   "batch: scans whose store is complete are skipped (not failures); the "
                   "others run")
    b.set_defaults(func=cmd_batch)

    wa = sub.add_parser("watch", help="process every finished scan written to a folder, "
                        "once each (state kept on disk)")
    wa.add_argument("directory", help="folder the scans are written to")
    wa.add_argument("--pipeline", required=True, help="template name or YAML file")
    wa.add_argument("-o", "--output", required=True, help="folder of the result stores "
                    "(<scan stem>.zarr) and of the watcher's state")
    wa.add_argument("--engine", choices=["prefect", "local"], default="prefect",
                    help=ENGINE_HELP)
    wa.add_argument("--pattern", default="*.h5", help="glob of the scan (master) files")
    wa.add_argument("--poll", type=float, default=2.0, help="seconds between looks")
    wa.add_argument("--stable", type=float, default=5.0, help="a file must keep its size "
                    "and mtime this long [s]")
    wa.add_argument("--max-attempts", type=int, default=2, help="attempts per scan before "
                    "it is given up (a scan that changes after failing starts again)")
    wa.add_argument("--retry-after", type=float, default=60.0, metavar="SECONDS",
                    help="wait this long before trying an unchanged failed scan again")
    wa.add_argument("--once", action="store_true", help="process what is finished, then exit")
    wa.add_argument("--deployment", default=None, metavar="FLOW/NAME", help="run each scan "
                    "through this deployment on the server of PREFECT_API_URL (e.g. "
                    "sipflow-process-scan/sipflow, made by sipflow serve) instead of here")
    wa.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                    help="with --deployment: a running flow run without a heartbeat this "
                    "long lost its worker; it is marked crashed and the scan run again "
                    "(default: three of its heartbeats, 90 s for sipflow serve's "
                    "deployments)")
    wa.add_argument("--device", default="auto")
    wa.add_argument("--seed", type=int, default=None)
    wa.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    wa.set_defaults(func=cmd_watch)

    sv = sub.add_parser("serve", help="a one-machine facility: Prefect server, work pool, "
                        "deployments and process workers, until Ctrl-C")
    sv.add_argument("--port", type=int, default=4200, help="port of the Prefect server it "
                    "starts (none is started when PREFECT_API_URL is set)")
    sv.add_argument("--home", default=None, help="PREFECT_HOME of that server (default "
                    "~/.sipflow/prefect): its database and sipflow-serve.log")
    sv.add_argument("--pool", default="sipflow", help="work pool name")
    sv.add_argument("--workers", type=int, default=1, help="process workers to keep running")
    sv.add_argument("--concurrency", type=int, default=None, help="scans of the pool at once")
    sv.add_argument("--gpu-slots", type=int, default=1, help="heavy stages per GPU at once")
    sv.add_argument("--cpu-slots", type=int, default=None, help="heavy stages on the CPU "
                    "at once (default: no limit)")
    sv.add_argument("--no-warm", action="store_true", help="start Python for each flow "
                    "run (default: fork it off a process that has imported Prefect, "
                    "sipflow and torch once, seconds less per scan)")
    sv.set_defaults(func=cmd_serve)

    e = sub.add_parser("evaluate", help="figures of merit of a result store")
    e.add_argument("result")
    e.add_argument("--truth", default=None, help="simulated HDF5 file holding the truth")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    bl = sub.add_parser("beamlines", help="list the beamline presets (diffractometer circles, "
                        "pixel directions, file keys)")
    bl.add_argument("name", nargs="?", default=None, help="show one preset in full")
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=cmd_beamlines)

    pl = sub.add_parser("plugins", help="list installed plugins")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    st = sub.add_parser("stages", help="list stages with their parameters")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stages)

    v = sub.add_parser("validate", help="validate a pipeline without reading data")
    v.add_argument("pipeline")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("demo", help="simulate a scan, run the default pipeline, show results")
    d.add_argument("--out", default="demo-output")
    d.add_argument("--engine", choices=["prefect", "local"], default="prefect",
                   help=ENGINE_HELP)
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    x = sub.add_parser("export", help="a 3-D result on its lab grid (bragg.orthogonalize) as a "
                       "VTK image (.vti: ParaView, VisIt, PyVista), coordinates in nm")
    x.add_argument("result")
    x.add_argument("-o", "--output", required=True, help="the .vti file to write")
    x.add_argument("--vars", nargs="+", default=None, metavar="VAR",
                   help="variables to write (default: every one on the grid of obj; obj "
                   "gives amplitude and phase)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing file")
    x.set_defaults(func=cmd_export)

    w = sub.add_parser("view", help="open result stores and scans in napari (sipflow[napari])")
    w.add_argument("paths", nargs="+", metavar="RESULT_OR_SCAN")
    w.set_defaults(func=cmd_view)
    return p


def _input_options(p: argparse.ArgumentParser) -> None:
    """Reader options of SPEC scans and beamline presets (``run``; a pipeline's ``input:``
    block takes the same keys for ``batch`` and ``watch``)."""
    p.add_argument("--scan", type=int, default=None, help="SPEC scan number (#S N)")
    p.add_argument("--frames", default=None, metavar="DIR", help="folder of a SPEC scan's "
                   "frames (default: the folder *_S<NNNN> below the SPEC file's)")
    p.add_argument("--beamline", default=None, help="beamline preset of the input "
                   "(sipflow beamlines lists them)")

