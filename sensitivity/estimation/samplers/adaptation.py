r"""Step-size adaptation by dual averaging (Hoffman & Gelman 2014, §3.2; Stan's defaults).

After warm-up iteration :math:`m = 1, 2, \dots` with acceptance statistic :math:`\alpha_m` (capped at 1),

.. math::

    \bar H_m = \Bigl(1 - \frac1{m + t_0}\Bigr)\bar H_{m-1} + \frac{\delta - \alpha_m}{m + t_0},\qquad
    \log h_m = \mu - \frac{\sqrt m}{\gamma}\bar H_m,\qquad
    \log\bar h_m = m^{-\kappa}\log h_m + (1 - m^{-\kappa})\log\bar h_{m-1},

with :math:`\bar H_0 = 0`, :math:`\mu = \log(10h_0)`, target :math:`\delta` (0.8 for HMC; kernels set their own),
:math:`\gamma = 0.05`, :math:`t_0 = 10`, :math:`\kappa = 0.75`. Iteration :math:`m + 1` uses :math:`h_m`; after
warm-up the step size is frozen at :math:`\bar h = \exp(\log\bar h_M)` (or :math:`h_0` without warm-up), so the
chain is a time-homogeneous Markov chain afterwards. :math:`\log h_m` is capped at the kernel's largest step size
(:math:`\beta \le 1` for pCN, :math:`h \le \pi/2` for the rotation of ∞-HMC).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["DualAveraging"]


@dataclass
class DualAveraging:
    r"""The dual-averaging state (module docstring); :meth:`state` and :meth:`from_state` store it exactly.

    Parameters
    ----------
    initial_step_size : float
        :math:`h_0`.
    target : float
        :math:`\delta \in (0, 1)`.
    gamma, t0, kappa : float
        Stan's defaults.
    max_step_size : float
        Cap of :math:`h_m`.
    """

    initial_step_size: float
    target: float
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    max_step_size: float = math.inf
    count: int = 0
    error_average: float = 0.0  # H-bar
    log_step: float | None = None  # log h_m
    log_step_average: float = 0.0  # log h-bar_m

    def __post_init__(self):
        if self.log_step is None:
            self.log_step = math.log(self.initial_step_size)

    @property
    def mu(self) -> float:
        r""":math:`\mu = \log(10h_0)`."""
        return math.log(10.0 * self.initial_step_size)

    @property
    def step_size(self) -> float:
        """The step size of the next warm-up iteration, :math:`h_m`."""
        return math.exp(self.log_step)

    @property
    def final_step_size(self) -> float:
        r"""The frozen step size after warm-up, :math:`\exp(\log\bar h_M)` (:math:`h_0` if nothing was adapted)."""
        return self.initial_step_size if self.count == 0 else math.exp(self.log_step_average)

    def update(self, acceptance: float) -> None:
        """Learn from one warm-up iteration's acceptance statistic (NaN counts as 0)."""
        alpha = 0.0 if not math.isfinite(acceptance) else min(float(acceptance), 1.0)
        self.count += 1
        m = self.count
        eta = 1.0 / (m + self.t0)
        self.error_average = (1.0 - eta) * self.error_average + eta * (self.target - alpha)
        log_step = self.mu - math.sqrt(m) / self.gamma * self.error_average
        self.log_step = min(log_step, math.log(self.max_step_size))
        weight = m ** (-self.kappa)
        self.log_step_average = weight * self.log_step + (1.0 - weight) * self.log_step_average

    def state(self) -> dict[str, float]:
        """Everything needed to continue identically (JSON-serializable; floats round-trip exactly)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> DualAveraging:
        return cls(**state)
