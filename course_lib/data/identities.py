"""Synthetic identities: cartoon faces of thousands of people, many images of each (lecture 09).

Each *identity* is a fixed set of face-shape parameters: the outline (width, length, how pointed the
chin is), the eyes (spacing, height, size), the brows (height, thickness, slant), the nose (length,
width), the mouth (height, width, lips, resting curve), the skin tone and the hair (colour, hairline,
volume, length, parting). Each *image* of an identity varies what a face verifier must ignore:

* nuisances: head turn (features slide sideways, the nose most), head tilt, scale, position, lighting
  (brightness, colour cast, light from one side), background and pixel noise;
* attributes: smiling or neutral, glasses or not (labelled, so lecture 09 can look for them in the
  embedding).

How the data is made, and why:

* Identity ``i`` is the same face whatever else is drawn: its parameters come from a generator seeded
  with ``(seed, i)`` alone. Identities ``0..999`` of seed 0 can train a network, identities
  ``1000..1199`` of the same seed are then people it has never seen.
* The views (nuisances and attributes) come from one CPU generator seeded with ``(seed, view_seed)``:
  the same call gives the same images on every device; another ``view_seed`` gives new images of the
  same people.
* Drawing is vectorised on the target device, as in :mod:`course_lib.data.shapes`: every part of the
  face is an inequality on the coordinates of the pixel centres, evaluated for every (image, row,
  column) at once. Edges are softened over one pixel (coverage falls linearly with the signed
  distance to the shape's border), so a sub-pixel shift of the head changes the image smoothly.
* The eyes' positions (the centres of the irises, in pixels, ``x`` to the right and ``y`` down, pixel
  ``(row, col)`` covering ``[col, col + 1) x [row, row + 1)``) are returned with every image: they
  are the landmarks for alignment (:func:`course_lib.faces.align_faces`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ..validate import nonneg_int, positive_int

__all__ = ["FaceImages", "IDENTITY_PARAMETERS", "identity_parameters", "random_views", "frontal_views", "render_faces", "face_images"]

# Each identity parameter: (name, low, high, day-to-day change). An identity draws it uniformly in
# [low, high]; each image then moves it by up to +-change x (high - low) (a haircut, a tan, an
# expression, the way a 2-D outline changes with pose), clamped to the range. Face units are the
# half-size of the image at scale 1 (the image spans -1..1), v pointing down.
_RANGES = (
    ("face_width", 0.50, 0.66, 0.08),
    ("face_length", 0.64, 0.82, 0.08),
    ("chin", 0.0, 0.45, 0.08),  # how much the jaw narrows towards the chin
    ("eye_spacing", 0.19, 0.31, 0.08),  # half the distance between the eyes
    ("eye_height", -0.24, -0.08, 0.08),
    ("eye_size", 0.065, 0.11, 0.15),
    ("brow_gap", 0.10, 0.19, 0.3),
    ("brow_thickness", 0.025, 0.06, 0.15),
    ("brow_slant", -0.35, 0.35, 0.3),
    ("nose_length", 0.12, 0.30, 0.08),
    ("nose_width", 0.05, 0.12, 0.08),
    ("mouth_height", 0.28, 0.46, 0.1),
    ("mouth_width", 0.12, 0.23, 0.15),
    ("lips", 0.025, 0.055, 0.15),
    ("mouth_curve", -0.04, 0.03, 0.3),  # resting curve of the neutral mouth (corners up when > 0)
    ("skin_tone", 0.0, 1.0, 0.2),  # light to dark
    ("skin_red", -0.05, 0.05, 0.3),
    ("skin_yellow", -0.05, 0.05, 0.3),
    ("hair_colour", 0.0, 5.0, 0.06),  # black, brown, blond, red, grey (fractional part: the mix with the next)
    ("hair_shade", 0.7, 1.15, 0.3),
    ("hairline", -0.62, -0.30, 0.3),  # kept above the brows
    ("hair_volume", 0.02, 0.20, 0.3),
    ("hair_length", -0.3, 0.9, 0.3),  # where side hair ends (v); below -0.1 the sides are short
    ("parting", -0.35, 0.35, 0.3),  # the hairline's tilt
    ("iris_colour", 0.0, 1.0, 0.1),  # dark brown to blue-grey
)
#: Names of the identity parameters, in the order they are drawn.
IDENTITY_PARAMETERS = tuple(name for name, *_ in _RANGES)

_HAIR_COLOURS = torch.tensor([[0.10, 0.08, 0.07], [0.38, 0.23, 0.12], [0.85, 0.70, 0.42], [0.62, 0.26, 0.10],
                              [0.62, 0.62, 0.64], [0.10, 0.08, 0.07]])
_SKIN_LIGHT, _SKIN_DARK = torch.tensor([0.96, 0.80, 0.68]), torch.tensor([0.42, 0.28, 0.19])
_DEPTH = {"eyes": 0.30, "brows": 0.30, "nose": 0.55, "mouth": 0.35}  # how far a feature slides when the head turns
_EDGE = 1.0  # pixels over which an edge fades
# Images rendered at once. On a CPU small chunks keep every intermediate in cache (and out of the
# allocator's slow path for large blocks): 32 images draw about 3x faster per image than 256.
_CHUNK = {"cpu": 32}
_CHUNK_DEFAULT = 4096


@dataclass
class FaceImages:
    """A batch of synthetic faces and their labels, all on one device.

    ``images`` ``[N, 3, H, W]`` float32 in [0, 1]; ``identity`` ``[N]`` int64; ``smiling`` and
    ``glasses`` ``[N]`` bool; ``eyes`` ``[N, 2, 2]`` float32, the (x, y) pixel positions of the eye on
    the image's left, then the one on its right.
    """

    images: torch.Tensor
    identity: torch.Tensor
    smiling: torch.Tensor
    glasses: torch.Tensor
    eyes: torch.Tensor

    def __len__(self) -> int:
        return len(self.identity)

    def __getitem__(self, index) -> "FaceImages":
        """The images picked by ``index`` (an int, slice, index or mask tensor), labels alongside."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        if isinstance(index, torch.Tensor):
            index = index.to(self.identity.device)
        return FaceImages(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device) -> "FaceImages":
        return FaceImages(*(getattr(self, f.name).to(device) for f in fields(self)))


def _identity_list(identities) -> torch.Tensor:
    if isinstance(identities, int) and not isinstance(identities, bool):
        return torch.arange(positive_int("identities", identities))
    if isinstance(identities, range):
        identities = list(identities)
    try:
        ids = torch.as_tensor(identities) if not isinstance(identities, torch.Tensor) else identities.cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"identities must be a positive int or a 1-D list of identity numbers, got {identities!r}") from None
    if ids.dim() != 1 or ids.numel() == 0 or ids.is_floating_point() or ids.dtype == torch.bool or bool((ids < 0).any()):
        raise ValueError(f"identities must be a positive int or a non-empty 1-D list of identity numbers >= 0, got {identities!r}")
    return ids.long()


def _mix(seed: int, a: int, b: int) -> int:
    """One 63-bit generator seed from three numbers (a splitmix-style hash, so nearby inputs differ)."""
    x = (seed * 0x9E3779B97F4A7C15 + a * 0xBF58476D1CE4E5B9 + b * 0x94D049BB133111EB + 0x2545F4914F6CDD1D) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % 2**63


def identity_parameters(identities, seed: int = 0) -> dict:
    """The face-shape parameters of each identity: ``{name: [K] float32}`` on the CPU.

    ``identities``: an int ``K`` (identities ``0..K-1``) or a 1-D list/tensor of identity numbers.
    Identity ``i`` depends only on ``(seed, i)``. Names and ranges: :data:`IDENTITY_PARAMETERS`.
    """
    ids = _identity_list(identities)
    nonneg_int("seed", seed)
    uniform = torch.stack([torch.rand(len(_RANGES), generator=torch.Generator().manual_seed(_mix(seed, 1, int(i))))
                           for i in ids.tolist()])
    return {name: low + (high - low) * uniform[:, k] for k, (name, low, high, _) in enumerate(_RANGES)}


def _attribute(name, value, n, generator, probability):
    drawn = torch.rand(n, generator=generator) < probability
    if value is None:
        return drawn
    if isinstance(value, bool):
        return torch.full((n,), value)
    if not isinstance(value, torch.Tensor) or value.dtype != torch.bool or value.shape != (n,):
        raise ValueError(f"{name} must be None, True, False or a bool tensor of shape [{n}], got {value!r}")
    return value.cpu()


def random_views(n: int, generator: torch.Generator, smiling=None, glasses=None) -> dict:
    """Nuisances and attributes of ``n`` images: ``{name: [n] tensor}`` (CPU), drawn from ``generator``.

    Pose (``turn``, ``tilt``, ``scale``, ``shift_x``, ``shift_y``), light (``brightness``, ``cast``,
    ``side_light``, ``light_angle``), ``background``, pixel ``noise``, the day-to-day change of every
    identity parameter (``appearance``, ``[n, P]`` in -1..1) and the attributes ``smile`` and ``glasses``
    (0 or 1). ``smiling`` / ``glasses``: ``None`` (drawn: half the images smile, a third wear glasses), a bool for
    all images, or a ``[n]`` bool tensor.
    """
    positive_int("n", n)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    views = {
        "turn": uniform(-0.5, 0.5),  # sine of the head's yaw
        "tilt": uniform(-0.30, 0.30),  # in-plane rotation, radians
        "scale": uniform(0.86, 1.12),
        "shift_x": uniform(-0.10, 0.10),
        "shift_y": uniform(-0.10, 0.10),
        "brightness": uniform(0.6, 1.3),
        "cast": uniform(-0.12, 0.12, 3),
        "side_light": uniform(0.0, 0.6),
        "light_angle": uniform(0.0, 2 * math.pi),
        "background": uniform(0.15, 0.85)[:, None] + uniform(-0.12, 0.12, 3),
        "background_slope": uniform(-0.25, 0.25, 2),
        "noise": uniform(0.01, 0.04),
        "glasses_shade": uniform(0.05, 0.35),
        "appearance": uniform(-1.0, 1.0, len(_RANGES)),  # day-to-day change of each identity parameter
    }
    views["smile"] = _attribute("smiling", smiling, n, generator, 0.5).float()
    views["glasses"] = _attribute("glasses", glasses, n, generator, 1 / 3).float()
    views["noise_seed"] = torch.randint(0, 2**62, (n,), generator=generator)
    return views


def frontal_views(n: int, smile: float = 0.0, glasses: bool = False, turn: float = 0.0, tilt: float = 0.0) -> dict:
    """Views of ``n`` images under even light, facing the camera unless ``turn`` / ``tilt`` say otherwise;
    ``smile`` may be fractional (0 neutral, 1 smiling). For explorers and figures."""
    positive_int("n", n)

    def full(value, *shape):
        return torch.full((n, *shape), float(value))

    return {
        "turn": full(turn), "tilt": full(tilt), "scale": full(1.0), "shift_x": full(0.0), "shift_y": full(0.0),
        "brightness": full(1.0), "cast": full(0.0, 3), "side_light": full(0.0), "light_angle": full(0.0),
        "background": full(0.75, 3), "background_slope": full(0.0, 2), "noise": full(0.0), "glasses_shade": full(0.15),
        "appearance": full(0.0, len(_RANGES)),
        "smile": full(smile), "glasses": full(float(glasses)), "noise_seed": torch.zeros(n, dtype=torch.int64),
    }


def _ellipse(du, dv, a, b):
    """Signed distance (approximate, in face units) to an ellipse with half-axes ``a``, ``b``."""
    return (torch.sqrt((du / a) ** 2 + (dv / b) ** 2) - 1.0) * torch.minimum(a, b)


def _box(du, dv, half_width, half_height):
    return torch.maximum(du.abs() - half_width, dv.abs() - half_height)


def _rotate(du, dv, angle):
    cos, sin = torch.cos(angle), torch.sin(angle)
    return du * cos + dv * sin, -du * sin + dv * cos


def _render_chunk(p, w, size, device):
    """Images ``[n, 3, H, W]`` and eyes ``[n, 2, 2]`` for identity parameters ``p`` and views ``w``
    (dicts of ``[n]`` / ``[n, k]`` tensors, already on ``device``)."""
    height, width = size
    change = torch.tensor([c * (high - low) for _, low, high, c in _RANGES], device=device)
    p = {name: (p[name] + w["appearance"][:, k] * change[k]).clamp(low, high) for k, (name, low, high, _) in enumerate(_RANGES)}

    def col(t):  # [n] -> [n, 1, 1], to broadcast over the pixel grid
        return t[:, None, None]

    # Pixel centres in normalised image coordinates (-1..1), then in the face's frame.
    ys = ((torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1)[:, None]
    xs = ((torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1)[None, :]
    scale = col(w["scale"])
    u, v = _rotate((xs - col(w["shift_x"])) / scale, (ys - col(w["shift_y"])) / scale, col(w["tilt"]))
    pixels_per_unit = scale * min(height, width) / 2
    edge = _EDGE / pixels_per_unit  # face units over which an edge fades

    def alpha(distance):  # a linear ramp, not a sigmoid: exact zeros far away, no denormal floats
        return (0.5 - distance / edge).clamp(0.0, 1.0)

    turn = col(w["turn"])
    squeeze = torch.sqrt(1 - turn**2)  # cos(yaw): features seen obliquely look narrower

    def slide(u0, depth):  # where a feature at horizontal position u0 appears once the head turns
        return u0 * squeeze + depth * turn

    skin_tone = p["skin_tone"][:, None]
    skin = _SKIN_LIGHT.to(device) * (1 - skin_tone) + _SKIN_DARK.to(device) * skin_tone
    skin = skin + torch.stack([p["skin_red"], 0.3 * p["skin_yellow"], -p["skin_yellow"]], dim=1)
    palette = _HAIR_COLOURS.to(device)
    k = p["hair_colour"].floor().long().clamp(0, 4)
    frac = (p["hair_colour"] - k)[:, None]
    hair = (palette[k] * (1 - frac) + palette[k + 1] * frac) * p["hair_shade"][:, None]
    iris = torch.tensor([0.25, 0.13, 0.06], device=device) * (1 - p["iris_colour"][:, None]) + torch.tensor(
        [0.30, 0.40, 0.50], device=device) * p["iris_colour"][:, None]

    image = w["background"][:, :, None, None] + (w["background_slope"][:, 0, None, None] * xs
                                                   + w["background_slope"][:, 1, None, None] * ys)[:, None]

    def paint(image, mask, colour):  # colour [n, 3]
        return image + mask[:, None] * (colour[:, :, None, None] - image)

    face_w, face_l = col(p["face_width"]), col(p["face_length"])
    # Hair behind the head: a larger ellipse, cut off at the hair's length.
    volume = col(p["hair_volume"])
    hair_back = _ellipse(u, v + 0.05, face_w + volume + 0.04, face_l + volume)
    hair_back = torch.maximum(hair_back, v - col(p["hair_length"]))
    image = paint(image, alpha(hair_back), hair)
    # The face: an ellipse whose lower half narrows towards the chin.
    narrowing = 1 - col(p["chin"]) * (v / face_l).clamp(0, 1) ** 2
    face = _ellipse(u - 0.06 * turn, v, face_w * narrowing, face_l)
    face_mask = alpha(face)
    image = paint(image, face_mask, skin)
    # Hair on top: inside a slightly larger ellipse, above the (tilted) hairline.
    highest = col(p["eye_height"] - p["brow_gap"]) - 0.1
    hairline = torch.minimum(col(p["hairline"]), highest) + col(p["parting"]) * u + 0.25 * u**2
    top = torch.maximum(_ellipse(u - 0.06 * turn, v + 0.02, face_w + volume, face_l + volume), v - hairline)
    image = paint(image, alpha(top), hair)

    eye_y = col(p["eye_height"])
    eye_x = [slide(-col(p["eye_spacing"]), _DEPTH["eyes"]), slide(col(p["eye_spacing"]), _DEPTH["eyes"])]
    # Brows: slanted bars above the eyes (mirrored slant), in the hair's colour, darker.
    for side, x in zip((-1, 1), eye_x):
        bu, bv = _rotate(u - x, v - (eye_y - col(p["brow_gap"])), side * col(p["brow_slant"]))
        brow = _box(bu, bv, 0.13 * squeeze, col(p["brow_thickness"]))
        image = paint(image, alpha(brow), hair * 0.75)
    # Eyes: a light almond with a dark iris.
    size_e = col(p["eye_size"])
    for x in eye_x:
        image = paint(image, alpha(_ellipse(u - x, v - eye_y, 1.5 * size_e * squeeze, size_e)), torch.full_like(skin, 0.92))
        image = paint(image, alpha(_ellipse(u - x, v - eye_y, 0.8 * size_e, 0.8 * size_e)), iris)
    # Nose: a shaded wedge widening downwards, sliding most when the head turns.
    nose_top, nose_length = eye_y + 0.06, col(p["nose_length"])
    along = ((v - nose_top) / nose_length).clamp(0, 1)
    nose = torch.maximum((u - slide(0.0, _DEPTH["nose"])).abs() - col(p["nose_width"]) * (0.3 + 0.7 * along) * squeeze,
                         (v - nose_top - nose_length / 2).abs() - nose_length / 2)
    image = paint(image, alpha(nose) * 0.8, skin * 0.72)
    # Mouth: a curved band; a smile widens it, lifts its corners and opens it.
    smile = col(w["smile"])
    half_width = col(p["mouth_width"]) * (1 + 0.25 * smile) * squeeze
    curve = col(p["mouth_curve"]) * (1 - smile) + 0.13 * smile
    mu = (u - slide(0.0, _DEPTH["mouth"])) / half_width
    centre_line = col(p["mouth_height"]) + curve * (0.5 - mu**2)
    thickness = col(p["lips"]) * (1 + 0.8 * smile)
    mouth = torch.maximum((v - centre_line).abs() - thickness, (mu.abs() - 1) * half_width)
    lips = skin * torch.tensor([0.80, 0.45, 0.45], device=device)
    image = paint(image, alpha(mouth), lips)
    teeth = torch.maximum((v - centre_line).abs() - thickness * 0.45 * smile, (mu.abs() - 0.7) * half_width)
    image = paint(image, alpha(teeth) * smile, torch.full_like(skin, 0.95))
    # Glasses: a ring around each eye and a bridge between them.
    frame_colour = w["glasses_shade"][:, None].expand(-1, 3)
    wears = col(w["glasses"])
    ring_radius = torch.clamp(2.0 * size_e, min=0.15)
    for x in eye_x:
        ring = (torch.sqrt(((u - x) / squeeze) ** 2 + (v - eye_y) ** 2) - ring_radius).abs() - 0.035
        image = paint(image, alpha(ring) * wears, frame_colour)
    bridge = _box(u - (eye_x[0] + eye_x[1]) / 2, v - eye_y + 0.03, (eye_x[1] - eye_x[0]) / 2 - ring_radius * squeeze, 0.03)
    image = paint(image, alpha(bridge) * wears, frame_colour)

    # Light: brightness, colour cast and a gradient from one side, then sensor noise.
    angle = col(w["light_angle"])
    side = 1 + col(w["side_light"]) * (torch.cos(angle) * xs + torch.sin(angle) * ys)
    image = image * (col(w["brightness"]) * side)[:, None] * (1 + w["cast"])[:, :, None, None]
    noise = torch.stack([torch.randn(3, height, width, generator=torch.Generator().manual_seed(int(s)))
                         for s in w["noise_seed"].tolist()]).to(device)
    image = (image + w["noise"][:, None, None, None] * noise).clamp(0, 1)

    # The eyes' centres, from the face's frame back to pixels.
    cos, sin = torch.cos(w["tilt"]), torch.sin(w["tilt"])
    eu = torch.stack([e[:, 0, 0] for e in eye_x], dim=1)  # [n, 2]
    ev = p["eye_height"][:, None].expand(-1, 2)
    scale = w["scale"][:, None]
    x_norm = w["shift_x"][:, None] + scale * (eu * cos[:, None] - ev * sin[:, None])
    y_norm = w["shift_y"][:, None] + scale * (eu * sin[:, None] + ev * cos[:, None])
    eyes = torch.stack([(x_norm + 1) * width / 2, (y_norm + 1) * height / 2], dim=2)
    return image, eyes


def render_faces(params: dict, views: dict, size=32, device=None):
    """Draw one image per row of ``params`` (identity parameters, see :func:`identity_parameters`) and
    ``views`` (see :func:`random_views`), both dicts of ``[n]`` tensors (``[n, k]`` for colours).

    Returns ``images`` ``[n, 3, size, size]`` float32 in [0, 1] and ``eyes`` ``[n, 2, 2]`` (x, y) pixels,
    on ``device``.
    """
    from ..validate import pair

    height, width = pair("size", size, minimum=16)
    device = torch.device("cpu") if device is None else torch.device(device)
    missing = [name for name in IDENTITY_PARAMETERS if name not in params]
    if missing:
        raise ValueError(f"params must hold every identity parameter, missing {missing}")
    n = len(views["turn"])
    if any(len(t) != n for t in params.values()):
        raise ValueError(f"params and views must describe the same number of images, got {len(params['face_width'])} and {n}")
    images, eyes = [], []
    chunk = _CHUNK.get(device.type, _CHUNK_DEFAULT)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        chunk_p = {k: t[part].to(device) for k, t in params.items()}
        chunk_w = {k: (t[part] if k == "noise_seed" else t[part].to(device)) for k, t in views.items()}
        chunk_images, chunk_eyes = _render_chunk(chunk_p, chunk_w, (height, width), device)
        images.append(chunk_images)
        eyes.append(chunk_eyes)
    return torch.cat(images), torch.cat(eyes)


def face_images(identities, per_identity: int = 1, size=32, seed: int = 0, view_seed: int = 0,
                smiling=None, glasses=None, device=None) -> FaceImages:
    """``per_identity`` images of each identity, with labels: a :class:`FaceImages`.

    Args:
        identities: an int ``K`` (identities ``0..K-1``) or a 1-D list/tensor of identity numbers.
            Identity ``i`` has the same face in every call with the same ``seed``.
        per_identity: images of each identity; the images of one identity are consecutive.
        size: image side in pixels (at least 16), or ``(height, width)``.
        seed: which population of faces.
        view_seed: which views of them (nuisances and attributes); change it for new images of the
            same people.
        smiling, glasses: ``None`` (drawn per image: half smile, a third wear glasses), a bool for
            every image, or a bool tensor ``[K * per_identity]``.
        device: where the images are drawn (default CPU).
    """
    ids = _identity_list(identities)
    positive_int("per_identity", per_identity)
    nonneg_int("view_seed", view_seed)
    params = identity_parameters(ids, seed)
    params = {k: t.repeat_interleave(per_identity) for k, t in params.items()}
    n = len(ids) * per_identity
    views = random_views(n, torch.Generator().manual_seed(_mix(seed, 2, view_seed)), smiling, glasses)
    images, eyes = render_faces(params, views, size, device)
    device = images.device
    return FaceImages(images, ids.repeat_interleave(per_identity).to(device), views["smile"].bool().to(device),
                      views["glasses"].bool().to(device), eyes)
