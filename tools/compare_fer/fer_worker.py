"""The `fer` side of the comparison: runs in its own venv (.venv-fer), never in the product's.

``compare.py`` (project .venv) starts this script with ``.venv-fer/bin/python`` and talks to it
over stdin/stdout, one JSON object per line each way. Arrays travel as .npy/.npz files in a
folder the harness owns. Nothing here imports aue_edge: the product and `fer` never share an
interpreter.

``--threads 1``: OpenCV (fer's Haar detector) and the TFLite interpreter (fer's default
classifier) use one thread, TensorFlow (the Keras classifier) one intra-op and one inter-op
thread. ``--threads default``: what fer does when a user calls it (no setting touched).

Requests (``op``):

- ``info``: versions, fer's label order, thread settings.
- ``classify`` ``variant crops out``: fer's classifier only (``tflite``: fer's default,
  ``FER()``; ``keras``: ``FER(use_tflite=False)``) on 8-bit grey face crops (N, H, W); each
  crop is prepared exactly as ``FER.detect_emotions`` prepares a detected face (resize to the
  model's 64x64, x/255, (x - 0.5) * 2) and ``FER._classify_emotions`` runs; the (N, 7)
  probabilities are saved to ``out``.
- ``time_classifier`` ``variant crops``: the same, one crop per call; seconds per call.
- ``time_frames`` ``frames key repeats [paced_fps]``: ``FER().detect_emotions(frame)`` (Haar
  detection + classification, fer's defaults) on each BGR frame of array ``key`` of the .npz
  ``frames``, ``repeats`` times, back to back or, with ``paced_fps``, each frame handed over at
  its time (frame i of the ``repeats`` passes at i / paced_fps after the first began, as
  ``compare.py`` does for our side); seconds (wall clock and this process's CPU time, all
  threads) and faces found per call; before them one wake-up call on the first frame, untimed
  there, its seconds returned apart (``compare.py``, "Speed": the first call after the process
  sat idle is not a per-frame cost).
- ``quit``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

VARIANTS = ("tflite", "keras")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", choices=("1", "default"), required=True)
    return parser.parse_args(argv)


class FerSide:
    def __init__(self, threads: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import cv2
        import numpy as np
        import tensorflow as tf

        self.cv2, self.np, self.tf = cv2, np, tf
        self.threads = threads
        if threads == "1":
            # Before TensorFlow's runtime starts (the first op), or the setting is refused.
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            cv2.setNumThreads(1)
        import fer
        from fer.fer import FER

        self.fer_module, self.FER = fer, FER
        self.detectors = {}
        self._arrays = {}

    def detector(self, variant: str):
        """One FER object per classifier variant (Haar detector, fer's default settings)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown fer variant {variant!r}; expected one of {VARIANTS}")
        if variant not in self.detectors:
            if variant == "tflite" and self.threads == "1":
                # FER() takes no thread count; its class-level interpreter cache
                # (FER._tflite_interpreter_cache, which FER() reuses) is filled with the same
                # shipped model file, opened with one thread.
                path = os.path.join(os.path.dirname(self.fer_module.__file__), "data",
                                    "emotion_model_quantized.tflite")
                interpreter = self.tf.lite.Interpreter(model_path=path, num_threads=1)
                interpreter.allocate_tensors()
                self.FER._tflite_interpreter_cache = interpreter
            self.detectors[variant] = self.FER(use_tflite=(variant == "tflite"))
        return self.detectors[variant]

    def array(self, path: str, key: str | None = None):
        if path not in self._arrays:
            loaded = self.np.load(path)
            self._arrays[path] = ({k: loaded[k] for k in loaded.files} if path.endswith(".npz")
                                  else loaded)
        found = self._arrays[path]
        return found[key] if key is not None else found

    def prepared(self, crops):
        """detect_emotions' steps for each detected face, on whole crops."""
        np, cv2 = self.np, self.cv2
        size = (64, 64)  # FER's __emotion_target_size for both shipped models
        faces = np.array([cv2.resize(c, size) for c in crops], dtype="float32")
        return (faces / 255.0 - 0.5) * 2.0

    def classify(self, variant: str, crops):
        return self.np.asarray(self.detector(variant)._classify_emotions(self.prepared(crops)),
                               dtype=self.np.float32)

    # ------------------------------------------------------------------ requests
    def op_info(self, request):
        import cv2
        import numpy as np

        return {"fer": self.fer_module.__version__, "tensorflow": self.tf.__version__,
                "opencv": cv2.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0],
                "labels": [self.FER._get_labels()[i] for i in range(7)],
                "threads": self.threads, "opencv_threads": cv2.getNumThreads()}

    def op_classify(self, request):
        crops = self.array(request["crops"])
        out = []
        for start in range(0, len(crops), 256):
            out.append(self.classify(request["variant"], crops[start:start + 256]))
        probs = self.np.concatenate(out) if out else self.np.zeros((0, 7), self.np.float32)
        self.np.save(request["out"], probs)
        return {"n": int(len(probs))}

    def op_time_classifier(self, request):
        crops = self.array(request["crops"])
        seconds = []
        for crop in crops:
            start = time.perf_counter()
            self.classify(request["variant"], crop[None])
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def op_time_frames(self, request):
        frames = self.array(request["frames"], request["key"])
        fer = self.detector("tflite")
        start = time.perf_counter()
        fer.detect_emotions(frames[0])
        wake_seconds = [time.perf_counter() - start]
        paced_fps = request.get("paced_fps")
        sequence = [frame for _ in range(int(request["repeats"])) for frame in frames]
        seconds, cpu_seconds, faces = [], [], []
        begin = time.perf_counter()
        for index, frame in enumerate(sequence):
            if paced_fps:
                time.sleep(max(0.0, begin + index / paced_fps - time.perf_counter()))
            start, cpu_start = time.perf_counter(), time.process_time()
            found = fer.detect_emotions(frame)
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
            faces.append(len(found))
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "faces": faces,
                "wake_seconds": wake_seconds}


def main(argv=None) -> int:
    args = _parse_args(argv)
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    side = FerSide(args.threads)
    protocol.write(json.dumps({"ok": True, "ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        handler = getattr(side, f"op_{request.get('op')}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {request.get('op')!r}")
            reply = {"ok": True, **handler(request)}
        except Exception as exc:  # reported to the harness, which stops with this text
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
