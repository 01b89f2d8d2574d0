"""Interactive explorers (ipywidgets), one module per lecture topic. Each explorer only wires sliders to
a plain drawing function that a notebook can also call directly, so nothing depends on widgets being
available or rendered.

Every public name of the lecture modules is available here too (``widgets.conv_explorer()``); a new
lecture adds its module and nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
    __all__ += _module.__all__
del _info, _module, _name
