"""Sphinx extension: one page per demo of ``demos/``, with the figures of a real run.

At ``builder-inited`` every demo named in the configuration value ``demo_pages`` (name -> the
arguments of its small run) starts to run once, serially (one after the other, in a background
thread while Sphinx reads the other pages), as ``python demos/NAME.py ARGS --output DIR``
in a subprocess of its own (a new process group, killed on timeout), where ``DIR`` is
``<doctree dir>/demo_output/NAME`` inside the build directory. A run whose PNG files are newer than
the demo's source is reused. A failing or hung demo fails the build, with the tail of its output.

The directive ``.. demo:: NAME`` (in ``docs/demos/NAME.rst``) then writes the page body: the
module docstring of the demo (reStructuredText), how to run it, the printed output and the PNG
figures of the small run, and its source (``literalinclude``).

The directive ``readme-code`` shows the first ``python`` code block after a heading of the README
(as ``tests/test_readme.py`` extracts it to run it), so the guide shows the code that is tested.
"""

from __future__ import annotations

import ast
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

#: Environment variables of a parent MPI launcher, not passed on to a serial demo run.
_MPI_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_")


def _root(app) -> Path:
    return Path(app.config.demo_pages_root or Path(app.srcdir).parent).resolve()


def _output_dir(app, name: str) -> Path:
    return Path(app.doctreedir).resolve() / "demo_output" / name


def _demo_file(app, name: str) -> Path:
    return _root(app) / "demos" / f"{name}.py"


def _figures(out: Path, name: str) -> list[Path]:
    """The PNG files of a run, the one named after the demo first."""
    return sorted(out.glob("*.png"), key=lambda p: (p.stem != name, p.name))


def _up_to_date(app, name: str) -> bool:
    out = _output_dir(app, name)
    stamp = out / ".demo-pages-done"
    if not stamp.is_file() or stamp.read_text() != " ".join(app.config.demo_pages[name]):
        return False
    figures = _figures(out, name)
    source = _demo_file(app, name).stat().st_mtime
    return bool(figures) and all(p.stat().st_mtime >= source for p in figures)


def _run_demo(app, name: str) -> float:
    out = _output_dir(app, name)
    args = list(app.config.demo_pages[name])
    cmd = [sys.executable, str(_demo_file(app, name)), *args, "--output", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_PREFIXES)}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_root(app)), env.get("PYTHONPATH", "")]))
    out.parent.mkdir(parents=True, exist_ok=True)
    (out / ".demo-pages-done").unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=_root(app), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=app.config.demo_pages_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise ExtensionError(
            f"demo {name} killed after {app.config.demo_pages_timeout:g} s: {shlex.join(cmd)}\n"
            f"{stdout[-3000:]}{stderr[-3000:]}"
        ) from None
    if proc.returncode != 0:
        raise ExtensionError(
            f"demo {name} failed (exit status {proc.returncode}): {shlex.join(cmd)}\n{stdout[-3000:]}{stderr[-3000:]}"
        )
    if not _figures(out, name):
        raise ExtensionError(f"demo {name} wrote no PNG file into {out}")
    # The printed summary, with the build directory replaced by the DIR of the page's command.
    (out / "stdout.txt").write_text(stdout.replace(str(out), "DIR"))
    (out / ".demo-pages-done").write_text(" ".join(args))
    return time.perf_counter() - start


class _DemoRuns:
    """The demo runs of one build: started at ``builder-inited`` in a thread (one demo after the
    other), so that they use the second core while Sphinx imports and reads the other pages; the
    first demo page (or ``env-updated``) waits for them and raises their error, if any."""

    def __init__(self, app):
        self.app, self.error, self.messages = app, None, []
        self.thread = threading.Thread(target=self._run, name="demo_pages", daemon=True)

    def _run(self) -> None:
        try:
            for name in self.app.config.demo_pages:
                if _up_to_date(self.app, name):
                    self.messages.append(f"demo {name}: figures up to date, not rerun")
                else:
                    self.messages.append(f"demo {name}: {_run_demo(self.app, name):.1f} s")
        except Exception as error:  # noqa: BLE001  (any failure: re-raised in the main thread by wait())
            self.error = error

    def wait(self) -> None:
        if self.thread.is_alive() or self.messages or self.error:
            self.thread.join()
            for message in self.messages:
                logger.info(message)
            self.messages = []
            if self.error is not None:
                error, self.error = self.error, None
                raise error if isinstance(error, ExtensionError) else ExtensionError(str(error), error)


def start_demos(app) -> None:
    for name in app.config.demo_pages:
        if not _demo_file(app, name).is_file():
            raise ExtensionError(f"demo_pages: no demo {_demo_file(app, name)}")
    app.demo_pages_runs = _DemoRuns(app)
    app.demo_pages_runs.thread.start()


def wait_for_demos(app, env=None) -> None:
    runs = getattr(app, "demo_pages_runs", None)
    if runs is not None:
        runs.wait()


def wait_before_parallel_read(app, env, docnames) -> None:
    # With -j, pages are read in forked processes, which do not see the runner thread: the demos
    # finish first.
    if app.parallel > 1:
        wait_for_demos(app)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""


class DemoDirective(SphinxDirective):
    """``.. demo:: NAME``: docstring, how to run, output and figures of the small run, source."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        app, config = self.env.app, self.env.config
        if name not in config.demo_pages:
            raise self.error(f"demo {name!r} is not in the configuration value demo_pages")
        wait_for_demos(app)
        source, out = _demo_file(app, name), _output_dir(app, name)
        self.env.note_dependency(str(source))
        here = Path(self.env.doc2path(self.env.docname)).parent

        def rel(path: Path) -> str:  # a path as the page's directives take it
            return Path(os.path.relpath(path, here)).as_posix()

        small = " ".join(config.demo_pages[name])
        # The summary (the docstring's first paragraph) is plain text, not reStructuredText: it may
        # hold e.g. |ψ|², which reST would read as a substitution. The rest is reStructuredText.
        summary, _, body = _docstring(source).partition("\n\n")
        lines = body.splitlines()
        lines += [
            "",
            "Running the demo",
            "----------------",
            "",
            "In the project venv (``source scripts/bootstrap.sh``, see :doc:`/guide`), from the root of the",
            "repository, on two MPI ranks (``--help`` lists the options):",
            "",
            ".. code-block:: bash",
            "",
            f"   mpirun -n 2 python demos/{name}.py --output output/{name}",
            "",
            "The figures below come from the small configuration, run serially while this page was built:",
            "",
            ".. code-block:: bash",
            "",
            f"   python demos/{name}.py {small} --output DIR".replace("  ", " "),
            "",
        ]
        printed = out / "stdout.txt"
        if printed.is_file() and printed.read_text().strip():
            self.env.note_dependency(str(printed))
            lines += ["It printed:", "", f".. literalinclude:: {rel(printed)}", "   :language: text", ""]
        lines += ["Figures", "-------", ""]
        figures = _figures(out, name)
        if not figures:
            raise self.error(f"demo {name}: no figures in {out} (did the run at builder-inited fail?)")
        for png in figures:
            lines += [
                f".. figure:: {rel(png)}",
                "   :width: 100%",
                f"   :alt: {png.name}",
                "",
                f"   ``{png.name}``",
                "",
            ]
        lines += [
            "Source",
            "------",
            "",
            f"``demos/{name}.py``:",
            "",
            f".. literalinclude:: {rel(source)}",
            "   :language: python",
            "   :linenos:",
            "",
        ]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=str(source)), container)
        lead = nodes.paragraph(summary, " ".join(summary.split()))
        self.set_source_info(lead)
        return [lead, *container.children]


class ReadmeCodeDirective(SphinxDirective):
    """``.. readme-code:: HEADING``: the first ``python`` block after ``## HEADING`` in README.md."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = False

    def run(self) -> list[nodes.Node]:
        readme = _root(self.env.app) / "README.md"
        self.env.note_dependency(str(readme))
        text = readme.read_text()
        heading = f"## {self.arguments[0]}\n"
        if heading not in text:
            raise self.error(f"README.md has no heading {heading.strip()!r}")
        section = text[text.index(heading) :]
        if "```python\n" not in section:
            raise self.error(f"README.md: no python block after {heading.strip()!r}")
        code = section[section.index("```python\n") + len("```python\n") :].split("```", 1)[0]
        block = nodes.literal_block(code, code, language="python")
        self.set_source_info(block)
        return [block]


def setup(app):
    app.add_config_value("demo_pages", {}, "env", types=[dict])
    app.add_config_value("demo_pages_root", "", "env", types=[str])
    app.add_config_value("demo_pages_timeout", 300.0, "env", types=[float, int])
    app.add_directive("demo", DemoDirective)
    app.add_directive("readme-code", ReadmeCodeDirective)
    app.connect("builder-inited", start_demos)
    app.connect("env-before-read-docs", wait_before_parallel_read)
    app.connect("env-updated", wait_for_demos)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
