"""Lecture 07: semantic segmentation, a label for every pixel.

A CNN classifier slid over an image is a fully convolutional network in disguise; its coarse score
maps are brought back to full resolution by upsampling, and skip connections from earlier stages
restore the detail the encoder threw away.
"""
from .models import *  # noqa: F401,F403
from .models import __all__ as _models

__all__ = [*_models]
