"""Launch the aue perception node (and optionally the image source and the listener).

    ros2 launch aue_edge aue.launch.py
    ros2 launch aue_edge aue.launch.py source:=/path/clip.mp4 listener:=true

Needs a native ROS 2 install (launch and launch_ros are not on PyPI, so this file was not
executed in the project's pip-only environment). Without launch, the same set is three
commands; see docs/ros2.md.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, LaunchConfigurationNotEquals
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("aue_edge")
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(share, "config", "perception.yaml")),
        DeclareLaunchArgument("source", default_value="",
                              description="video/folder for the image source; empty: none "
                                          "(use your camera driver)"),
        DeclareLaunchArgument("listener", default_value="false"),
        # Shared-memory transport for whole images (see config/fastdds_shm.xml).
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_shm.xml")),
        Node(package="aue_edge", executable="perception_node", name="aue_perception",
             parameters=[params_file], output="screen"),
        Node(package="aue_edge", executable="image_source", name="aue_image_source",
             parameters=[{"source": LaunchConfiguration("source")}], output="screen",
             condition=LaunchConfigurationNotEquals("source", "")),
        Node(package="aue_edge", executable="emotion_listener", name="aue_emotion_listener",
             output="screen", condition=IfCondition(LaunchConfiguration("listener"))),
    ])
