"""Publishing a model's weights by version: trainers publish, generators and critic scorers follow.

    store = start_weight_store()                               # once per run, in the driver
    publish_state(store, "actor", version, state_dict)        # a trainer (rank 0), after an update
    follower = Follower(store, "actor", version=0)            # in a generator built from the version-0 folder
    follower.sync(model, wanted_version)                      # loads that version if the model holds another

Why versions travel with every call instead of being pushed: a generator learns which weights to use from the
request it serves (``version``), so a generator restarted by Ray after a crash (built again from its first folder)
catches up on its next call, and two calls in flight can never run on weights the caller did not ask for.

On CPU (and on a single node) the weights travel through Ray's object store: :func:`publish_state` sends a CPU state
dict to the store actor, which puts it in the object store itself so that it *owns* the object (Ray 2.56 removed
``ray.put(..., _owner=...)``; an object owned by the trainer worker would be lost with that worker), and a follower
``ray.get``s it once per version (zero-copy for the tensors' buffers on the same node).
The store keeps the last ``keep`` versions of each name; asking for an older one is an error that says which are
left. On a GPU cluster the same interface maps onto a broadcast from trainer rank 0 to the followers over a
collective group (NCCL), skipping the host copy: see docs/architecture.md ("Weight publication").
"""

from __future__ import annotations

from typing import Any

WEIGHT_STORE_NAME = "coderl-weight-store"


class WeightStore:
    """The versions of each published model: ``{name: {version: [ObjectRef]}}`` (a Ray actor, no CPU reserved).

    References are kept inside one-element lists: Ray resolves a bare ``ObjectRef`` argument into its value, and the
    store must hold the reference, not a copy of the weights.
    """

    def __init__(self, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.versions: dict[str, dict[int, list]] = {}

    def publish(self, name: str, version: int, state: dict) -> None:
        """Keep ``state`` (a state dict the caller sent) as ``name`` at ``version``. The store puts it in the object
        store itself, so that it owns the object: a reference owned by the trainer worker would be lost with it."""
        import ray

        held = self.versions.setdefault(name, {})
        held[int(version)] = [ray.put(state)]
        for old in sorted(held)[:-self.keep]:
            del held[old]

    def get(self, name: str, version: int) -> list | None:
        """The reference of ``name`` at ``version``, or None when it was never published or is no longer kept."""
        return self.versions.get(name, {}).get(int(version))

    def held(self, name: str) -> list[int]:
        return sorted(self.versions.get(name, {}))

    def latest(self, name: str) -> int | None:
        held = self.versions.get(name)
        return max(held) if held else None


def start_weight_store(keep: int = 2):
    """The run's weight store actor (0 CPUs: it only holds references)."""
    import ray

    return ray.remote(WeightStore).options(num_cpus=0, max_restarts=0).remote(keep)


def cpu_state_dict(model) -> dict[str, Any]:
    """A detached CPU copy of ``model``'s parameters and buffers (through DDP / compile wrappers)."""
    from coderl_ray.models.batching import unwrap

    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def publish_state(store, name: str, version: int, state_dict: dict[str, Any]) -> None:
    """Send ``state_dict`` to the store as ``name`` at ``version`` (returns once it is held)."""
    import ray

    ray.get(store.publish.remote(name, int(version), state_dict))


class NotPublished(LookupError):
    """The weight store does not hold the version a follower was asked for."""


class Follower:
    """Keeps one model at the version its caller asks for, fetching published weights from the store."""

    def __init__(self, store, name: str, version: int):
        self.store, self.name, self.version = store, name, int(version)
        self.loads = 0  # how many published versions this follower has loaded

    def sync(self, model, version: int) -> bool:
        """Load ``version`` into ``model`` unless it holds it already; True if weights were loaded."""
        import ray

        from coderl_ray.models.batching import unwrap

        version = int(version)
        if version == self.version:
            return False
        box = ray.get(self.store.get.remote(self.name, version))
        if box is None:
            held = ray.get(self.store.held.remote(self.name))
            raise NotPublished(f"weights of {self.name!r} version {version} are not in the weight store (it holds "
                               f"versions {held or 'none'}); this model holds version {self.version}")
        state = ray.get(box[0])
        core = unwrap(model)
        # The follower's dtype stays its own (bf16 inference weights on GPU): load_state_dict copies into it.
        missing, unexpected = core.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"published weights of {self.name!r} v{version} do not fit this model: missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}")
        self.version = version
        self.loads += 1
        return True
