"""The one piece every explorer shares: sliders wired to a drawing, which explains bad settings."""
from __future__ import annotations

import matplotlib.pyplot as plt

__all__: list[str] = []


def interact(show, **controls):
    """``ipywidgets.interact`` over ``show(**values)``, which draws a figure (shown after it returns) or
    prints. A ``ValueError`` (a setting the drawing cannot take, such as a kernel larger than the padded
    input) is printed instead of raised, so a student sees why and can move the slider back."""
    import ipywidgets as w

    def guarded(**values):
        try:
            show(**values)
            plt.show()
        except ValueError as err:
            print(err)

    return w.interact(guarded, **controls)
