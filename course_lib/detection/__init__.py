"""Lecture 06: object detection, from sliding windows to Faster R-CNN.

``boxes``: IoU, the box regression parametrisation, NMS, RoI pooling, anchors. ``metrics``: matching,
precision-recall and (mean) average precision. ``proposals``: a small selective search.
``detectors``: the four detectors and one train / predict / evaluate loop for all of them.
"""
from .boxes import *  # noqa: F401,F403
from .boxes import __all__ as _boxes_all
from .detectors import *  # noqa: F401,F403
from .detectors import __all__ as _detectors_all
from .metrics import *  # noqa: F401,F403
from .metrics import __all__ as _metrics_all
from .proposals import *  # noqa: F401,F403
from .proposals import __all__ as _proposals_all

__all__ = _boxes_all + _metrics_all + _proposals_all + _detectors_all
