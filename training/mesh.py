"""The device mesh (``data`` x ``fsdp``, as in MaxText) and batch placement on it."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from training.config import ModelConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp")
#: the batch dimension is split over both mesh axes (MaxText's layout)
BATCH_AXES = ("data", "fsdp")


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=-1,fsdp=1"`` -> ``{"data": -1, "fsdp": 1}`` (missing axes are 1)."""
    sizes = {"data": 1, "fsdp": 1}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in sizes:
            raise ValueError(f"bad mesh {spec!r}: expected e.g. data=-1,fsdp=1")
        try:
            sizes[name] = int(raw)
        except ValueError:
            raise ValueError(f"bad mesh {spec!r}: {raw!r} is not an integer") from None
        if sizes[name] == 0 or sizes[name] < -1:
            raise ValueError(f"bad mesh {spec!r}: sizes are positive or -1")
    if list(sizes.values()).count(-1) > 1:
        raise ValueError(f"bad mesh {spec!r}: at most one axis may be -1")
    return sizes


# -- mesh and shardings -----------------------------------------------------------------


def make_mesh(spec: str, devices: list[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all, across every process)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = parse_mesh(spec)
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if -1 in sizes.values():
        if len(devices) % fixed:
            raise ValueError(f"mesh {spec!r} does not divide {len(devices)} devices")
        sizes = {k: (len(devices) // fixed if v == -1 else v) for k, v in sizes.items()}
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(
            f"mesh {spec!r} needs {math.prod(sizes.values())} devices, {len(devices)} present"
        )
    shape = (sizes["data"], sizes["fsdp"])
    # Auto axes: XLA propagates shardings from the parameters and the batch (GSPMD style).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def _to_global(value: Any, like: jax.ShapeDtypeStruct) -> jax.Array:
    """A host value (the same on every process) laid out as ``like`` says."""
    host = np.asarray(value, like.dtype)
    return jax.make_array_from_callback(like.shape, like.sharding, lambda index: host[index])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES, None))


def put_batch(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global batch (the same on every process) -> a sharded ``jax.Array``.

    Each process passes only the rows its devices hold; on one process that is all of them.
    """
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    index = sharding.addressable_devices_indices_map(array.shape)
    starts = [sl[0].indices(array.shape[0]) for sl in index.values()]
    lo, hi = min(s[0] for s in starts), max(s[1] for s in starts)
    return jax.make_array_from_process_local_data(sharding, array[lo:hi], array.shape)


def check_shardable(cfg: ModelConfig, mesh: Mesh, batch_size: int, grad_accum: int) -> None:
    """Readable errors for shapes the mesh cannot split evenly."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = batch_size // grad_accum
    if micro % shards:
        raise ValueError(
            f"micro-batch {micro} (batch_size {batch_size} / grad_accum {grad_accum}) must be "
            f"a multiple of the {shards} devices in mesh data={mesh.shape['data']},"
            f"fsdp={mesh.shape['fsdp']}"
        )
    fsdp = mesh.shape["fsdp"]
    dims = {"hidden_dim": cfg.hidden_dim, "vocab_size": cfg.vocab_size}
    bad = [f"{k}={v}" for k, v in dims.items() if v % fsdp]
    if bad:
        raise ValueError(f"fsdp={fsdp} must divide {', '.join(bad)}")
