"""Odd answers a student function might return, shared by the grader tests."""


class Liar:
    """Claims to equal everything and looks vaguely tensor-like: must never pass a check."""

    def __eq__(self, other):
        return True

    shape = (1,)
