"""The Sphinx site builds with warnings as errors and has every page it promises.

``python -m sphinx -W --keep-going -b html docs BUILD`` in a subprocess under a timeout: the theory
page, the user guide, one API page per subpackage (autodoc from the NumPy-style docstrings) and one
page per demo, whose figures the build makes by running the demo in its small configuration
(``docs/_ext/demo_pages.py``). Serial only: the build launches its own processes.
"""

from __future__ import annotations

import re
import sys
import time
from html import unescape
from pathlib import Path

import pytest
from mpi4py import MPI

from tests import mpi_harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="launches its own processes; serial only"),
]

API_PAGES = ["dense", "fem", "estimation", "verification", "validation", "parallel", "io"]
DEMOS = sorted(p.stem for p in (mpi_harness.ROOT / "demos").glob("*.py"))

#: Seconds the whole build may take (about 1.5 minutes on 2 cores, most of it the six demo runs).
TIMEOUT = 600.0


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path_factory.mktemp("docs") / "html"
    start = time.perf_counter()
    result = mpi_harness.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(mpi_harness.ROOT / "docs"), str(out)],
        timeout=TIMEOUT,
    )
    print(f"sphinx build: {time.perf_counter() - start:.1f} s")
    mpi_harness.check(result)
    return out


def _body(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _text(html: str) -> str:
    """The text of an HTML page (highlighted code is split into spans)."""
    return unescape(re.sub(r"<[^>]*>", "", html))


def test_demos_are_six():
    assert DEMOS == sorted(
        [
            "velocity_sensitivity",
            "surrogate_vs_adjoint",
            "potential_estimation",
            "rate_matrix_asymptotics",
            "skew_hermitian_surrogates",
            "random_rate_matrix_spectra",
        ]
    )


def test_the_site_has_every_page(site):
    pages = [
        "index",
        "theory",
        "guide",
        "api/index",
        "demos/index",
        *(f"api/{name}" for name in API_PAGES),
        *(f"demos/{name}" for name in DEMOS),
    ]
    missing = [p for p in pages if not (site / f"{p}.html").is_file()]
    assert not missing, missing
    index = _body(site / "index.html")
    for page in ("theory", "guide", "demos/index", "api/index"):
        assert f'href="{page}.html"' in index, page


def test_theory_renders_its_math_and_test_references(site):
    theory = _body(site / "theory.html")
    assert theory.count('class="math notranslate nohighlight"') > 100
    assert "tests/test_" in theory and "::" in theory
    text = re.sub(r'<(span|div) class="math notranslate nohighlight">.*?</\1>', "", theory, flags=re.DOTALL)
    assert "$" not in _text(text), "unrendered $...$ math on the theory page"


def test_api_pages_document_the_public_names(site):
    for name in API_PAGES:
        html = _body(site / "api" / f"{name}.html")
        assert f'id="sensitivity.{name}.' in html, f"api/{name}: no object documented"
    assert 'id="sensitivity.estimation.find_map"' in _body(site / "api" / "estimation.html")
    assert 'id="sensitivity.dense.expm_frechet"' in _body(site / "api" / "dense.html")
    assert 'id="sensitivity.fem.ReducedFunctional"' in _body(site / "api" / "fem.html")
    assert 'id="sensitivity.verification.taylor_test"' in _body(site / "api" / "verification.html")


@pytest.mark.parametrize("name", DEMOS)
def test_demo_page_has_its_source_and_figures(site, name):
    page = site / "demos" / f"{name}.html"
    html = _body(page)
    images = re.findall(r'<img [^>]*src="([^"]+\.png)"', html)
    assert images, f"demos/{name}: no figure"
    for src in images:
        figure = (page.parent / src).resolve()
        assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    text = _text(html)
    assert f"mpirun -n 2 python demos/{name}.py --output" in text
    assert 'class="highlight-python' in html and "def main(" in text, f"demos/{name}: no source listing"


def test_guide_covers_install_mpi_container_estimation_benchmarks(site):
    text = _text(_body(site / "guide.html"))
    for needle in (
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
        "source scripts/bootstrap.sh",
        "mpirun -n",
        "docker build -f docker/Dockerfile -t sensitivity .",
        "docker run",
        "bash docker/test.sh",
        "find_map",
        "LaplaceApproximation",
        "benchmarks/frechet.py",
    ):
        assert needle in text, needle
