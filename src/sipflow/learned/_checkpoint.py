"""Trained models ready to reconstruct (checkpoints read by :func:`._format.load_checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ._format import load_checkpoint
from ._model import LearnedInverse, features, object_scale, to_complex
from ._train import TrainConfig, check_data


@dataclass
class LearnedModel:
    """A trained far-field network ready to reconstruct.

    Attributes
    ----------
    path : Path
    config : TrainConfig
        How it was trained.
    net : LearnedInverse
    epoch : int
        Epochs it was trained for.
    history : dict of lists
    sipflow_version : str
        The version that wrote it.
    """

    path: Path
    config: TrainConfig
    net: LearnedInverse
    epoch: int
    history: dict[str, list[float]]
    sipflow_version: str

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> LearnedModel:
        """Load a checkpoint written by :func:`~sipflow.learned.train` (``weights_only``)."""
        ckpt = load_checkpoint(path)
        try:
            config = TrainConfig.model_validate(ckpt["config"])
        except ValueError as exc:
            raise DataError(f"{path}: the model's training configuration is not valid for this "
                            f"sipflow ({exc}); retrain it") from exc
        net = LearnedInverse(config.width, config.depth, config.skip_channels)
        try:
            net.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise DataError(f"{path}: the weights do not match the network its configuration "
                            f"describes ({str(exc).splitlines()[0]}); the file is damaged or "
                            "was edited, retrain it") from exc
        net.to(device).eval()
        return cls(Path(path), config, net, int(ckpt["epoch"]),
                   {k: list(v) for k, v in ckpt["history"].items()},
                   str(ckpt.get("sipflow_version", "?")))

    def reconstruct(self, counts: np.ndarray, mask: np.ndarray | None = None,
                    source: str = "the input") -> np.ndarray:
        """The object of a centred 2-D pattern, ``(H, W)`` complex64 [sqrt(photons)].

        Raises
        ------
        DataError
            The pattern's shape is not the one the model was trained on.
        """
        check_data(self.config, np.shape(counts), source, str(self.path))
        device = next(self.net.parameters()).device
        with torch.no_grad():
            out = self.net(features(counts, mask)[None].to(device))
        x = to_complex(out)[0].cpu().numpy()
        return (x * object_scale(counts, mask)).astype(np.complex64)
