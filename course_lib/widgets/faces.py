"""Explorer of lecture 09: draw a synthetic person, change their pose and attributes, and see which
faces of a gallery the embedding puts nearest."""
from __future__ import annotations

import matplotlib.pyplot as plt
from ._interact import interact

__all__ = ["draw_face_neighbours", "face_explorer"]


def draw_face_neighbours(model, identity: int, gallery, gallery_embeddings=None, smile: float = 0.0, glasses: bool = False,
                         turn: float = 0.0, tilt: float = 0.0, k: int = 6, seed: int = 0, align: bool = True, axes=None):
    """Draw identity ``identity`` (of population ``seed``) with the given smile (0 to 1), glasses, head turn
    (-0.5 to 0.5) and tilt (radians), under even light, then its ``k`` nearest neighbours in ``gallery``
    by the distance between ``model``'s embeddings.

    ``gallery``: a :class:`~course_lib.data.identities.FaceImages` (raw images with their eyes);
    ``gallery_embeddings`` ``[N, D]``: their embeddings, if already computed (the explorer computes them
    once). ``align``: align the query and gallery by the eyes first (as the model was trained). A
    neighbour's title gives its identity and distance, green when it is the query's identity. Returns
    ``(axes, neighbours [k], distances [k])``.
    """
    from ..data.identities import frontal_views, identity_parameters, render_faces
    from ..faces import align_faces, embed, pairwise_distances
    from ..plot import show_image
    from ..validate import nonneg_int, positive_int

    nonneg_int("identity", identity)
    positive_int("k", k)
    if k > len(gallery):
        raise ValueError(f"k must be at most the gallery's size {len(gallery)}, got {k}")
    if not 0.0 <= smile <= 1.0:
        raise ValueError(f"smile must be between 0 (neutral) and 1 (smiling), got {smile!r}")
    if not -0.9 <= turn <= 0.9:
        raise ValueError(f"turn (the sine of the head's yaw) must be between -0.9 and 0.9, got {turn!r}")
    device = gallery.images.device
    size = tuple(gallery.images.shape[-2:])
    views = frontal_views(1, smile=smile, glasses=glasses, turn=turn, tilt=tilt)
    query, eyes = render_faces(identity_parameters([identity], seed), views, size, device)
    if gallery_embeddings is None:
        gallery_images = align_faces(gallery.images, gallery.eyes) if align else gallery.images
        gallery_embeddings = embed(model, gallery_images)
    query_embedding = embed(model, align_faces(query, eyes) if align else query)
    distances = pairwise_distances(query_embedding, gallery_embeddings.to(query_embedding.device))[0]
    nearest = distances.topk(k, largest=False)
    if axes is None:
        _, axes = plt.subplots(1, k + 1, figsize=(1.7 * (k + 1), 2.3))
    show_image(query[0], f"query: person {identity}", ax=axes[0])
    for ax, index, distance in zip(axes[1:], nearest.indices.tolist(), nearest.values.tolist()):
        person = int(gallery.identity[index])
        show_image(gallery.images[index], f"person {person}\nd = {distance:.2f}", ax=ax)
        ax.title.set_color("tab:green" if person == identity else "tab:red")
    return axes, nearest.indices, nearest.values


def face_explorer(model, gallery, identities, seed: int = 0, k: int = 6, align: bool = True):
    """Sliders for :func:`draw_face_neighbours`: which person (among ``identities``, a list of identity
    numbers), smile, glasses, head turn and tilt."""
    import ipywidgets as w

    from ..faces import align_faces, embed

    identities = [int(i) for i in identities]
    gallery_embeddings = embed(model, align_faces(gallery.images, gallery.eyes) if align else gallery.images)

    def show(identity, smile, glasses, turn, tilt):
        fig, axes = plt.subplots(1, k + 1, figsize=(1.7 * (k + 1), 2.8), layout="constrained")
        draw_face_neighbours(model, identity, gallery, gallery_embeddings, smile, glasses, turn, tilt, k, seed, align, axes)
        fig.suptitle("a drawn person and the gallery faces nearest to it in the embedding (green: same person)")

    return interact(
        show,
        identity=w.Dropdown(options=identities, value=identities[0], description="person"),
        smile=w.FloatSlider(0.0, min=0.0, max=1.0, step=0.1, description="smile", continuous_update=False),
        glasses=w.Checkbox(False, description="glasses"),
        turn=w.FloatSlider(0.0, min=-0.5, max=0.5, step=0.05, description="head turn", continuous_update=False),
        tilt=w.FloatSlider(0.0, min=-0.3, max=0.3, step=0.05, description="tilt (rad)", continuous_update=False),
    )
