"""``aue-perception``: the ROS 2 node that turns camera images into /emotion, /action_units, /faces.

The ROS end of the flow (camera -> this node -> robot): a lifecycle node that subscribes to a
``sensor_msgs/Image`` (or ``CompressedImage``) topic, converts each message to a BGR array
(:mod:`aue_edge.ros_nodes.conversions`), runs :class:`aue_edge.edge.pipeline.Pipeline` on it
and publishes the result (:mod:`aue_edge.ros_nodes.messages`) with the camera image's header:

- ``/emotion`` (aue_msgs/Emotion) and ``/action_units`` (aue_msgs/ActionUnits): the primary face
  (largest, most central or highest scoring: parameter ``primary_face``); nothing is published
  on these when no face is in view;
- ``/faces`` (aue_msgs/FaceArray): every face, one message per processed frame (empty when the
  frame had no face, so a robot can tell "nobody there" from "no frames");
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): fps, per-stage latency, dropped and
  rejected frames, backend, precision, memory, once per ``diagnostics_period_s``;
- ``~/annotated`` (sensor_msgs/Image, bgr8), only with ``publish_annotated``: the frame with
  what ``aue run`` draws on it (:func:`aue_edge.edge.annotate.annotate`), at most
  ``annotated_max_hz`` images per second, for a look in rviz2 or Foxglove. It is drawn after
  the frame's results are published, and frames within the rate limit are skipped.

Lifecycle: ``configure`` validates the parameters and loads the models (seconds: done before a
robot needs the node), ``activate`` subscribes, ``deactivate`` unsubscribes (models stay
loaded), ``cleanup`` frees the models. With ``autostart`` (default) the node configures and
activates itself; with ``autostart:=false`` a lifecycle manager drives it through the standard
``~/change_state`` service. Input QoS is sensor-data style with a depth-1 keep-last queue: a
frame that arrives while the pipeline is busy replaces the waiting one (counted as dropped),
so the node always works on the newest frame and never builds a backlog.

Bad frames (unsupported encoding, step/size mismatch, empty) are logged (throttled), counted in
/diagnostics and skipped; the node keeps running.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence

from aue_msgs.msg import ActionUnits, Emotion, FaceArray
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from aue_edge.edge.annotate import annotate
from aue_edge.edge.backends.factory import BACKEND_KINDS
from aue_edge.core.errors import AueError, ConfigError, InferenceError, InputImageError
from aue_edge.edge.image_messages import compressed_to_bgr, image_to_bgr
from aue_edge.edge.pipeline import Pipeline, PipelineConfig, resolve_model_file
from aue_edge.edge.smoothing import SMOOTHING_METHODS
from aue_edge.ros_nodes.conversions import bgr_to_image, stamp_to_seconds
from aue_edge.ros_nodes.diagnostics import (PerceptionStats, diagnostics_msg, drop_reason,
                                            shm_segment_bytes)
from aue_edge.ros_nodes.messages import (PRIMARY_FACE_RULES, action_units_msg, emotion_msg,
                                         face_array_msg, select_primary_face)
from aue_edge.ros_nodes.params import (ParamSpec, declare_parameters, read_parameters,
                                       reject_invalid_updates)
from aue_edge.ros_nodes.entry import StopRequest
from aue_edge.ros_nodes.spin import non_ros_args, run_node

NODE_NAME = "aue_perception"
PRECISIONS = ("auto", "fp32", "fp16", "int8")
NODE_PARAMS = (
    ParamSpec("autostart", True, "configure and activate at start; false: wait for a "
              "lifecycle manager (~/change_state)", read_only=True),
    ParamSpec("image_topic", "/camera/image_raw", "sensor_msgs/Image input topic",
              topic=True),
    ParamSpec("input_transport", "raw", "raw: sensor_msgs/Image on image_topic; compressed: "
              "sensor_msgs/CompressedImage on image_topic + '/compressed'",
              choices=("raw", "compressed")),
    ParamSpec("input_reliability", "best_effort", "input QoS reliability (history is always "
              "keep-last depth 1: stale frames are dropped, never queued)",
              choices=("best_effort", "reliable")),
    ParamSpec("emotion_topic", "/emotion", "aue_msgs/Emotion of the primary face",
              topic=True),
    ParamSpec("action_units_topic", "/action_units", "aue_msgs/ActionUnits of the primary face",
              topic=True),
    ParamSpec("faces_topic", "/faces", "aue_msgs/FaceArray of every face, every frame",
              topic=True),
    ParamSpec("diagnostics_topic", "/diagnostics", "diagnostic_msgs/DiagnosticArray topic",
              topic=True),
    ParamSpec("output_queue_depth", 10, "depth of the reliable output queues", min_value=1,
              max_value=1000),
    ParamSpec("primary_face", "largest", "face published on /emotion and /action_units: "
              "largest (nearest to a single camera), center (closest to the image centre) or "
              "score (detector confidence)", choices=PRIMARY_FACE_RULES),
    ParamSpec("primary_face_sticky", True, "keep the current primary face while it is tracked "
              "(no flipping between people of similar size)"),
    ParamSpec("diagnostics_period_s", 1.0, "seconds between /diagnostics messages",
              min_value=0.05, max_value=60.0),
    ParamSpec("publish_annotated", False, "publish ~/annotated (sensor_msgs/Image bgr8): the "
              "frame with boxes, track ids, emotions and active AUs drawn as 'aue run' draws "
              "them, for rviz2 / Foxglove"),
    ParamSpec("annotated_max_hz", 5.0, "at most this many ~/annotated images per second; "
              "frames in between are not drawn (counted as skipped in /diagnostics)",
              min_value=0.01, max_value=1000.0),
    ParamSpec("pipeline_config", "", "edge pipeline YAML (config/pipeline.yaml layout); empty: "
              "the pipeline's defaults. The parameters below override single fields"),
    ParamSpec("precision", "auto", "which model file of model_dir runs: auto (the pipeline's "
              "rule: INT8 when present), fp32, fp16 (trt only) or int8; a missing file is an "
              "error, never a silent fallback", choices=PRECISIONS),
)
# Unset (no default): the value of pipeline_config (or the pipeline's default) stays.
PIPELINE_PARAMS = (
    ParamSpec("model_dir", str, "folder with model(.int8).onnx / .engine and card.json, or a "
              "shipped model's name (aue_crl, aue_student)"),
    ParamSpec("model_file", str, "model file in model_dir (wins over precision)"),
    ParamSpec("backend", str, "inference backend: ort (ONNX Runtime) or trt (TensorRT)",
              choices=BACKEND_KINDS),
    ParamSpec("num_threads", int, "ONNX Runtime intra-op threads", min_value=1, max_value=256),
    ParamSpec("score_threshold", float, "face detector score threshold", min_value=0.01,
              max_value=1.0),
    ParamSpec("nms_iou_threshold", float, "face detector NMS IoU", min_value=0.01,
              max_value=1.0),
    ParamSpec("detect_max_side_px", int, "frames are downscaled to this side for detection",
              min_value=32, max_value=8192),
    ParamSpec("max_faces", int, "at most this many faces per frame", min_value=1,
              max_value=1000),
    ParamSpec("detect_interval_frames", int, "whole-frame face detection at least every N "
              "frames (between: tracked faces only); new faces appear within N frames",
              min_value=1, max_value=1000),
    ParamSpec("infer_interval_frames", int, "the model runs on each tracked face every K "
              "frames, which keeps its last outputs in between", min_value=1, max_value=1000),
    ParamSpec("track_max_age_frames", int, "frames a lost face keeps its id", min_value=0),
    ParamSpec("smoothing", str, "temporal smoothing of probabilities per face",
              choices=SMOOTHING_METHODS),
    ParamSpec("ema_alpha", float, "ema smoothing: weight of the newest frame", min_value=0.01,
              max_value=1.0),
    ParamSpec("one_euro_min_cutoff_hz", float, "one_euro smoothing: cutoff when still",
              min_value=0.001),
    ParamSpec("one_euro_beta", float, "one_euro smoothing: speed coefficient", min_value=0.0),
    ParamSpec("au_model_dir", str, "exported AU detector whose AU outputs replace the model's"),
    ParamSpec("au_threshold", float, "AU active when probability >= this, for every AU "
              "(default: the card's per-AU thresholds)",
              min_value=0.01, max_value=0.99),
)
PARAMS = NODE_PARAMS + PIPELINE_PARAMS


def pipeline_config_from_params(params: dict) -> PipelineConfig:
    """The PipelineConfig the node runs: YAML file (if any), then the set parameters."""
    overrides = {spec.name: params[spec.name] for spec in PIPELINE_PARAMS
                 if params.get(spec.name) is not None}
    if params["pipeline_config"]:
        config = PipelineConfig.from_yaml(params["pipeline_config"], **overrides)
    else:
        config = PipelineConfig().replace(**overrides)
    precision = params["precision"]
    if precision != "auto" and "model_file" not in overrides:
        # The pipeline's own file rule; a precision whose file is missing is an error.
        model_file = resolve_model_file(config.model_dir, "auto", config.backend, precision)
        config = config.replace(model_file=model_file.name)
    return config


def input_qos(reliability: str) -> QoSProfile:
    """Sensor-data style input: keep-last depth 1, volatile; best effort unless told otherwise."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, durability=DurabilityPolicy.VOLATILE,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT))


class PerceptionNode(LifecycleNode):
    """Lifecycle node: configure loads the pipeline, activate subscribes to the camera."""

    def __init__(self, overrides: dict | None = None) -> None:
        # Set before anything can fail: rclpy destroys a half-built node, through _release().
        self.pipeline: Pipeline | None = None
        self._subscription = None
        self._output_publishers: list = []
        self._annotated_pub = None
        super().__init__(NODE_NAME, parameter_overrides=[
            Parameter(name, value=value) for name, value in (overrides or {}).items()])
        declare_parameters(self, PARAMS)
        reject_invalid_updates(self, PARAMS)
        # Validate now so a typo fails at start, not at the first transition.
        self.params = read_parameters(self, PARAMS)
        self.stats = PerceptionStats()
        self.last_error: AueError | None = None
        self.state_name = "unconfigured"
        self._primary_id: int | None = None
        self._hardware_id = socket.gethostname()
        # Frames larger than the shared-memory segment are mostly lost: the log says so.
        self._shm_segment = shm_segment_bytes()
        # Diagnostics are not lifecycle-managed: they report "unconfigured"/"inactive" too.
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, self.params["diagnostics_topic"], 10)
        self._diagnostics_timer = self.create_timer(self.params["diagnostics_period_s"],
                                                    self.publish_diagnostics)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """configure + activate (autostart); raises the configure error if there is one."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self.last_error or ConfigError("configure failed; see the log above")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ConfigError("activate failed; see the log above")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = read_parameters(self, PARAMS)
            config = pipeline_config_from_params(self.params)
            self.pipeline = Pipeline(config)
        except AueError as exc:
            self.last_error = exc
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        depth = self.params["output_queue_depth"]
        self._emotion_pub = self.create_lifecycle_publisher(
            Emotion, self.params["emotion_topic"], depth)
        self._action_units_pub = self.create_lifecycle_publisher(
            ActionUnits, self.params["action_units_topic"], depth)
        self._faces_pub = self.create_lifecycle_publisher(
            FaceArray, self.params["faces_topic"], depth)
        self._output_publishers = [self._emotion_pub, self._action_units_pub, self._faces_pub]
        if self.params["publish_annotated"]:
            # Keep-last 1: a viewer wants the newest image, never a queue of old ones.
            self._annotated_pub = self.create_lifecycle_publisher(Image, "~/annotated", 1)
            self._output_publishers.append(self._annotated_pub)
            self._next_annotated_s = 0.0
        card = self.pipeline.card
        self.get_logger().info(
            f"configured: model {card.model_name} ({card.precision}, "
            f"{self.pipeline.model.path.name}, backend {config.backend}), "
            f"{len(self.pipeline.emotion_labels)} emotions, {len(self.pipeline.au_names)} AUs")
        self.state_name = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        topic = self.params["image_topic"]
        qos = input_qos(self.params["input_reliability"])
        if self.params["input_transport"] == "compressed":
            topic = topic.rstrip("/") + "/compressed"
            self._subscription = self.create_subscription(
                CompressedImage, topic, self._on_compressed, qos)
        else:
            self._subscription = self.create_subscription(Image, topic, self._on_image, qos)
        self.get_logger().info(f"active: subscribed to {topic} "
                               f"({self.params['input_reliability']}, keep-last 1)")
        self.state_name = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.state_name = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.state_name = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.state_name = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _unsubscribe(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None

    def _release(self) -> None:
        self._unsubscribe()
        for publisher in self._output_publishers:
            self.destroy_lifecycle_publisher(publisher)
        self._output_publishers = []
        self._annotated_pub = None
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    # ------------------------------------------------------------------ per frame
    def _on_image(self, msg: Image, info: dict) -> None:
        self._handle(msg, info, image_to_bgr)

    def _on_compressed(self, msg: CompressedImage, info: dict) -> None:
        self._handle(msg, info, compressed_to_bgr)

    def _handle(self, msg, info: dict, decode) -> None:
        t_start = time.perf_counter()
        gid = info.get("publisher_gid") if info else None
        publisher_key = bytes(gid["data"]) if isinstance(gid, dict) and "data" in gid else None
        self.stats.on_received(publisher_key, info.get("publication_sequence_number")
                               if info else None, len(msg.data))
        if self.pipeline is None:
            return
        stamp_s = stamp_to_seconds(msg.header.stamp)
        try:
            frame = decode(msg)
            t_decoded = time.perf_counter()
            # Unstamped images (stamp 0) still need increasing times for the smoothing.
            result = self.pipeline.process(
                frame, stamp_s if stamp_s > 0 else self.get_clock().now().nanoseconds * 1e-9)
        except InputImageError as exc:
            self.stats.on_rejected(str(exc))
            self.get_logger().warning(f"skipped a frame on {self._subscription.topic_name}: "
                                      f"{exc}", throttle_duration_sec=2.0)
            return
        except InferenceError as exc:
            self.stats.on_failed(str(exc))
            self.get_logger().error(f"no result for a frame: {exc}", throttle_duration_sec=2.0)
            return
        primary = select_primary_face(result.faces, self.params["primary_face"], result.width,
                                      result.height, self._primary_id,
                                      self.params["primary_face_sticky"])
        self._primary_id = primary.track_id if primary is not None else None
        labels, au_names = self.pipeline.emotion_labels, self.pipeline.au_names
        thresholds = self.pipeline.au_thresholds
        if primary is not None and primary.emotion_probs is not None:
            self._emotion_pub.publish(emotion_msg(primary, msg.header, labels))
        if primary is not None and primary.au_probs is not None:
            self._action_units_pub.publish(
                action_units_msg(primary, msg.header, au_names, thresholds))
        self._faces_pub.publish(
            face_array_msg(result, msg.header, labels, au_names, thresholds, primary))
        t_end = time.perf_counter()
        timings = dict(result.timings_ms)
        timings["decode"] = (t_decoded - t_start) * 1e3
        timings["callback"] = (t_end - t_start) * 1e3
        if stamp_s > 0:
            # Camera stamp to publish on this node's clock: meaningful when the camera and this
            # node share a clock (same machine, or PTP/chrony-synchronised).
            timings["camera_to_publish"] = (self.get_clock().now().nanoseconds * 1e-9
                                            - stamp_s) * 1e3
        if self._annotated_pub is not None:
            # After the results are out: drawing never delays /emotion for this frame.
            timings.update(self._publish_annotated(frame, result, msg.header))
        self.stats.on_processed(time.monotonic(), len(result.faces), timings)

    def _publish_annotated(self, frame, result, header) -> dict:
        """Draw and publish ``~/annotated`` unless the rate limit skips this frame; returns
        the time it took as an ``annotate`` timing (none when skipped)."""
        now_s = time.monotonic()
        if now_s < self._next_annotated_s:
            self.stats.on_annotated(published=False)
            return {}
        self._next_annotated_s = now_s + 1.0 / self.params["annotated_max_hz"]
        drawn = annotate(frame, result, self.pipeline.au_names, self.pipeline.au_thresholds)
        self._annotated_pub.publish(bgr_to_image(drawn, header.stamp, header.frame_id))
        self.stats.on_annotated(published=True)
        return {"annotate": (time.monotonic() - now_s) * 1e3}

    # ------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self) -> None:
        period = self.stats.end_period()
        info = {"image_topic": self.params["image_topic"],
                "input_transport": self.params["input_transport"],
                "primary_face": self.params["primary_face"]}
        if period.dropped:
            info["drop_reason"] = drop_reason(self.stats.last_frame_bytes, self._shm_segment)
            self.get_logger().warning(
                f"dropped {period.dropped} frames on {self.params['image_topic']} in the last "
                f"{self.params['diagnostics_period_s']:g} s "
                f"({self.stats.fps(time.monotonic()):.1f} fps processed): "
                f"{info['drop_reason']}", throttle_duration_sec=10.0)
        if self.pipeline is not None:
            card = self.pipeline.card
            info.update(backend=self.pipeline.config.backend, precision=card.precision,
                        model=card.model_name, model_file=str(self.pipeline.model.path))
        if self.last_error is not None and self.pipeline is None:
            info["configure_error"] = str(self.last_error)
        self._diagnostics_pub.publish(diagnostics_msg(
            self.stats, period, self.get_clock().now().to_msg(), time.monotonic(),
            f"{self.get_name()}: face perception", self._hardware_id, self.state_name, info,
            self.params["image_topic"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue-perception",
        description="ROS 2 node: camera images in; /emotion, /action_units, /faces and "
                    "/diagnostics out.",
        epilog="Every parameter can be set with --ros-args -p NAME:=VALUE or --params-file "
               "config/perception.yaml; these flags are shortcuts and win over both.")
    parser.add_argument("--image-topic", help="input topic (default /camera/image_raw)")
    parser.add_argument("--model-dir", help="model folder (default: the shipped model)")
    parser.add_argument("--backend", choices=BACKEND_KINDS)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--pipeline-config", help="edge pipeline YAML")
    parser.add_argument("--primary-face", choices=PRIMARY_FACE_RULES)
    return parser


def main(argv: Sequence[str] | None = None, stop: StopRequest | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = vars(build_parser().parse_args(non_ros_args("aue-perception", argv)))
    overrides = {name: value for name, value in flags.items() if value is not None}

    def make_node() -> PerceptionNode:
        node = PerceptionNode(overrides)
        if node.params["autostart"]:
            node.start()
        return node

    return run_node("aue-perception", make_node, argv, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
