"""The plugin manager: built-ins and third-party plugins through the same hooks.

Built-in plugins are the modules in :data:`DEFAULT_PLUGINS`. Third-party ones
are found through the ``sipflow`` entry-point group. A plugin that fails to
import or to register is recorded in :attr:`Registry.failures` (name and
error) and skipped; it never breaks the rest.

Environment
-----------
SIPFLOW_LOAD_PLUGINS
    Comma-separated allow-list of entry-point names to load (empty string: none).
SIPFLOW_DISABLE_PLUGINS
    Comma-separated entry-point names never to load.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from ._version import __version__
from .contracts import BeamlinePreset, Constraint, Stage, check_group, set_default_registry_provider
from .errors import InputError, PipelineError, PluginError, unknown_choice

if TYPE_CHECKING:  # pragma: no cover
    from .contracts import Reader

ENTRY_POINT_GROUP = "sipflow"

DEFAULT_PLUGINS = (
    "sipflow.io._builtin",
    "sipflow.preprocess._standard",
    "sipflow.reconstruct._stage",
    "sipflow.analyse._stage",
    "sipflow.refine._stage",
    "sipflow.bragg._ortho_stage",
    "sipflow.bragg._stage",
    "sipflow.dip._stage",
    "sipflow.learned._stage",
    "sipflow.symmetry._stage",
    "sipflow.refine._constraints",
    "sipflow.beamlines._presets",
    "sipflow.templates",
)


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``sipflow plugins`` shows it."""

    name: str
    origin: str  # "builtin" or "entry point <dist>"
    version: str
    stages: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    beamlines: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Registry:
    """Everything the plugins provide, resolved once."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    stages: dict[str, type[Stage]]
    readers: list[Reader]
    templates: dict[str, Path]
    #: plugin name of each reader, by ``id(reader)``
    reader_owners: dict[int, str] = field(default_factory=dict)
    #: constraints of ``refine.constrained``, by name
    constraints: dict[str, type[Constraint]] = field(default_factory=dict)
    #: symmetry groups by name (the built-in ones come through the hook too)
    groups: dict[str, Any] = field(default_factory=dict)
    #: beamline presets by name (the built-in ones come through the hook too)
    beamlines: dict[str, BeamlinePreset] = field(default_factory=dict)

    def beamline(self, name: str) -> BeamlinePreset:
        """The beamline preset registered as `name`; an error listing the presets otherwise."""
        try:
            return self.beamlines[name]
        except KeyError:
            raise InputError(unknown_choice("beamline preset", name, self.beamlines)) from None

    def reader_plugin(self, reader: Reader) -> str:
        """Name of the plugin that registered `reader`."""
        return self.reader_owners.get(id(reader), "?")

    def reader_options(self) -> set[str]:
        """Every option some reader declares (``options``), plus ``reader`` itself."""
        out = {"reader"}
        for r in self.readers:
            out.update(getattr(r, "options", ()) or ())
        return out

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def stage(self, name: str) -> type[Stage]:
        """The stage class registered as `name`; a clear error listing near names otherwise."""
        try:
            return self.stages[name]
        except KeyError:
            raise PipelineError(unknown_choice("stage", name, self.stages)) from None

    def constraint(self, name: str) -> type[Constraint]:
        """The constraint registered as `name`; a clear error listing near names otherwise."""
        try:
            return self.constraints[name]
        except KeyError:
            raise PipelineError(unknown_choice("constraint", name, self.constraints)) from None


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _hook_results(pm: pluggy.PluginManager, hook: str, plugin_name: str) -> list[Any]:
    """Results of `hook` from one plugin only (so that results can be attributed).

    Called through pluggy (a subset hook caller), so hook wrappers, tracing and
    arguments added to a hook later all apply.
    """
    plugin = pm.get_plugin(plugin_name)
    others = [p for p in pm.get_plugins() if p is not plugin]
    caller = pm.subset_hook_caller(hook, remove_plugins=others)
    return list(caller())


def _collect(pm: pluggy.PluginManager, info: PluginInfo,
             stages: dict[str, type[Stage]], owners: dict[str, str],
             readers: list[Reader], templates: dict[str, Path],
             reader_owners: dict[int, str], constraints: dict[str, type[Constraint]],
             groups: dict[str, Any]) -> None:
    """Call this plugin's hooks and merge what it returns; raise on a bad result."""
    for result in _hook_results(pm, "sipflow_stages", info.name):
        for cls in result or ():
            if not (isinstance(cls, type) and issubclass(cls, Stage)) or not cls.name:
                raise PluginError(f"plugin {info.name!r} returned {cls!r} from sipflow_stages; "
                                  "expected subclasses of sipflow.Stage with a name")
            if cls.name in stages:
                raise PluginError(f"stage {cls.name!r} is provided by both {owners[cls.name]!r} "
                                  f"and {info.name!r}")
            stages[cls.name] = cls
            owners[cls.name] = info.name
            info.stages.append(cls.name)
    for result in _hook_results(pm, "sipflow_readers", info.name):
        for reader in result or ():
            for attr in ("name", "can_read", "read"):
                if not hasattr(reader, attr):
                    raise PluginError(f"plugin {info.name!r} returned a reader without {attr!r}")
            readers.append(reader)
            info.readers.append(reader.name)
            reader_owners[id(reader)] = info.name
    for result in _hook_results(pm, "sipflow_pipeline_templates", info.name):
        for name, path in (result or {}).items():
            if name in templates:
                raise PluginError(f"pipeline template {name!r} is provided twice "
                                  f"(second time by {info.name!r})")
            templates[name] = Path(path)
            info.templates.append(name)
    for result in _hook_results(pm, "sipflow_constraints", info.name):
        for cls in result or ():
            if not (isinstance(cls, type) and issubclass(cls, Constraint)) or not cls.name:
                raise PluginError(f"plugin {info.name!r} returned {cls!r} from "
                                  "sipflow_constraints; expected subclasses of "
                                  "sipflow.refine.Constraint with a name")
            if cls.name in constraints:
                raise PluginError(f"constraint {cls.name!r} is provided twice (second time by "
                                  f"{info.name!r})")
            constraints[cls.name] = cls
            info.constraints.append(cls.name)
    for result in _hook_results(pm, "sipflow_symmetry_groups", info.name):
        for group in result or ():
            group = check_group(group, info.name)
            _claim("symmetry group", group.name, group, groups, owners, info)
            info.groups.append(group.name)


def _claim(kind: str, name: str, item: Any, table: dict[str, Any], owners: dict[str, str],
           info: PluginInfo) -> None:
    """Put `item` in `table` under `name`; a name another plugin took is refused, naming
    both plugins (and saying when the first is sipflow's own)."""
    key = f"{kind} {name}"
    if name in table:
        first = owners[key]
        builtin = " (built in)" if first.startswith("sipflow.") else ""
        raise PluginError(f"{kind} {name!r} is provided by both {first!r}{builtin} and "
                          f"{info.name!r}; choose another name")
    table[name] = item
    owners[key] = info.name


def _collect_beamlines(pm: pluggy.PluginManager, info: PluginInfo, owners: dict[str, str],
                       beamlines: dict[str, BeamlinePreset]) -> None:
    """Merge this plugin's beamline presets; a non-preset or a name taken twice is refused."""
    for result in _hook_results(pm, "sipflow_beamlines", info.name):
        for preset in result or ():
            if not isinstance(preset, BeamlinePreset):
                raise PluginError(f"plugin {info.name!r} returned {preset!r} from "
                                  "sipflow_beamlines; expected sipflow.contracts."
                                  "BeamlinePreset objects")
            _claim("beamline preset", preset.name, preset, beamlines, owners, info)
            info.beamlines.append(preset.name)


def build_registry(load_entry_points: bool = True, extra: tuple[object, ...] = ()) -> Registry:
    """Create a plugin manager, load built-ins, entry points and `extra` plugin objects.

    Parameters
    ----------
    load_entry_points : bool
        Discover third-party plugins in the ``sipflow`` entry-point group.
    extra : tuple of objects
        Plugin modules or objects registered after the others (used by tests).
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    plugins: list[PluginInfo] = []
    stages: dict[str, type[Stage]] = {}
    owners: dict[str, str] = {}
    readers: list[Reader] = []
    templates: dict[str, Path] = {}
    reader_owners: dict[int, str] = {}
    constraints: dict[str, type[Constraint]] = {}
    groups: dict[str, Any] = {}
    beamlines: dict[str, BeamlinePreset] = {}

    candidates: list[tuple[PluginInfo, Any]] = []
    for modname in DEFAULT_PLUGINS:
        candidates.append((PluginInfo(modname, "builtin", __version__),
                           lambda m=modname: importlib.import_module(m)))
    if load_entry_points:
        allow = _env_list("SIPFLOW_LOAD_PLUGINS")
        deny = _env_list("SIPFLOW_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen or (allow is not None and ep.name not in allow) or ep.name in deny:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            origin = f"entry point of {dist.name}" if dist else "entry point"
            version = dist.version if dist else "?"
            candidates.append((PluginInfo(ep.name, origin, version), ep.load))
    for obj in extra:
        name = getattr(obj, "__name__", type(obj).__name__)
        candidates.append((PluginInfo(name, "registered in code", "?"), lambda o=obj: o))

    for info, load in candidates:
        plugins.append(info)
        try:
            plugin = load()
            pm.register(plugin, name=info.name)
            try:
                pm.check_pending()  # a misspelled hook name fails this plugin, not the others
            except Exception:
                pm.unregister(plugin)
                raise
            snapshot = (dict(stages), dict(owners), list(readers), dict(templates),
                        dict(constraints), dict(groups), dict(beamlines))
            try:
                _collect(pm, info, stages, owners, readers, templates, reader_owners,
                         constraints, groups)
                _collect_beamlines(pm, info, owners, beamlines)
            except Exception:
                stages, owners, readers, templates, constraints, groups, beamlines = snapshot
                pm.unregister(plugin)
                info.stages, info.readers, info.templates, info.constraints = [], [], [], []
                info.groups, info.beamlines = [], []
                raise
        except Exception as exc:  # a broken plugin is reported, never fatal
            info.error = f"{type(exc).__name__}: {exc}"
            if info.origin == "builtin":
                raise
    return Registry(pm, plugins, stages, readers, templates, reader_owners, constraints, groups,
                    beamlines)


@cache
def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    return build_registry(load_entry_points=True)


set_default_registry_provider(get_registry)
