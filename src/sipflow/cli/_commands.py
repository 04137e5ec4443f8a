"""The commands of one scan or one result: simulate, train, run, evaluate, demo, export, view..."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from ..errors import PipelineError, SipflowError
from ._common import _json_default, _run, input_options


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..simulate import Simulation, write_scan

    photons = None if str(args.photons).lower() in ("none", "0", "inf") else float(args.photons)
    shape = tuple(args.shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise PipelineError(f"--shape must be 2 or 3 sizes of at least 8 pixels, got {shape}")
    kind = args.kind or ("blob" if len(shape) == 2 else "crystal")
    from ..simulate import SHAPES

    if kind not in SHAPES[len(shape)]:
        raise PipelineError(f"--kind {kind!r} is not a {len(shape)}-D shape; choose from "
                            f"{', '.join(SHAPES[len(shape)])}")
    sim = Simulation(shape=shape, kind=kind, extent=args.extent, photons=photons,
                     beamstop=args.beamstop, gaps=args.gaps, processed=args.processed,
                     beamstop_size=None if args.beamstop_size is None
                     else tuple(args.beamstop_size), masked_squares=args.masked_squares,
                     hot_pixels=args.hot_pixels,
                     dead_pixels=args.dead_pixels, centre_offset=tuple(args.centre_offset),
                     background=args.background, phase_amplitude=args.phase, seed=args.seed,
                     coherence_sigma=args.coherence_sigma, beam_centre=args.beam_centre)
    path = write_scan(args.output, sim, layout=args.layout, overwrite=args.overwrite)
    print(f"wrote {path} ({args.layout}, {shape}, {kind}, "
          f"{'noiseless' if photons is None else f'{photons:.3g} photons'}"
          f"{', processed' if args.processed else ''})")
    return 0


def _train_config(args: argparse.Namespace):
    """The training configuration: the --config file, then the options given."""
    import yaml
    from pydantic import ValidationError

    from ..learned import TrainConfig

    values: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config) as fh:
                values = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise PipelineError(f"{args.config}: not valid YAML ({exc})") from exc
        if not isinstance(values, dict):
            raise PipelineError(f"{args.config}: expected a mapping of training settings "
                                f"(e.g. 'epochs: 20'), got {type(values).__name__}")
    options = {"shape": args.shape, "kinds": args.kinds, "samples": args.samples,
               "validation": args.validation, "epochs": args.epochs,
               "symmetry_break": args.symmetry_break, "group": args.group, "width": args.width,
               "depth": args.depth, "batch_size": args.batch_size, "lr": args.lr,
               "seed": args.seed}
    if args.photons is not None:
        options["photons"] = (None if str(args.photons).lower() in ("none", "inf")
                              else float(args.photons))
    values.update({k: v for k, v in options.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                             for e in exc.errors())
        raise PipelineError(f"{args.config or 'training options'}: {problems}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .._resources import cpu_threads
    from ..contracts import Context
    from ..learned import train
    from ..report import print_table
    from ..symmetry import get_group

    config = _train_config(args)
    get_group(config.group)
    device = Context.resolve_device(args.device)
    columns = (TextColumn("[bold]train[/bold] epoch {task.fields[epoch]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar, (
            cpu_threads() if device == "cpu" else contextlib.nullcontext()):
        task = bar.add_task("train", total=None, epoch="-", loss=float("nan"))

        def show(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=epochs * steps, completed=(epoch - 1) * steps + step,
                       epoch=f"{epoch}/{epochs}", loss=loss)

        result = train(config, args.output, overwrite=args.overwrite, progress=show,
                       device=device)
    h = result.history
    rows = [("model", str(result.path)), ("epochs", f"{result.epochs} (resumed after "
                                                    f"{result.resumed_from})"
             if result.resumed_from else str(result.epochs)),
            ("symmetry breaking", f"{'on' if config.symmetry_break else 'off'} "
                                  f"({config.group})"),
            ("training pairs", str(config.samples))]
    if h["epoch"]:
        rows += [("train loss (last epoch)", f"{h['train_loss'][-1]:.4g}"),
                 ("validation loss", f"{h['val_loss'][-1]:.4g}"),
                 ("validation error modulo the group", f"{h['val_error'][-1]:.3f}"),
                 ("loss curves", str(result.path.parent / "history.csv"))]
    print_table(rows, "sipflow train")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    options = input_options(args)
    out = _run(args.pipeline, args.input, args.output, engine=args.engine, device=args.device,
               seed=args.seed, overwrite=args.overwrite, dtype=args.dtype, load_options=options,
               time_limit=args.time_limit)
    from ..io import open_result
    from ..report import print_table, summary_rows

    print_table(summary_rows(open_result(out)), f"sipflow result {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import schema
    from ..analyse import compute_metrics
    from ..io import open_result

    ds = open_result(args.result, load=True, verify=True)
    if schema.OBJ not in ds:
        raise SipflowError(f"{args.result}: has no reconstructed object 'obj' to evaluate")
    if args.truth:
        from ..io import load

        truth = load(args.truth, checksum=False)
        if schema.OBJ_TRUE not in truth:
            raise SipflowError(f"{args.truth}: holds no ground truth "
                               "(/entry_1/sample_1/sipflow_truth/obj)")
        obj_true = truth[schema.OBJ_TRUE].values
        window = ds.attrs.get("prep_window")
        if window and any(b > 1 for b in window["bin"]):
            raise SipflowError(f"{args.result}: the data were binned, so the truth in "
                               f"{args.truth} is on another grid and cannot be compared")
        if window:  # see the truth through the same q-space window as the data
            from ..preprocess import truth_on_grid

            obj_true = truth_on_grid(obj_true, window["centre"], window["shape"])
        if obj_true.shape != ds[schema.OBJ].shape:
            raise SipflowError(f"{args.truth}: truth has shape {obj_true.shape} "
                               f"but the result's obj is {ds[schema.OBJ].shape}")
        ds[schema.OBJ_TRUE] = (ds[schema.OBJ].dims, obj_true)
        if schema.SUPPORT_TRUE in truth and truth[schema.SUPPORT_TRUE].shape == obj_true.shape:
            ds[schema.SUPPORT_TRUE] = (ds[schema.OBJ].dims, truth[schema.SUPPORT_TRUE].values)
    metrics = compute_metrics(ds)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from ..report import print_table, summary_rows

        ds.attrs["metrics"] = metrics
        print_table(summary_rows(ds), f"evaluation of {args.result}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from ..plugins import get_registry

    reg = get_registry()
    rows = [{"name": p.name, "version": p.version, "origin": p.origin, "stages": p.stages,
             "readers": p.readers, "templates": p.templates, "constraints": p.constraints,
             "groups": p.groups, "beamlines": p.beamlines, "error": p.error}
            for p in reg.plugins]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sipflow plugins")
    for col in ("plugin", "version", "origin", "provides", "status"):
        table.add_column(col)
    for r in rows:
        provides = ", ".join(r["stages"] + [f"reader:{x}" for x in r["readers"]]
                             + [f"template:{x}" for x in r["templates"]]
                             + [f"constraint:{x}" for x in r["constraints"]]
                             + [f"group:{x}" for x in r["groups"]]
                             + [f"beamline:{x}" for x in r["beamlines"]])
        table.add_row(r["name"], r["version"], r["origin"], provides,
                      f"[red]failed: {r['error']}[/red]" if r["error"] else "ok")
    Console().print(table)
    return 0


def cmd_beamlines(args: argparse.Namespace) -> int:
    from ..plugins import get_registry
    from ..report import print_table

    reg = get_registry()
    presets = [reg.beamline(args.name)] if args.name else list(reg.beamlines.values())
    owner = {n: p.name for p in reg.plugins for n in p.beamlines}
    if args.json:
        print(json.dumps([p.model_dump() | {"plugin": owner.get(p.name)} for p in presets],
                         indent=2))
        return 0

    def circles(cs) -> str:
        return ", ".join(f"{c.name} {c.axis}" + (f" ({c.file_key})" if c.key else "")
                         + (f" {c.offset_deg:+g}°" if c.offset_deg else "") for c in cs)

    if args.name:
        p = presets[0]
        rows = [("description", p.description), ("plugin", owner.get(p.name, "?")),
                ("sample circles (outer first)", circles(p.sample_circles)),
                ("detector circles (outer first)", circles(p.detector_circles)),
                ("pixel directions (rows, cols)", ", ".join(p.pixel_directions)),
                ("rocking circles", ", ".join(p.rocking_circles)),
                ("energy", f"{p.energy.key} ({p.energy.unit})" if p.energy else "file"),
                ("distance", f"{p.distance.key} ({p.distance.unit})" if p.distance
                 else "file"),
                ("pixel size", f"{p.pixel_size_m[0] * 1e6:g} x {p.pixel_size_m[1] * 1e6:g} µm"
                 if p.pixel_size_m else "file"),
                ("layouts", ", ".join(p.layouts) or "any")]
        print_table(rows, f"beamline preset {p.name}")
        return 0
    print_table([(p.name, f"{p.description} ({owner.get(p.name, '?')})") for p in presets],
                "sipflow beamlines (frame: z along the beam, y up, x outboard)")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from ..plugins import get_registry

    reg = get_registry()
    out = []
    for name, cls in sorted(reg.stages.items()):
        schema_ = cls.Params.model_json_schema()
        params = []
        for pname, field in cls.Params.model_fields.items():
            params.append({"name": pname, "default": _json_default(field.default),
                           "type": schema_["properties"][pname].get("type")
                           or str(field.annotation), "doc": field.description or ""})
        out.append({"name": name, "version": cls.version, "summary": cls.summary(),
                    "doc": (cls.__doc__ or "").strip(), "requires": list(cls.requires),
                    "heavy": cls.heavy, "params": params})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for st in out:
        print(f"{st['name']} (v{st['version']}): {st['summary']}")
        for p in st["params"]:
            print(f"    {p['name']} = {p['default']!r}: {p['doc']}")
        print()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    pipe = Pipeline.load(args.pipeline)
    for i, step in enumerate(pipe.steps, start=1):  # the files the parameters name
        try:
            step.stage.check_params(step.params)
        except SipflowError as exc:
            raise type(exc)(f"{pipe.origin}: stage {i} ({step.stage.name}): {exc}") from None
    print(f"{pipe.origin}: valid pipeline {pipe.name!r} with "
          f"{len(pipe.steps)} stages: {', '.join(s.stage.name for s in pipe.steps)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..io import open_result
    from ..report import print_table, quicklook, summary_rows
    from ..simulate import Simulation, write_scan

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = out_dir / "demo_scan.h5"
    write_scan(scan, Simulation(shape=(128, 128), kind="blob", photons=1e9, beamstop=2,
                                seed=args.seed), overwrite=True)
    print(f"simulated {scan}: 128x128 pattern, 1e9 photons, beamstop radius 2 px")
    store = out_dir / "demo_result.zarr"
    out = _run("default", str(scan), str(store), engine=args.engine, device=args.device,
               seed=args.seed, overwrite=True, dtype="float32", load_options={})
    ds = open_result(out, load=True)
    print_table(summary_rows(ds), f"sipflow demo ({args.engine} engine): {out}")
    png = quicklook(ds, out_dir / "demo_quicklook.png", title="sipflow demo")
    print(f"quick-look: {png}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..io import export_vti, open_result

    ds = open_result(args.result, load=True, verify=True)
    ds.attrs["source"] = str(args.result)
    path = export_vti(ds, args.output, variables=args.vars, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from ..viewer._app import view

    view(args.paths)
    return 0
