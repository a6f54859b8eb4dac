"""Connecting to Ray: a local in-process Ray by default, a cluster with `auto` or an address.

Ray 2.60 clusters started with `ray start` use token authentication; clients need
RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token), which we set when joining a cluster.
"""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process. `address`: None (or RAY_ADDRESS) as documented above."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=address, log_to_driver=True)
    else:
        # "local" explicitly: a bare ray.init() would join any cluster `ray start` left on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
