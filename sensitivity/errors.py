"""Exception hierarchy.

Every error the package raises on purpose derives from :class:`SensitivityError`;
bad arguments raise :class:`InvalidArgumentError`, which is also a
:class:`ValueError`, so ``except ValueError`` keeps working for callers that do
not know this package.
"""

from __future__ import annotations

__all__ = [
    "SensitivityError",
    "InvalidArgumentError",
    "OutputError",
    "NotARateMatrixError",
    "NotDiagonalizableError",
    "NotSkewHermitianError",
]


class SensitivityError(Exception):
    """Base class of the errors raised by :mod:`sensitivity`."""


class InvalidArgumentError(ValueError, SensitivityError):
    """An argument has the wrong shape, type or value; the message names it."""


class NotARateMatrixError(InvalidArgumentError):
    """A matrix is not in the class ℛ of irreducible rate matrices (seed 2.1)."""


class NotDiagonalizableError(InvalidArgumentError):
    """A matrix is not (numerically) diagonalizable, so it is not in 𝒟 (seed 2.2)."""


class NotSkewHermitianError(InvalidArgumentError):
    """A matrix A is not skew-Hermitian (A* = −A) to the requested tolerance."""


class OutputError(InvalidArgumentError, OSError):
    """An output path cannot be used or written; the message names the path.

    An :class:`InvalidArgumentError` (so command-line programs report it in one line,
    with exit status 2, on every rank) that is also an :class:`OSError` (so
    ``except OSError`` keeps catching write failures).
    """
