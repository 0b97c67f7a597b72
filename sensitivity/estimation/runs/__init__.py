"""Estimation runs from TOML run files: ``mpirun -n P sensitivity-estimate RUN.toml [--resume]``.

- :mod:`~sensitivity.estimation.runs.config`: the run file's schema, defaults and checks, and the registry of
  problem kinds (:func:`register_problem`);
- :mod:`~sensitivity.estimation.runs.rate_matrix`: ``problem.kind = "rate_matrix"``;
- :mod:`~sensitivity.estimation.runs.fields`: the PDE problems' shared part (a modal field control), and
  :mod:`~sensitivity.estimation.runs.velocity` (``"velocity"``: a flow from a passive scalar) and
  :mod:`~sensitivity.estimation.runs.potential` (``"potential"``: a quantum potential from densities);
- :mod:`~sensitivity.estimation.runs.steps`: the steps of a run (multi-start MAP, Laplace and its HMC mass, the
  chains' starts, the sampler's arguments), shared with ``benchmarks/estimation.py``;
- :mod:`~sensitivity.estimation.runs.cli`: the console entry point (:func:`main`) and :func:`run`.
"""

from sensitivity.estimation.runs.cli import main, run
from sensitivity.estimation.runs.config import (PROBLEMS, Problem, RunConfig, load_config, parse_config,
                                                register_problem, toml_text)
from sensitivity.estimation.runs.fields import FieldProblem
from sensitivity.estimation.runs.potential import PotentialProblem
from sensitivity.estimation.runs.rate_matrix import RateMatrixProblem
from sensitivity.estimation.runs.velocity import VelocityProblem

__all__ = ["PROBLEMS", "FieldProblem", "PotentialProblem", "Problem", "RateMatrixProblem", "RunConfig", "VelocityProblem",
           "load_config", "main", "parse_config", "register_problem", "run", "toml_text"]
