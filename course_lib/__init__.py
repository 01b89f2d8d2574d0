"""course_lib: the shared library of the CNN course workbook.

One module per lecture topic, in lecture order (see DESIGN.md). Notebooks start with::

    import course_lib
    course_lib.setup()
"""
__version__ = "0.2.0"

from .runtime import check_version, device, in_colab, seed_everything, settings, setup  # noqa: E402

__all__ = ["__version__", "setup", "device", "seed_everything", "settings", "check_version", "in_colab"]
