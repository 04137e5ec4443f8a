"""Pipelines: an ordered list of stages read from YAML, validated before any data is read.

.. code-block:: yaml

    name: my-pipeline
    description: what it is for
    input:            # options for sipflow.load (optional)
      dataset: /entry/data/data
    stages:
      - use: prep.standard
        with: {threshold: 2}
      - use: phase.classic
        with: {runs: 8}

A pipeline is given as a :class:`Pipeline`, a path to such a file, YAML text, a
dict, or the name of a template (``default``, ``cdi``, ``bcdi``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .contracts import Stage, StageParams
from .errors import PipelineError
from .plugins import Registry, get_registry, unknown_choice

_TOP_KEYS = {"name", "description", "input", "stages"}
_STEP_KEYS = {"use", "with"}


@dataclass(frozen=True)
class Step:
    """One validated step: the stage class and its parameters."""

    stage: type[Stage]
    params: StageParams

    def spec(self) -> dict[str, Any]:
        """JSON-compatible description (name, version, parameters) for provenance."""
        return {"use": self.stage.name, "version": self.stage.version,
                "with": self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline."""

    name: str
    steps: tuple[Step, ...]
    text: str
    description: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    origin: str = "<memory>"
    #: the plugins it was validated against (None: the process-wide registry); stages
    #: of a run get it in their Context
    registry: Registry | None = field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, source: Pipeline | str | Path | dict, registry: Registry | None = None
             ) -> Pipeline:
        """Read and validate a pipeline from a template name, a file, YAML text or a dict."""
        if isinstance(source, Pipeline):
            return source
        explicit = registry
        registry = registry or get_registry()
        origin = "<memory>"
        if isinstance(source, dict):
            return cls.from_dict(source, yaml.safe_dump(source, sort_keys=False), origin,
                                 registry, explicit)
        text: str
        if isinstance(source, Path) or (isinstance(source, str) and _names_a_file(source)):
            path = Path(source)
            if not path.is_file():
                raise PipelineError(f"{path}: pipeline file not found")
            size = path.stat().st_size
            if size > MAX_PIPELINE_BYTES:
                raise PipelineError(f"{path}: a pipeline file of {size / 1024:.0f} KiB; a "
                                    f"pipeline is at most {MAX_PIPELINE_BYTES // 1024} KiB "
                                    "of YAML (is this the right file?)")
            text, origin = path.read_text(), str(path.resolve())
        elif isinstance(source, str) and "\n" not in source and ":" not in source:
            if source not in registry.templates:
                raise PipelineError(unknown_choice("pipeline template", source,
                                                   registry.templates)
                                    + " (or give a path to a YAML file)")
            path = registry.templates[source]
            text, origin = path.read_text(), f"template {source} ({path})"
        else:
            text = str(source)
        if len(text.encode()) > MAX_PIPELINE_BYTES:
            raise PipelineError(f"{origin}: {len(text.encode()) / 1024:.0f} KiB of pipeline "
                                f"text; a pipeline is at most {MAX_PIPELINE_BYTES // 1024} KiB")
        try:
            data = yaml.safe_load(text)
        except RecursionError:
            raise PipelineError(f"{origin}: the YAML nests too deeply to be a pipeline") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise PipelineError(f"{origin}: invalid YAML{where}: "
                                f"{getattr(exc, 'problem', exc)}") from None
        return cls.from_dict(data, text, origin, registry, explicit)

    @classmethod
    def from_dict(cls, data: Any, text: str, origin: str, registry: Registry,
                  explicit: Registry | None = None) -> Pipeline:
        """Validate a parsed pipeline `data` (its YAML `text`, read from `origin`).

        `explicit` is kept as :attr:`registry` (None when the process-wide one was used).
        """
        if not isinstance(data, dict):
            raise PipelineError(f"{origin}: a pipeline is a mapping with a 'stages' list, got "
                                f"{type(data).__name__}")
        extra = set(data) - _TOP_KEYS
        if extra:
            raise PipelineError(f"{origin}: unknown top-level key(s) {sorted(extra)}; "
                                f"valid: {sorted(_TOP_KEYS)}")
        raw_steps = data.get("stages")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise PipelineError(f"{origin}: 'stages' must be a non-empty list of "
                                "{use: STAGE, with: {...}} entries")
        steps = []
        for i, raw in enumerate(raw_steps, start=1):
            if isinstance(raw, str):
                raw = {"use": raw}
            if not isinstance(raw, dict) or "use" not in raw:
                raise PipelineError(f"{origin}: stage {i} must be a mapping with 'use', got "
                                    f"{raw!r}")
            bad = set(raw) - _STEP_KEYS
            if bad:
                raise PipelineError(f"{origin}: stage {i} ({raw['use']}) has unknown key(s) "
                                    f"{sorted(bad)}; valid: 'use', 'with'")
            try:
                stage = registry.stage(str(raw["use"]))
            except PipelineError as exc:
                raise PipelineError(f"{origin}: stage {i}: {exc}") from None
            steps.append(Step(stage, validate_params(stage, raw.get("with") or {},
                                                     f"{origin}: stage {i} ({stage.name})",
                                                     registry)))
        inp = data.get("input") or {}
        if not isinstance(inp, dict):
            raise PipelineError(f"{origin}: 'input' must be a mapping of reader options")
        known = registry.reader_options()
        unknown = [str(k) for k in inp if k not in known]
        if unknown:
            raise PipelineError(f"{origin}: input: " + "; ".join(
                unknown_choice("reader option", k, known) for k in unknown))
        return cls(name=str(data.get("name", "pipeline")), steps=tuple(steps), text=text,
                   description=str(data.get("description", "")).strip(), input=dict(inp),
                   origin=origin, registry=explicit)

    def spec(self) -> list[dict[str, Any]]:
        return [s.spec() for s in self.steps]

    def with_time_limit(self, seconds: float) -> Pipeline:
        """This pipeline with ``max_seconds: seconds`` set on every stage that takes a time
        budget (``phase.classic``: no new run set once it is spent).

        Raises
        ------
        PipelineError
            When no stage takes one, or `seconds` is not positive.
        """
        if not seconds > 0:
            raise PipelineError(f"a time limit must be a positive number of seconds, got "
                                f"{seconds!r}")
        budgeted = [s.stage.name for s in self.steps
                    if "max_seconds" in s.stage.Params.model_fields]
        if not budgeted:
            raise PipelineError(f"{self.origin}: no stage of pipeline {self.name!r} takes a "
                                f"time budget (max_seconds); its stages: "
                                f"{', '.join(s.stage.name for s in self.steps)}")
        data = yaml.safe_load(self.text)
        for i, raw in enumerate(data["stages"]):
            step = {"use": raw} if isinstance(raw, str) else raw
            if step["use"] in budgeted:
                step["with"] = {**(step.get("with") or {}), "max_seconds": float(seconds)}
                data["stages"][i] = step
        text = yaml.safe_dump(data, sort_keys=False)
        return Pipeline.from_dict(data, text, self.origin, self.registry or get_registry(),
                                  self.registry)


#: the largest pipeline text accepted: far above any real one (a few KiB), below
#: Prefect's limit on a flow run's parameters (512 KiB), and bounded for ``validate``
MAX_PIPELINE_BYTES = 256 * 1024


def _names_a_file(source: str) -> bool:
    """Whether the text `source` is a pipeline file's path: an existing file (its name may
    hold a newline), or a one-line name ending in .yaml/.yml."""
    try:
        if Path(source).is_file():
            return True
    except (OSError, ValueError):  # YAML text too long for a file name, or holding NUL
        return False
    return "\n" not in source and source.endswith((".yaml", ".yml"))


def validate_params(stage: type[Stage], values: Any, where: str, registry: Registry | None = None
                    ) -> StageParams:
    """Validate `values` against ``stage.Params`` with messages that name the parameter.

    Parameters
    ----------
    stage : Stage subclass
    values : dict
        The step's ``with:`` mapping.
    where : str
        Prefix of the messages (file, stage number and name).
    registry : Registry, optional
        Given to validators as pydantic's validation context (``info.context["registry"]``),
        so that names of constraints and groups are checked against the plugins of this
        pipeline; default: the process-wide registry.
    """
    if not isinstance(values, dict):
        raise PipelineError(f"{where}: 'with' must be a mapping of parameters, got {values!r}")
    fields = stage.Params.model_fields
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise PipelineError(f"{where}: " + "; ".join(
            unknown_choice("parameter", k, fields) for k in unknown))
    try:
        return stage.Params.model_validate(values, context={"registry": registry})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(parameters)"
            got = f" (got {err['input']!r})" if "input" in err and loc != "(parameters)" else ""
            problems.append(f"{loc}: {err['msg']}{got}")
        raise PipelineError(f"{where}: invalid parameter(s): " + "; ".join(problems)) from None
