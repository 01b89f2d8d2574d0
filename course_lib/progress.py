"""Progress bars that read well live and afterwards.

In a Jupyter kernel the bar is one display output updated in place, so the saved notebook keeps its
final state ("30/30 epochs, 12.3 s, loss 0.062"), which GitHub and nbviewer show as it is. (tqdm's
notebook bar is a widget: static viewers show its text fallback, frozen at "0%".) It needs no
widget manager, so it also renders on Colab. Elsewhere (scripts, tests) it is a plain tqdm bar on
stderr.
"""
from __future__ import annotations

import html
import time

__all__ = ["progress", "Progress"]

_WIDTH = 20  # characters of the text bar
_INTERVAL = 0.2  # seconds between live redraws


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}" if minutes else f"{seconds} s"


class Progress:
    """A bar over ``total`` steps: iterate over it, or call :meth:`update`; :meth:`set_postfix`
    adds ``key value`` pairs (the latest loss, say); :meth:`close` draws the final state."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.postfix, self.enabled, self.closed = 0, {}, enabled, False
        self.start = self._drawn = time.perf_counter()
        self._handle = self._tqdm = None
        if not enabled:
            return
        if _in_kernel():
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def text(self) -> str:
        """The bar as one line of text, e.g. ``training |#####     | 5/10 epochs, 3 s, loss 0.12``."""
        elapsed = _clock(time.perf_counter() - self.start)
        if self.total:
            filled = int(_WIDTH * min(self.n, self.total) / self.total)
            bar = f"|{'█' * filled}{'·' * (_WIDTH - filled)}| {self.n}/{self.total} {self.unit}"
        else:
            bar = f"{self.n} {self.unit}"
        extras = "".join(f", {key} {value}" for key, value in self.postfix.items())
        return f"{self.desc + ' ' if self.desc else ''}{bar}, {elapsed}{extras}"

    def _bundle(self) -> dict:
        done = "" if self.total is None else f"<progress value='{self.n}' max='{self.total}' style='width:12em'></progress> "
        return {"text/plain": self.text(), "text/html": f"<div style='font-family:monospace'>{done}{html.escape(self.text())}</div>"}

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self._handle is not None and (force or now - self._drawn >= _INTERVAL):
            self._handle.update(self._bundle(), raw=True)
            self._drawn = now

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        self._draw()

    def set_postfix(self, values: dict | None = None, **more) -> None:
        self.postfix = {**(values or {}), **more}
        if self._tqdm is not None:
            self._tqdm.set_postfix(self.postfix)
        self._draw()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        self._draw(force=True)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True) -> Progress:
    """A :class:`Progress` bar (see the module docstring); ``enabled=False`` shows nothing."""
    return Progress(iterable, total, desc, unit, enabled)
