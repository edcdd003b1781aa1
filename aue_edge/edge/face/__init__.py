"""Face front-end of the edge stage: detect (YuNet), align (5-point similarity), landmarks.

frame -> :class:`YuNetDetector` -> :class:`Detections` -> :func:`align_faces` (template
:data:`FERPLUS_TEMPLATE_5PT`) -> aligned crops -> :func:`aue_edge.edge.preprocess.to_model_input`.
"""
from aue_edge.edge.face.alignment import (align_faces, alignment_matrices, invert_affine,
                                          similarity_transform, transform_points, warp_faces)
from aue_edge.edge.face.landmarks import (CANONICAL_MEAN_SHAPE_68, DlibProvider,
                                          LandmarkProvider, MeanShapeProvider, MediapipeProvider,
                                          mean_shape_68)
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT, FERPLUS_TEMPLATE_SOURCE
from aue_edge.edge.face.yunet import Detections, YuNetDetector

__all__ = ["CANONICAL_MEAN_SHAPE_68", "Detections", "DlibProvider",
           "FERPLUS_TEMPLATE_5PT", "FERPLUS_TEMPLATE_SOURCE", "LandmarkProvider",
           "MeanShapeProvider", "MediapipeProvider", "YuNetDetector", "align_faces",
           "alignment_matrices", "invert_affine", "mean_shape_68", "similarity_transform",
           "transform_points", "warp_faces"]
