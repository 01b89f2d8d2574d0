"""Lecture 09: faces. Verification instead of classification, embeddings, and the triplet loss.

*Identification* names a face among people known in advance (a classifier over them); *verification*
decides whether two faces show the same person, who may be someone nobody trained on. The answer to
verification is a distance between *embeddings*, compared with a threshold. DeepFace gets its embedding
from a classifier's penultimate layer, after aligning the faces; FaceNet trains it directly with a
triplet loss, where which triplets are used (random or the hardest ones in the batch) decides how fast
it learns. Embeddings also carry attributes along roughly constant directions, so vector arithmetic
("this person, smiling") works in them.
"""
from .align import *  # noqa: F401,F403
from .align import __all__ as _align
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses
from .models import *  # noqa: F401,F403
from .models import __all__ as _models
from .verification import *  # noqa: F401,F403
from .verification import __all__ as _verification

__all__ = [*_losses, *_verification, *_align, *_models]
