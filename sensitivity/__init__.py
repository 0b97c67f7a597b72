"""sensitivity: exact and surrogate sensitivities of matrix exponentials and of
time-dependent PDEs (advection–diffusion, Schrödinger) with respect to their
coefficient fields.

The dense matrix-exponential toolkit lives in :mod:`sensitivity.dense`; it needs
only NumPy and SciPy. The finite-element modules need DOLFINx.

Importing this package imports ``dolfinx_solver`` first when it is installed (the
binary DOLFINx wheel requires it to be imported before ``dolfinx``, ``petsc4py``
or ``slepc4py``); a conda or Docker DOLFINx without it works too.
"""

from __future__ import annotations

try:  # must precede any dolfinx / petsc4py / slepc4py import
    import dolfinx_solver as _dolfinx_solver  # noqa: F401
except ImportError:  # pragma: no cover - conda / Docker / source DOLFINx, or none
    _dolfinx_solver = None

from sensitivity.errors import InvalidArgumentError, SensitivityError

__version__ = "0.1.0"

__all__ = ["InvalidArgumentError", "SensitivityError", "__version__"]
