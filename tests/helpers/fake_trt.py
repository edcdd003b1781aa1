"""``ClockedFakeApi``: a test double of ``trt_api.TrtApi`` whose calls advance a fake clock by
fixed amounts (TensorRT and CUDA are never called): it checks OUR control flow and statistics."""
from __future__ import annotations

from collections import Counter

import numpy as np

from aue_edge.edge.backends.trt_api import DeviceInfo, IoTensor

# Fake durations in seconds (chosen so every phase is distinct).
H2D_S, ENQUEUE_S, GPU_S, D2H_S, GRAPH_LAUNCH_S = 0.0002, 0.00005, 0.001, 0.0001, 0.00001


class ClockedFakeApi:
    """Test double of TrtApi: records calls, moves a fake clock; no TensorRT involved."""

    version = "10.3.0"

    def __init__(self, max_batch: int = 8) -> None:
        self.now = 0.0
        self.calls: Counter = Counter()
        self.live_device: set[int] = set()
        self.pending_s = 0.0  # GPU work enqueued, finished at the next synchronize
        self.max_batch = max_batch
        self.closed = False

    def clock(self) -> float:
        return self.now

    def device_info(self) -> DeviceInfo:
        return DeviceInfo("Orin", "8.7", 30000)

    def deserialize(self, data: bytes, origin: str, dla_core=None):
        self.dla_core = dla_core
        return "engine"

    def io_tensors(self, engine):
        f32 = np.dtype(np.float32)
        return [IoTensor("image", 0, True, f32, (-1, 3, 112, 112),
                         ((1, 3, 112, 112), (4, 3, 112, 112), (self.max_batch, 3, 112, 112))),
                IoTensor("emotion_probs", 1, False, f32, (-1, 8))]

    def create_context(self, engine):
        return {}

    def set_input_shape(self, context, tensor, shape):
        context["batch"] = shape[0]
        self.calls["set_input_shape"] += 1

    def tensor_shape(self, context, tensor):
        return (context["batch"], 8)

    def malloc_host(self, count, dtype):
        return np.zeros(count, dtype)

    def free_host(self, array):
        self.calls["free_host"] += 1

    def malloc_device(self, nbytes):
        ptr = 0x1000 + len(self.live_device) * 0x100000
        self.live_device.add(ptr)
        return ptr

    def free_device(self, ptr):
        self.live_device.remove(ptr)

    def create_stream(self):
        return "stream"

    def destroy_stream(self, stream):
        self.calls["destroy_stream"] += 1

    def htod_async(self, ptr, host, stream):
        self.calls["htod"] += 1
        self.pending_s += H2D_S

    def dtoh_async(self, host, ptr, stream):
        self.calls["dtoh"] += 1
        self.pending_s += D2H_S

    def execute(self, context, tensors, addresses, stream):
        self.calls["execute"] += 1
        self.now += ENQUEUE_S
        self.pending_s += GPU_S

    def synchronize(self, stream):
        self.now += self.pending_s
        self.pending_s = 0.0

    def capture_graph(self, context, tensors, addresses, stream):
        self.calls["capture_graph"] += 1
        return "graph"

    def launch_graph(self, graph, stream):
        self.calls["launch_graph"] += 1
        self.now += GRAPH_LAUNCH_S
        self.pending_s += GPU_S

    def destroy_graph(self, graph):
        self.calls["destroy_graph"] += 1

    def close(self):
        self.closed = True
