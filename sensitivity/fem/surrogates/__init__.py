"""Surrogate derivatives (docs/theory.md §1–3): cheap approximations of the exact derivative of a
reduced objective, each with the objective's own interface (:class:`Surrogate`).

- :mod:`.series`: the order-K series, seed (1.5) truncated (K = 0 is the first-order seed 1.6);
- :mod:`.asymptotic`: the long-time form tΠJΠ − ΠJQ^# − Q^#JΠ of a no-flux problem, with the
  group inverse of :mod:`.group_inverse`;
- :mod:`.secular`: the secular surrogate of Schrödinger sensitivities, on the eigenbasis of
  :mod:`.eigenbasis`; :mod:`.state_errors` measures it against the exact tangent.
"""

from sensitivity.fem.surrogates.asymptotic import AsymptoticSurrogate
from sensitivity.fem.surrogates.base import Surrogate
from sensitivity.fem.surrogates.eigenbasis import Eigenbasis
from sensitivity.fem.surrogates.group_inverse import GroupInverse, check_no_flux, conservation_defect
from sensitivity.fem.surrogates.mass import MassOperator, default_mass_options
from sensitivity.fem.surrogates.secular import SecularSurrogate
from sensitivity.fem.surrogates.series import FirstOrderSurrogate, SurrogateGradient
from sensitivity.fem.surrogates.state_errors import SurrogateStateErrors, surrogate_state_errors

__all__ = [
    "AsymptoticSurrogate",
    "Eigenbasis",
    "FirstOrderSurrogate",
    "GroupInverse",
    "MassOperator",
    "SecularSurrogate",
    "Surrogate",
    "SurrogateGradient",
    "SurrogateStateErrors",
    "check_no_flux",
    "conservation_defect",
    "default_mass_options",
    "surrogate_state_errors",
]
