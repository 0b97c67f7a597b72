r"""Parameter vectors for estimation: NumPy arrays (dense parameters) or distributed PETSc vectors (PDE controls).

Every algorithm of :mod:`sensitivity.estimation` (priors, MAP, Laplace, samplers, chains)
works on parameter vectors through a :class:`ParameterSpace`, so one implementation serves
both kinds:

- :class:`ArraySpace`: a NumPy array of length :math:`n`, the same on every rank (log-rates
  of a rate matrix, stream-function coefficients);
- :class:`FunctionVectors`: the dof vector of a control Function, a ghosted PETSc Vec
  distributed like the control space (a potential or stream function field).

The pairing :meth:`ParameterSpace.dot` is the ℓ² (Euclidean) one in which derivatives are
dual vectors (docs/theory.md §4); inner products with a metric (a prior precision, a mass
matrix) are applied by the operators that own them. :meth:`ParameterSpace.to_array` and
:meth:`ParameterSpace.from_array` move a vector to and from one global NumPy array whose
order does not depend on the partition (for distributed vectors: the dofs sorted by their
coordinates), so chains, random draws and checkpoints are the same on 1, 2 or 3 ranks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from sensitivity.errors import InvalidArgumentError
from sensitivity.validation import finite_array, integer

__all__ = ["ArraySpace", "FunctionVectors", "ParameterSpace"]


class ParameterSpace(ABC):
    """Vector operations on parameter vectors of one kind (collective where the vectors are distributed).

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
        The communicator the vectors live on.
    size : int
        The global number of parameters.
    """

    comm: MPI.Comm
    size: int

    @abstractmethod
    def zeros(self) -> Any:
        """A new zero vector."""

    @abstractmethod
    def copy(self, x: Any) -> Any:
        """A new vector equal to ``x``."""

    @abstractmethod
    def axpy(self, alpha: float, x: Any, y: Any) -> Any:
        """``y += alpha * x`` in place; returns ``y``."""

    @abstractmethod
    def scale(self, x: Any, alpha: float) -> Any:
        """``x *= alpha`` in place; returns ``x``."""

    @abstractmethod
    def assign(self, x: Any, y: Any) -> Any:
        """``y[:] = x``; returns ``y``."""

    @abstractmethod
    def dot(self, x: Any, y: Any) -> float:
        r"""The ℓ² pairing :math:`x^Ty` (collective)."""

    @abstractmethod
    def to_array(self, x: Any) -> np.ndarray:
        """``x`` as one global array of shape (size,), in partition-independent order, on every rank (collective)."""

    @abstractmethod
    def from_array(self, a: np.ndarray, out: Any | None = None) -> Any:
        """The vector whose :meth:`to_array` is ``a`` (the same ``a`` on every rank; not collective)."""

    def destroy(self, x: Any) -> None:
        """Release ``x`` (PETSc vectors; a no-op for arrays)."""

    def norm(self, x: Any) -> float:
        """:math:`\\|x\\|_2` (collective)."""
        return float(np.sqrt(max(self.dot(x, x), 0.0)))

    def standard_normal(self, rng: np.random.Generator, out: Any | None = None) -> Any:
        """A vector of independent N(0, 1) entries, the same for a given ``rng`` state on any number of ranks."""
        return self.from_array(rng.standard_normal(self.size), out)

    def check(self, x: Any, name: str) -> Any:
        """Raise (on every rank) unless ``x`` is a finite vector of this space (collective)."""
        return x

    def gram(self, xs: Sequence[Any], ys: Sequence[Any]) -> np.ndarray:
        r"""The matrix :math:`[x_i^Ty_j]` of shape (len(xs), len(ys)), the same on every rank (collective).

        Distributed spaces form it with one reduction (the small dense algebra of
        :mod:`sensitivity.estimation.laplace` then runs in NumPy on every rank).
        """
        return np.array([[self.dot(x, y) for y in ys] for x in xs], dtype=float).reshape(len(xs), len(ys))

    def combine(self, xs: Sequence[Any], coefficients: np.ndarray) -> list[Any]:
        r"""New vectors :math:`z_j = \sum_i c_{ij}x_i` for coefficients of shape (len(xs), m) (not collective)."""
        c = _coefficients(coefficients, len(xs))
        out = []
        for j in range(c.shape[1]):
            z = self.zeros()
            for i, x in enumerate(xs):
                if c[i, j] != 0.0:
                    self.axpy(float(c[i, j]), x, z)
            out.append(z)
        return out


def _coefficients(coefficients: Any, rows: int) -> np.ndarray:
    c = np.asarray(coefficients, dtype=float)
    if c.ndim != 2 or c.shape[0] != rows:
        raise InvalidArgumentError(f"coefficients must have shape ({rows}, m), got {c.shape}")
    return c


class ArraySpace(ParameterSpace):
    """Parameters as a NumPy array of length ``size``, replicated on every rank of ``comm``.

    Parameters
    ----------
    size : int
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``. Arrays are not communicated: every rank computes the same values.
    """

    def __init__(self, size: int, comm: MPI.Comm | None = None):
        self.size = integer(size, "size", minimum=1)
        self.comm = MPI.COMM_WORLD if comm is None else comm

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size)

    def copy(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=float, copy=True)

    def axpy(self, alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        y += alpha * x
        return y

    def scale(self, x: np.ndarray, alpha: float) -> np.ndarray:
        x *= alpha
        return x

    def assign(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        y[:] = x
        return y

    def dot(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.dot(x, y))

    def to_array(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=float, copy=True)

    def from_array(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a = finite_array(a, "parameter array", shape=(self.size,))
        if out is None:
            return a.copy()
        out[:] = a
        return out

    def check(self, x: Any, name: str) -> np.ndarray:
        return finite_array(x, name, shape=(self.size,))

    def gram(self, xs, ys) -> np.ndarray:
        X = np.asarray(xs, dtype=float).reshape(len(xs), self.size)
        Y = np.asarray(ys, dtype=float).reshape(len(ys), self.size)
        return X @ Y.T

    def combine(self, xs, coefficients) -> list[np.ndarray]:
        c = _coefficients(coefficients, len(xs))
        Z = np.asarray(xs, dtype=float).reshape(len(xs), self.size).T @ c
        return [Z[:, j].copy() for j in range(c.shape[1])]


class FunctionVectors(ParameterSpace):
    """Parameters as the (ghosted, distributed) PETSc dof vector of a control space's Functions.

    Parameters
    ----------
    control_space : sensitivity.fem.ControlSpace
        The control space (of a :class:`~sensitivity.fem.ReducedFunctional`); vectors are made by its
        ``create_vector``, so forms can be assembled into them.
    decimals : int
        Dof coordinates are rounded to this many decimals to sort them (nodes that share
        coordinates — blocked components — keep their block order).
    """

    def __init__(self, control_space, decimals: int = 10):
        self.control_space = control_space
        space = control_space.space
        self.comm = space.mesh.comm
        imap, bs = space.dofmap.index_map, space.dofmap.index_map_bs
        nown = imap.size_local
        gdim = space.mesh.geometry.dim
        coords = space.tabulate_dof_coordinates()[:nown, :gdim]
        all_coords = np.vstack(self.comm.allgather(coords)) if self.comm.size > 1 else coords
        counts = np.array(self.comm.allgather(nown * bs))
        self.size = int(counts.sum())
        # global sorted order of nodes, then the blocks of each node in order
        node_order = np.lexsort(np.round(all_coords, decimals).T[::-1])
        entry_order = (node_order[:, None] * bs + np.arange(bs)).ravel()  # rank-concatenated index -> sorted pos
        self._gather_order = entry_order  # sorted position k holds concatenated entry entry_order[k]
        start = int(counts[: self.comm.rank].sum())
        inverse = np.empty(self.size, dtype=np.int64)
        inverse[entry_order] = np.arange(self.size)
        self._mine = inverse[start:start + nown * bs]  # sorted positions of this rank's owned entries

    def zeros(self):
        return self.control_space.create_vector()

    def copy(self, x):
        y = self.control_space.create_vector()
        x.copy(y)
        return y

    def axpy(self, alpha: float, x, y):
        y.axpy(alpha, x)
        return y

    def scale(self, x, alpha: float):
        x.scale(alpha)
        return x

    def assign(self, x, y):
        x.copy(y)
        return y

    def dot(self, x, y) -> float:
        return float(np.real(y.dot(x)))

    def to_array(self, x) -> np.ndarray:
        local = np.asarray(x.array_r, dtype=float)
        whole = np.concatenate(self.comm.allgather(local)) if self.comm.size > 1 else local.copy()
        return whole[self._gather_order]

    def from_array(self, a: np.ndarray, out=None):
        a = np.asarray(a, dtype=float)
        if a.shape != (self.size,):
            raise InvalidArgumentError(f"parameter array must have shape ({self.size},), got {a.shape}")
        out = self.control_space.create_vector() if out is None else out
        out.array[:] = a[self._mine]
        return out

    def destroy(self, x) -> None:
        x.destroy()

    def _local_block(self, xs) -> np.ndarray:
        """The owned entries of ``xs`` as the columns of an (owned, len(xs)) array."""
        if not len(xs):
            return np.zeros((self._mine.size, 0))
        return np.column_stack([np.asarray(x.array_r, dtype=float) for x in xs])

    def gram(self, xs, ys) -> np.ndarray:
        local = self._local_block(xs).T @ self._local_block(ys)
        total = np.empty_like(local)
        self.comm.Allreduce(np.ascontiguousarray(local), total, op=MPI.SUM)
        # rank 0's sum on every rank, bit for bit (so the dense algebra that follows agrees everywhere)
        return self.comm.bcast(total, root=0) if self.comm.size > 1 else total

    def combine(self, xs, coefficients) -> list:
        c = _coefficients(coefficients, len(xs))
        block = self._local_block(xs) @ c
        out = []
        for j in range(c.shape[1]):
            z = self.control_space.create_vector()
            z.array[:] = block[:, j]
            out.append(z)
        return out

    def check(self, x: Any, name: str):
        from sensitivity.validation import finite_vector

        vec = getattr(getattr(x, "x", None), "petsc_vec", x)
        if not hasattr(vec, "getSize") or vec.getSize() != self.size:
            raise InvalidArgumentError(f"{name} must be a PETSc Vec of {self.size} control dofs, got {type(x).__name__}")
        return finite_vector(vec, name)
