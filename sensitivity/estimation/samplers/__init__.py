"""Markov-chain Monte Carlo on parameter vectors (docs/theory.md §4.4): pCN, ∞-MALA, ∞-dimensional HMC, HMC.

One small class per kernel, each with one :meth:`~sensitivity.estimation.samplers.base.Kernel.step`;
:func:`~sensitivity.estimation.samplers.driver.sample` runs several chains with warm-up (dual averaging),
on MPI sub-communicators, with committed output and exact resume.
"""

from sensitivity.estimation.samplers.adaptation import DualAveraging
from sensitivity.estimation.samplers.base import DIVERGENCE, Kernel, State, evaluate
from sensitivity.estimation.samplers.driver import sample
from sensitivity.estimation.samplers.hmc import HMC
from sensitivity.estimation.samplers.infinite import InfiniteHMC, InfiniteMALA
from sensitivity.estimation.samplers.pcn import PCN

__all__ = ["DIVERGENCE", "HMC", "PCN", "DualAveraging", "InfiniteHMC", "InfiniteMALA", "Kernel", "State", "evaluate",
           "sample"]
