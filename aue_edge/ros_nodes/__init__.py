"""ROS 2 nodes: camera images in, /emotion, /action_units, /faces and /diagnostics out.

The last stage of the flow (edge pipeline -> ros_nodes -> robot). Glue only: messages become
numpy arrays at the edge (:mod:`.conversions`), :class:`aue_edge.edge.pipeline.Pipeline` does
the work, and results become ``aue_msgs`` messages (:mod:`.messages`). Nodes:
:mod:`.perception_node`, :mod:`.image_source`, :mod:`.emotion_listener`; :mod:`.demo` runs
the three together. Needs rclpy and the built ``aue_msgs`` package (docs/ros2.md).
"""
