"""Per-device slots: Prefect global concurrency limits that keep heavy stages apart.

Device slots
------------
A heavy stage (:attr:`sipflow.Stage.heavy`) holds one slot of a Prefect *global concurrency limit*
named after the device it runs on, on this host (:func:`device_limit_name`:
``sipflow-<host>-cuda<physical index>``, or ``sipflow-<host>-cpu``), for as long as it
runs. With a limit of 1 per card, two reconstructions never share a card, whatever
worker or flow run they come from; a device without a limit is not limited. The slot
is a lease that the running stage renews: when its worker is killed, the slot comes
back within :data:`LEASE_S` seconds plus the server's 15 s sweep.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator

from ..errors import OrchestrationError

#: seconds a device slot stays held after its holder died (the server's minimum lease)
LEASE_S = 60.0


def device_limit_name(device: str, host: str | None = None) -> str:
    """Name of the global concurrency limit that guards `device` on `host`.

    Parameters
    ----------
    device : str
        A resolved torch device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``cuda:N`` is
        mapped to the physical card through ``CUDA_VISIBLE_DEVICES``, so workers pinned
        to different cards use different limits and two pinned to the same card share
        one.
    host : str, optional
        Host name (default: this machine's).

    Returns
    -------
    str
        ``sipflow-<host>-cpu`` or ``sipflow-<host>-cuda<physical index>``.
    """
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", host or socket.gethostname())
    if not device.startswith("cuda"):
        return f"sipflow-{host}-{device.split(':')[0]}"
    index = int(device.split(":")[1]) if ":" in device else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    physical = visible[index] if index < len(visible) else str(index)
    return f"sipflow-{host}-cuda{physical}"


@contextlib.contextmanager
def device_slot(device: str) -> Iterator[str | None]:
    """Hold one slot of `device`'s limit while the block runs (none when it has no limit).

    Yields the limit's name, or None when no such limit exists on the server.
    """
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    name = device_limit_name(device)
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        yield None
        return
    # the lease is renewed while the stage runs; a killed holder's slot comes back
    # after at most LEASE_S (+ the server's 15 s sweep)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S):
        yield name


def set_device_limit(device: str, slots: int = 1, host: str | None = None) -> str:
    """Create (or update) the global concurrency limit of `device`; return its name.

    Parameters
    ----------
    device : str
        As for :func:`device_limit_name`.
    slots : int
        Heavy stages allowed on it at once (1: a card is never shared).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    if slots < 1:
        raise OrchestrationError(f"a device needs at least one slot, got {slots}")
    name = device_limit_name(device, host)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=int(slots)))
        else:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=int(slots)))
    return name
