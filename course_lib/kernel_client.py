"""A Jupyter kernel client that does not sleep through a kernel's reply.

``nbclient`` (behind ``jupyter nbconvert --execute``, ``course-grade`` and the Colab test) waits for a
cell's ``execute_reply`` with one ``zmq.asyncio`` poll that lasts the whole cell timeout. After cells
whose widgets send many comm messages (every explorer of the lectures), that poll sometimes misses
the reply's wake-up and only returns when its timeout ends (pyzmq#1558, nbclient#312): with the
lectures' one-hour timeout, ``make lectures`` stalled for good at an explorer cell in 2 of 9 runs,
and a 30-explorer notebook stalled in 4 of 5. Polling in slices of at most :data:`SLICE` seconds
turns each such stall into a pause of under a second, with the same overall timeout.

Use it with ``--AsyncKernelManager.client_class=course_lib.kernel_client.SlicedPollClient`` on
``jupyter nbconvert``, or as the ``client_class`` of a kernel manager.
"""
from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

__all__ = ["SLICE", "SlicedPollChannel", "SlicedPollClient"]

SLICE = 0.5


class SlicedPollChannel(AsyncZMQSocketChannel):
    """``get_msg(timeout)`` as a series of polls of at most :data:`SLICE` seconds, until ``timeout``
    (``None``: forever); raises ``queue.Empty`` when it ends with no message, as the original does."""

    async def get_msg(self, timeout: float | None = None):  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - time.monotonic()))
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class SlicedPollClient(AsyncKernelClient):
    """An ``AsyncKernelClient`` whose shell and IOPub channels poll in slices (:class:`SlicedPollChannel`)."""

    shell_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
