"""Training of the end-to-end far-field network on simulated pairs, with symmetry breaking.

One folder per model: ``model.pt`` (the last completed epoch: weights, optimiser,
the full configuration, the sipflow version and the loss history; replaced
atomically, so a crash never leaves a half-written checkpoint) and
``history.csv`` (one row per epoch). Training the same configuration into the
same folder resumes from the last epoch; a different configuration there is
refused unless ``overwrite``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._system import atomic_write
from ..errors import DataError, OutputError, PipelineError, ResourceError
from ..physics import FarField
from ..priors import seeded
from ..simulate import SHAPES, make_object
from ..symmetry import get_group
from ._format import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, weights_digest
from ._model import LearnedInverse, features, from_complex, object_scale, to_complex

#: the training configuration fields that may change when a training resumes
RESUMABLE = ("epochs",)

log = logging.getLogger("sipflow")


class TrainConfig(BaseModel):
    """Everything that defines a trained model (stored in its checkpoint).

    Objects are drawn by :func:`sipflow.simulate.make_object`, moved by a random
    element of the group (the orbit a real reconstruction may land anywhere on),
    and measured with Poisson noise; the target is that object, or its canonical
    representative when ``symmetry_break`` is on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    shape: tuple[int, int] = Field((32, 32), description="Pattern / object shape [pixels].")
    kinds: tuple[str, ...] = Field(("blob", "cells"), description="Object shapes of "
                                   "sipflow.simulate, in turn (centro-symmetric ones, e.g. "
                                   "ellipse, have no canonical twin: near-ties).")
    extent: tuple[float, float] = Field((0.3, 0.45), description="Object size range "
                                        "[fraction of the array], drawn per sample.")
    phase_amplitude: float = Field(1.0, ge=0, description="Peak of the objects' phase [rad].")
    photons: float | None = Field(1e7, gt=0, description="Total photons per pattern (None: "
                                  "noiseless).")
    samples: int = Field(4000, ge=16, description="Training pairs.")
    validation: int = Field(200, ge=8, description="Held-out pairs scored each epoch.")
    symmetry_break: bool = Field(True, description="Train on canonical representatives of "
                                 "the targets (see sipflow.symmetry).")
    group: str = Field("farfield", description="Ambiguity group of the targets.")
    epochs: int = Field(20, ge=1, description="Passes over the training pairs.")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, description="Adam learning rate (cosine-annealed).")
    width: int = Field(32, ge=1, le=512)
    depth: int = Field(4, ge=1, le=8)
    skip_channels: int = Field(4, ge=0, le=128)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        bad = [k for k in self.kinds if k not in SHAPES[2]]
        if bad:
            raise ValueError(f"unknown object kinds {bad}; 2-D kinds are {SHAPES[2]}")
        if not 0 < self.extent[0] <= self.extent[1] <= 0.5:
            raise ValueError(f"extent {self.extent} must satisfy 0 < low <= high <= 0.5 "
                             "(an object at most half the array keeps the data oversampled)")
        if min(self.shape) < 2 ** self.depth:
            raise ValueError(f"shape {self.shape} is smaller than 2**depth = {2**self.depth}")
        return self


@dataclass
class Pairs:
    """Simulated training pairs.

    Attributes
    ----------
    inputs : (n, 2, H, W) float32, network input (:func:`~sipflow.learned.features`)
    targets : (n, 2, H, W) float32, the training targets (canonical when broken)
    truth : (n, H, W) complex64, the simulated objects, normalised (RMS 1)
    ambiguous : int
        Targets whose canonical choice was a near-tie.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    truth: torch.Tensor
    ambiguous: int


def draw(config: TrainConfig, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample `index` of the stream `seed`: the object on a random point of its orbit and its
    measurement.

    Returns
    -------
    obj : (H, W) complex128
        Scaled so that ``|F obj|^2`` is the expected intensity [sqrt(photons)].
    counts : (H, W) float64
        Poisson counts (expected values when ``config.photons`` is None).
    """
    group = get_group(config.group)
    rng = np.random.default_rng([seed, index])
    kind = config.kinds[index % len(config.kinds)]
    extent = float(rng.uniform(*config.extent))
    obj = make_object(config.shape, kind, extent=extent, phase_amplitude=config.phase_amplitude,
                      rng=rng)
    obj = np.asarray(group.apply(obj, group.random_element(rng, obj)))
    counts, scale = FarField(2).simulate(obj, config.photons, rng)
    return obj * math.sqrt(scale), counts


def simulate_pairs(config: TrainConfig, n: int, seed: int) -> Pairs:
    """`n` pairs drawn from `config`'s distribution; the same `seed` gives the same pairs."""
    group = get_group(config.group)
    inputs, targets, truth = [], [], []
    ambiguous = 0
    for i in range(n):
        obj, counts = draw(config, seed, i)
        x = obj / object_scale(counts)  # the network's target scale
        inputs.append(features(counts))
        truth.append(torch.as_tensor(x, dtype=torch.complex64))
        if config.symmetry_break:
            c = group.canonical(x)
            ambiguous += int(c.ambiguous)
            x = np.asarray(c.x)
        targets.append(from_complex(torch.as_tensor(x)))
    return Pairs(torch.stack(inputs), torch.stack(targets), torch.stack(truth), ambiguous)


def _data_seeds(config: TrainConfig) -> tuple[int, int]:
    return config.seed * 2 + 1, config.seed * 2 + 2


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    path : Path
        The checkpoint.
    epochs : int
        Epochs completed in total.
    resumed_from : int
        Epochs that were already done when this call started.
    history : dict of lists
        ``epoch``, ``train_loss``, ``val_loss``, ``val_error`` (mean error modulo the
        group on the held-out pairs), ``seconds``.
    """

    path: Path
    epochs: int
    resumed_from: int
    history: dict[str, list[float]]

    @property
    def val_error(self) -> float:
        return self.history["val_error"][-1] if self.history["val_error"] else float("nan")


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}); the "
                          "previous checkpoint, if any, is unchanged") from exc


def _write_history(history: dict[str, list[float]], path: Path) -> None:
    keys = list(history)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(keys)
            for row in zip(*(history[k] for k in keys), strict=True):
                w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])

    atomic_write(path, write)


def checkpoint_dict(config: TrainConfig, net: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, epoch: int,
                    history: dict[str, list[float]]) -> dict[str, Any]:
    """The checkpoint's content: plain values and tensors only (``weights_only`` loads it)."""
    from .._version import __version__

    return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "sipflow_version": __version__, "config": config.model_dump(mode="json"),
            "model": net.state_dict(), "model_sha256": weights_digest(net.state_dict()),
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "epoch": epoch, "history": history}


#: bytes per pixel of one training pair held in memory: the network's input features,
#: its two-channel target and the complex truth, with room for their float32 copies
_PAIR_BYTES_PER_PIXEL = 40


def _check_training_memory(config: TrainConfig) -> None:
    """Refuse before any work a training set (or a batch's activations) that cannot fit."""
    from .._resources import memory_available

    pixels = math.prod(config.shape)
    pairs = (config.samples + config.validation) * pixels * _PAIR_BYTES_PER_PIXEL
    activations = config.batch_size * config.width * pixels * 4 * (config.depth + 2) * 3
    need, have = pairs + activations, memory_available()
    if need > have:
        raise ResourceError(
            f"training {config.samples + config.validation:,} pairs of "
            f"{config.shape[0]} x {config.shape[1]} pixels needs about {need / 2**30:.3g} GiB "
            f"of memory and this process can use {have / 2**30:.3g} GiB; use fewer --samples "
            "or a smaller --shape")


def train(config: TrainConfig, out_dir: str | Path, *, overwrite: bool = False,
          progress: Callable[[int, int, int, int, float], None] | None = None,
          device: str = "cpu") -> TrainResult:
    """Train (or resume training) a model into `out_dir`.

    Parameters
    ----------
    config : TrainConfig
    out_dir : path
        Folder of ``model.pt`` and ``history.csv`` (created).
    overwrite : bool
        Start again even when the folder holds a model of another configuration.
    progress : callable(epoch, epochs, step, steps, loss), optional
        Called after every optimiser step.
    device : str

    Returns
    -------
    TrainResult

    Raises
    ------
    PipelineError
        The folder holds a model trained with another configuration (and not
        `overwrite`).
    """

    _check_training_memory(config)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the model folder ({exc.strerror or exc})"
                          ) from exc
    path = out / "model.pt"
    with seeded(config.seed):
        net = LearnedInverse(config.width, config.depth, config.skip_channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_loss": [],
                                       "val_error": [], "seconds": []}
    start = 0
    if path.exists() and not overwrite:
        ckpt = load_checkpoint(path)
        stored = TrainConfig.model_validate(ckpt["config"])
        diff = {k: (getattr(stored, k), getattr(config, k)) for k in TrainConfig.model_fields
                if getattr(stored, k) != getattr(config, k) and k not in RESUMABLE}
        if diff:
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise PipelineError(f"{path} holds a model trained with other settings ({shown}). "
                                "Train into another folder, or pass --overwrite to replace it")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history = {k: list(v) for k, v in ckpt["history"].items()}
        start = int(ckpt["epoch"])
        log.info("%s: resuming after epoch %d of %d", path, start, config.epochs)
    if start >= config.epochs:
        return TrainResult(path, start, start, history)
    train_seed, val_seed = _data_seeds(config)
    data = simulate_pairs(config, config.samples, train_seed)
    val = simulate_pairs(config, config.validation, val_seed)
    if data.ambiguous:
        log.warning("%d of %d training targets had a near-tie canonical form (e.g. "
                    "centro-symmetric amplitude); they are kept, their choice is a guess",
                    data.ambiguous, config.samples)
    group = get_group(config.group)
    steps = math.ceil(config.samples / config.batch_size)
    total_steps = config.epochs * steps
    x_all, y_all = data.inputs.to(device), data.targets.to(device)
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(config.samples,
                               generator=torch.Generator().manual_seed(config.seed * 7919
                                                                       + epoch))
        total = 0.0
        for step in range(steps):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size].to(device)
            k = epoch * steps + step  # cosine annealing, a function of the step (resumable)
            for g in opt.param_groups:
                g["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * k / total_steps))
            loss = torch.mean((net(x_all[idx]) - y_all[idx]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()
            total += value * len(idx)
            if progress is not None:
                progress(epoch + 1, config.epochs, step + 1, steps, value)
        val_loss, val_error = evaluate(net, val, group, device)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(total / config.samples)
        history["val_loss"].append(val_loss)
        history["val_error"].append(val_error)
        history["seconds"].append(time.perf_counter() - t0)
        _atomic_save(checkpoint_dict(config, net, opt, epoch + 1, history), path)
        _write_history(history, out / "history.csv")
    return TrainResult(path, config.epochs, start, history)


def predict(net: torch.nn.Module, inputs: torch.Tensor, device: str = "cpu",
            batch: int = 64) -> torch.Tensor:
    """Complex normalised objects ``(n, H, W)`` for network inputs ``(n, 2, H, W)``."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch):
            out.append(to_complex(net(inputs[start:start + batch].to(device))).cpu())
    return torch.cat(out)


def evaluate(net: torch.nn.Module, pairs: Pairs, group: Any, device: str = "cpu"
             ) -> tuple[float, float]:
    """(mean squared error against the targets, mean error modulo the group against the truth)."""
    pred = predict(net, pairs.inputs, device)
    mse = float(torch.mean((from_complex(pred) - pairs.targets) ** 2))
    errors = [group.error(p.numpy(), t.numpy()) for p, t in zip(pred, pairs.truth, strict=True)]
    return mse, float(np.mean(errors))


def check_data(config: TrainConfig, shape: tuple[int, ...], source: str, model: str) -> None:
    """Refuse data a model was not trained for, naming both."""
    if tuple(shape) != tuple(config.shape):
        raise DataError(f"{source}: the intensity has shape {tuple(shape)}, but the model "
                        f"{model} was trained on {tuple(config.shape)} patterns; crop or bin the "
                        f"data to {tuple(config.shape)} in prep.standard, or train a model for "
                        "this shape (sipflow train --shape ...)")
