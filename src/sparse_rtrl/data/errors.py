"""The error a data loader raises when a file is missing, unreadable or laid out wrongly."""

from __future__ import annotations

from ..errors import InputError


class DataError(InputError):
    """A recording file (or a session built from one) cannot be used.

    The message names the file and what is wrong with it ("missing key 'cursor_pos'",
    "expected 'cursor_pos' of shape (2, 1000), got (3, 1000)") and, where there is one,
    the fix.

    Attributes:
        path: the file (or the session's ``source``) the problem was found in.
        problem: what is wrong, without the path.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuild from (path, problem), e.g. across worker processes
        return type(self), (self.path, self.problem)
