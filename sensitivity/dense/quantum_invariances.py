r"""What the data of the toy quantum model cannot see (docs/theory.md §3–4, seed §4.1).

The model is :math:`x' = -i(H_0 + \mathrm{diag}\,V)x`, :math:`x(0) = x_0`, observed through
:math:`p_j(t) = |x_j(t)|^2` (:class:`~sensitivity.dense.quantum.ToyQuantumModel`).

**Invariances** (what the data cannot see):

1. *Gauge.* :math:`V \to V + c\mathbf 1` multiplies :math:`x(t)` by the global phase
   :math:`e^{-ict}`, so :math:`p` is unchanged and :math:`\frac{\partial p}{\partial V}\mathbf 1 = 0`:
   at most ``d - 1`` directions are identifiable. The estimator
   (:func:`~sensitivity.dense.potential_estimation.estimate_potential`) fixes the gauge
   (zero mean, or one pinned entry, :func:`fix_gauge`) and compares modulo the shift.
   (If the hopping graph of :math:`H_0` is disconnected, one shift per connected
   component is invisible, and components where :math:`x_0 = 0` are not seen at
   all; the reported Jacobian rank shows it.)
2. *Probability conservation.* :math:`\sum_j p_j(t) = 1`, so each time gives at most
   ``d - 1`` independent numbers and :math:`\mathbf 1^T\,\partial p/\partial V = 0`.
3. *Time reversal.* If :math:`H_0` and :math:`x_0` are real (:math:`x_0` up to a global
   phase), :math:`\overline{x(t)} = x(-t)`: complex conjugation reverses time, so
   :math:`p(-t) = p(t)` and, equivalently, :math:`p(t; H) = p(t; -H)`: the model
   :math:`(H_0, V)` and the model :math:`(-H_0, -V)` give the same data.
4. *Chiral (sublattice) symmetry.* If moreover the off-diagonal part of :math:`H_0`
   is bipartite — :math:`S\,\mathrm{offdiag}(H_0)S = -\mathrm{offdiag}(H_0)` for a
   signature :math:`S = \mathrm{diag}(\pm 1)`, as for every chain with
   nearest-neighbour hopping — and :math:`Sx_0 = \pm x_0` (e.g. :math:`x_0` localized
   on one site), then 3. and :math:`-H = S(H_0 + \mathrm{diag}(V'))S` give

   .. math:: p(t; V) = p(t; V'),\qquad V' = -V - 2\,\mathrm{diag}(H_0),

   a second potential with *exactly the same data*. Least squares then has two
   global minima (mod the shift), and at the fixed point :math:`V = -\mathrm{diag}(H_0)`
   (e.g. ``V = 0`` for a hopping chain) ``p`` is even in ``V``, so the Jacobian vanishes
   there: do not start an optimizer at it.    :func:`chiral_signature` (:attr:`ToyQuantumModel.chiral_signature
   <sensitivity.dense.quantum.ToyQuantumModel.chiral_signature>`) detects the case (for
   real :math:`H_0`; a complex hopping that is only gauge equivalent to a real one is not
   recognised) and :meth:`~sensitivity.dense.quantum.ToyQuantumModel.chiral_partner`
   returns :math:`V'`.
5. *Spatial symmetry (equivariance, not invariance).* If a permutation :math:`P`
   has :math:`PH_0P^T = H_0` and :math:`Px_0 = x_0`, then :math:`x(t; PV) = P\,x(t; V)`,
   so :math:`p(t; PV) = P\,p(t; V)`: the data of :math:`PV` are the *permuted* data of
   :math:`V` — identical only when :math:`p(t;V)` is itself :math:`P`-symmetric (e.g.
   :math:`PV = V`, or observations summed over the orbits of :math:`P`). It does not
   make ``V`` unidentifiable from the full probability vectors.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, Union

import numpy as np
from numpy.typing import ArrayLike

from sensitivity.errors import InvalidArgumentError
from sensitivity.validation import finite_array, finite_number, integer

__all__ = ["Gauge", "chiral_signature", "fix_gauge", "gauge_index"]

Gauge = Union[Literal["mean"], int]


def chiral_signature(H0: np.ndarray, x0: np.ndarray) -> np.ndarray | None:
    """Signature S (±1) with S offdiag(H0) S = -offdiag(H0) and S x0 = x0, if it exists (invariance 4).

    For real ``H0`` and ``x0`` (up to a global phase), as checked by
    :class:`~sensitivity.dense.quantum.ToyQuantumModel`; ``None`` when the hopping graph
    has an odd cycle or ``x0`` lives on both colour classes of a component.
    """
    if np.iscomplexobj(H0):
        return None
    k = int(np.argmax(np.abs(x0)))
    xr = x0 * (abs(x0[k]) / x0[k])  # remove the global phase
    if np.any(np.abs(xr.imag) > 1e-14):
        return None
    d = H0.shape[0]
    adj = (H0 != 0) & ~np.eye(d, dtype=bool)
    s = np.zeros(d, dtype=int)
    for root in range(d):
        if s[root]:
            continue
        comp, queue = [root], deque([root])
        s[root] = 1
        while queue:
            a = queue.popleft()
            for b in np.flatnonzero(adj[a]):
                if s[b] == 0:
                    s[b] = -s[a]
                    comp.append(b)
                    queue.append(b)
                elif s[b] == s[a]:
                    return None  # an odd cycle: not bipartite
        support = [a for a in comp if x0[a] != 0]
        if support:  # x0 must live on one colour class of each component; make it colour +1
            colours = set(s[support].tolist())
            if len(colours) > 1:
                return None
            if colours == {-1}:
                s[comp] = -s[comp]
    return s.astype(float)



def fix_gauge(V: ArrayLike, gauge: Gauge = "mean", value: float = 0.0) -> np.ndarray:
    """Representative of the class ``V + c 1`` (invariance 1 of the module docstring).

    Parameters
    ----------
    V : array_like, shape (d,)
        Finite.
    gauge : "mean" or int
        ``"mean"``: the representative with mean ``value``; an index ``k``: the one
        with ``V[k] = value``.
    value : float

    Returns
    -------
    numpy.ndarray, shape (d,)
    """
    V = finite_array(V, "V", shape=(None,))
    value = finite_number(value, "value")
    if isinstance(gauge, str) and gauge == "mean":
        return V - V.mean() + value
    return V - V[gauge_index(gauge, V.size)] + value


def gauge_index(gauge: Gauge, d: int) -> int:
    """The pinned index of an integer ``gauge`` (``"mean"`` is not one); raise naming ``gauge`` otherwise."""
    try:
        return integer(gauge, "gauge", minimum=0, maximum=d - 1)
    except InvalidArgumentError as err:  # a gauge may also be "mean": say so
        raise InvalidArgumentError(f"gauge must be 'mean' or an index in [0, {d}), got {gauge!r}") from err

# --------------------------------------------------------------------------- the model
