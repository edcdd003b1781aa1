"""Inference backends behind one interface: :class:`Backend`."""
from aue_edge.edge.backends.base import Backend, TensorInfo

__all__ = ["Backend", "TensorInfo"]
