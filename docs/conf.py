"""Sphinx configuration of the sensitivity documentation.

Build with ``python -m sphinx -W --keep-going -b html docs BUILD`` from the repository root (the
test ``tests/test_docs_build.py`` does). Building the demo pages runs every demo of ``demos/`` once,
serially, in its small configuration; the figures are written into the build directory (see
``docs/_ext/demo_pages.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package, also when it is not installed
sys.path.insert(0, str(DOCS / "_ext"))  # the demo-page extension
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import sensitivity

project = "sensitivity"
author = "the sensitivity developers"
copyright = "the sensitivity developers"
version = release = sensitivity.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "demo_pages",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# MyST: the theory page writes $...$, $$...$$ and amsmath environments.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# autodoc: every subpackage page documents the names of its package's ``__all__`` (re-exported from
# the submodules), so each object is described once, under its public name.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True

# The docstrings are NumPy style.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # "Attributes" sections as :ivar: fields, not duplicate attribute entries
napoleon_use_rtype = False
napoleon_preprocess_types = False

# Cross-references to objects the site does not document (NumPy, PETSc, DOLFINx types, private
# submodules) stay plain text instead of warnings.
nitpicky = False

html_theme = "alabaster"
html_title = f"sensitivity {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Sensitivities of matrix exponentials and time-dependent PDEs",
    "page_width": "1100px",
}

# Demo pages (docs/_ext/demo_pages.py): every demo runs once per build (reused when its figures are
# newer than its source), serially, with these arguments (the small configurations of
# tests/test_demos.py; 6-15 s each on 2 cores, about a minute in all), its files in the build directory.
demo_pages = {
    "velocity_sensitivity": ["--small"],
    "surrogate_vs_adjoint": ["--small"],
    "potential_estimation": ["--small"],
    "rate_matrix_asymptotics": ["--small"],
    "skew_hermitian_surrogates": ["--small"],
    "random_rate_matrix_spectra": ["--small"],
}
demo_pages_root = str(ROOT)
demo_pages_timeout = 300.0
