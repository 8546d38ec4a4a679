"""Scale-out with JAX's own tools: a ("data", "fsdp") device mesh and named shardings.

* Batches are split along their batch axis over every device of the mesh ("data" and
  "fsdp" together): FSDP is data parallelism whose parameters happen to be sharded.
* Parameters (and the optimizer moments, which have the same shapes) are either replicated, or
  FSDP-sharded: each array's largest dimension divisible by the "fsdp" axis size is split
  over "fsdp"; arrays with no such dimension (and scalars) stay replicated.
* Several hosts: `initialize_distributed` passes the coordinator address, process count and
  process id to `jax.distributed.initialize`; it is never called unless asked.

With one device everything here is the identity, so the same train step runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-host run when any option is given; returns whether it was initialised."""
    if coordinator_address is None and num_processes is None and process_id is None:
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def make_mesh(fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (n_devices // fsdp, fsdp) mesh with axes ("data", "fsdp") over `devices` (default
    all). The axes are in "auto" mode: shardings are given, XLA inserts the collectives."""
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp_devices must divide the {len(devices)} devices (got {fsdp})")
    shape = (len(devices) // fsdp, fsdp)
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def param_spec(shape: Sequence[int], fsdp_size: int) -> PartitionSpec:
    """Split the largest dimension divisible by `fsdp_size` over "fsdp" (the first such on
    ties); replicate when there is none or `fsdp_size` is 1."""
    if fsdp_size <= 1:
        return PartitionSpec()
    best = None
    for dim, size in enumerate(shape):
        if size % fsdp_size == 0 and (best is None or size > shape[best]):
            best = dim
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*(("fsdp" if dim == best else None) for dim in range(len(shape))))


def state_shardings(tree: Any, mesh: Mesh, shard_params: bool) -> Any:
    """A NamedSharding for every array leaf of `tree` (parameters, optimizer state; arrays or
    ShapeDtypeStructs). Decided by shape alone, so Adam's moments follow their parameters."""
    fsdp_size = mesh.shape["fsdp"] if shard_params else 1

    def sharding(leaf: Any) -> NamedSharding:
        return NamedSharding(mesh, param_spec(np.shape(leaf), fsdp_size))

    return jax.tree.map(sharding, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """(A, B, T) step batches: the micro-batch axis A stays whole, B is split over all
    devices."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES, None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_divisor(mesh: Mesh) -> int:
    """The per-micro-batch size must be a multiple of this (the devices sharing a batch)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def put_global(tree: Any, shardings: Any) -> Any:
    """Host values that every process holds in full -> global arrays laid out as `shardings`
    (one sharding for every leaf, or a matching tree of them).

    Each process hands over only the shards its own devices need, so this is correct on one
    host and on many (data order is a pure function of the step; initial parameters are a
    pure function of the seed; both are identical on every host).
    """
    if isinstance(shardings, NamedSharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def put(value: Any, sharding: NamedSharding) -> jax.Array:
        array = np.asarray(value)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return jax.tree.map(put, tree, shardings)
