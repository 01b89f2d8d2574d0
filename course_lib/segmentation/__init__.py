"""Lecture 07: semantic segmentation, a label for every pixel.

A CNN classifier slid over an image is a fully convolutional network in disguise; its coarse score
maps are brought back to full resolution by upsampling, and skip connections from earlier stages
restore the detail the encoder threw away.

``fcn``: the fully connected layer as a convolution, sliding-window scores, cost counting.
``upsampling``: the transposed convolution's size and its bilinear initialisation.
``metrics``: confusion matrix, IoU per class, mean IoU, boundary bands.
``models``: a patch classifier, FCN-32s/8s-style networks on a MobileNetV2 encoder, a U-Net.
"""
from .fcn import *  # noqa: F401,F403
from .fcn import __all__ as _fcn_all
from .metrics import *  # noqa: F401,F403
from .metrics import __all__ as _metrics_all
from .models import *  # noqa: F401,F403
from .models import __all__ as _models_all
from .upsampling import *  # noqa: F401,F403
from .upsampling import __all__ as _upsampling_all

__all__ = _fcn_all + _upsampling_all + _metrics_all + _models_all
