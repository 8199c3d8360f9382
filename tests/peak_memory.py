"""Peak bytes of live CPU tensors, measured by watching every tensor torch creates (a ``TorchDispatchMode``).

torch has no CPU counterpart of ``torch.cuda.max_memory_allocated``, and a process's RSS drowns a tiny model's
megabytes in the interpreter's and libraries'. This counts exactly what the caching allocator would be asked for on a
GPU: every storage an operator creates, from its creation until its last reference dies, plus the tensors that
existed before (``track``: parameters, optimizer state). torch's own ``MemTracker`` does the same but refuses a
module called more than once, which every decode loop does.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


class PeakMemory(TorchDispatchMode):
    """``with PeakMemory() as m: ...`` then ``m.peak`` (bytes); ``m.track(model, optimizer)`` first counts what
    already exists."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes = WeakIdKeyDictionary()

    def _add(self, t: torch.Tensor) -> None:
        if t.device.type != "cpu" or t.is_meta:
            return
        storage = t.untyped_storage()
        if storage in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[storage] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.live -= size

    def track(self, *objects) -> PeakMemory:
        for obj in objects:
            if isinstance(obj, torch.nn.Module):
                for t in list(obj.parameters()) + list(obj.buffers()):
                    self._add(t)
            elif isinstance(obj, torch.optim.Optimizer):
                for state in obj.state.values():
                    for v in state.values():
                        if torch.is_tensor(v):
                            self._add(v)
            elif torch.is_tensor(obj):
                self._add(obj)
        return self

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out
