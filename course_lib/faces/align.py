"""Alignment: move every face so that its eyes land on the same two pixels.

A verifier should compare people, not poses. DeepFace (Taigman et al., 2014) first *aligns* each face:
it finds landmarks (eyes, nose, mouth) and warps the face to a canonical pose, in 2-D and then with a
3-D model. The 2-D step is a *similarity transform* (rotation, uniform scale, translation: 4 numbers),
and two landmarks fix it exactly: the one that maps the detected eyes onto fixed target positions.
It undoes head tilt, distance to the camera and position in the frame; it cannot undo a turned head,
which changes the face's appearance, not just where it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validate import floating, pair, same_device, tensor_rank

__all__ = ["EYE_TARGETS", "eye_alignment", "align_faces"]

#: Default target eye positions (x, y) as fractions of the output's width and height: the image's left
#: eye, then its right eye (where the average synthetic face has them).
EYE_TARGETS = ((0.375, 0.42), (0.625, 0.42))


def _targets(left, right):
    for name, value in (("left", left), ("right", right)):
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
            raise ValueError(f"{name} must be an (x, y) pair of fractions of the output size, got {value!r}")
    if tuple(left) == tuple(right):
        raise ValueError(f"left and right must differ, got {left!r} twice")
    return left, right


def eye_alignment(eyes: torch.Tensor, input_size, output_size, left=EYE_TARGETS[0], right=EYE_TARGETS[1]) -> torch.Tensor:
    """The ``[N, 2, 3]`` ``theta`` for ``F.affine_grid`` (``align_corners=False``) that samples an input of
    ``input_size`` (h, w) so that the eyes ``eyes [N, 2, 2]`` ((x, y) pixels, left then right) appear at
    ``left`` and ``right`` (fractions of the output's width and height) in an output of ``output_size``.

    In pixel coordinates the similarity transform from output to input is, with points as complex numbers,
    ``z_in = a * z_out + b``: ``a = (eye_right - eye_left) / (target_right - target_left)`` (rotation and
    scale) and ``b = eye_left - a * target_left``. ``affine_grid`` works in coordinates normalised to
    [-1, 1] (``x_norm = 2 x / width - 1``), so the transform is conjugated by that change of units.
    """
    tensor_rank("eyes", eyes, 3)
    if eyes.shape[1:] != (2, 2):
        raise ValueError(f"eyes must be [N, 2, 2] ((x, y) of the left and right eye), got {tuple(eyes.shape)}")
    floating("eyes", eyes)
    (h_in, w_in), (h_out, w_out) = pair("input_size", input_size), pair("output_size", output_size)
    left, right = _targets(left, right)
    dtype = eyes.dtype if eyes.dtype == torch.float64 else torch.float32
    eye = torch.complex(eyes[..., 0].to(dtype), eyes[..., 1].to(dtype))  # [N, 2]
    target = torch.tensor([complex(left[0] * w_out, left[1] * h_out), complex(right[0] * w_out, right[1] * h_out)],
                          device=eyes.device, dtype=eye.dtype)
    a = (eye[:, 1] - eye[:, 0]) / (target[1] - target[0])
    b = eye[:, 0] - a * target[0]
    # z_in = a z_out + b as a real 2x2 matrix M and offset t, in pixels
    m = torch.stack([torch.stack([a.real, -a.imag], -1), torch.stack([a.imag, a.real], -1)], -2)  # [N, 2, 2]
    t = torch.stack([b.real, b.imag], -1)  # [N, 2]
    # pixels from normalised: p = (q + 1) * size / 2; normalised from pixels: q = 2 p / size - 1
    half_out = torch.tensor([w_out / 2, h_out / 2], device=eyes.device, dtype=dtype)
    half_in = torch.tensor([w_in / 2, h_in / 2], device=eyes.device, dtype=dtype)
    linear = m * half_out[None, None, :] / half_in[None, :, None]
    offset = ((m @ half_out) + t) / half_in - 1
    return torch.cat([linear, offset[..., None]], dim=2)


def align_faces(images: torch.Tensor, eyes: torch.Tensor, left=EYE_TARGETS[0], right=EYE_TARGETS[1], size=None) -> torch.Tensor:
    """Warp ``images [N, C, H, W]`` so that each one's eyes (``eyes [N, 2, 2]``, (x, y) pixels, the image's
    left eye first) land at ``left`` and ``right`` ((x, y) fractions of the output's width and height).

    One similarity transform per image (:func:`eye_alignment`), applied with ``F.affine_grid`` and
    bilinear ``F.grid_sample``; pixels from outside the input repeat its border. ``size``: output
    ``(h, w)`` or int (default: the input's). Returns ``[N, C, h, w]`` in ``images``' dtype.
    """
    tensor_rank("images", images, 4)
    floating("images", images)
    same_device(images=images, eyes=eyes)
    if eyes.dim() != 3 or len(eyes) != len(images):
        raise ValueError(f"eyes must be [N={len(images)}, 2, 2], one pair of eyes per image, got {tuple(eyes.shape)}")
    out_h, out_w = pair("size", size) if size is not None else images.shape[-2:]
    theta = eye_alignment(eyes, images.shape[-2:], (out_h, out_w), left, right).to(images.dtype)
    grid = F.affine_grid(theta, [len(images), images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
