"""The checkpoint format of trained models: its name, version and checked loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import DataError

#: written in every checkpoint; a file without it (or with another) is refused
CHECKPOINT_FORMAT = "sipflow.learned.farfield"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``torch.load(weights_only=True)`` and checked.

    Raises
    ------
    DataError
        Not a file, not a torch checkpoint, not a sipflow far-field model, or a
        format this version cannot read.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such model file; train one with 'sipflow train DIR' and name "
                        "DIR/model.pt")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt archive
        first = str(exc).splitlines()[0] if str(exc) else ""
        if "weights_only" in str(exc):  # not torch's advice to unpickle arbitrary code
            first = "it holds Python objects other than tensors and plain values"
        raise DataError(f"{p}: not a loadable model checkpoint ({type(exc).__name__}: "
                        f"{first}); expected a file written by 'sipflow train'") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(f"{p}: not a sipflow far-field model (format {found!r}, expected "
                        f"{CHECKPOINT_FORMAT!r}); expected a file written by 'sipflow train'")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise DataError(f"{p}: model format version {ckpt.get('format_version')!r}; this "
                        f"sipflow reads version {CHECKPOINT_VERSION} (written by sipflow "
                        f"{ckpt.get('sipflow_version', '?')}); retrain it with this version")
    for key in ("config", "model", "epoch", "history"):
        if key not in ckpt:
            raise DataError(f"{p}: model checkpoint lacks {key!r}; it is damaged, retrain it")
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(torch.is_tensor(t) for t in weights.values()):
        raise DataError(f"{p}: the checkpoint's weights are not a mapping of tensors; it is "
                        "damaged, retrain it")
    stored = ckpt.get("model_sha256")
    if stored is not None and stored != weights_digest(weights):
        raise DataError(f"{p}: the weights do not match the checksum written with them: the "
                        "file was damaged after 'sipflow train' wrote it; retrain it or "
                        "restore it from a copy")
    bad = [k for k, t in weights.items() if t.is_floating_point() and not
           torch.isfinite(t).all()]
    if bad:
        raise DataError(f"{p}: non-finite weights in {', '.join(bad[:5])}: the training "
                        "diverged or the file is damaged; retrain it (a smaller --lr)")
    return ckpt


def weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 of a state dict's names and tensor bytes (in name order), written with the
    weights so that a damaged checkpoint is refused."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
