"""Unit square [0, 1]^2 with a uniform element size, meshed with gmsh.

Physical groups: "domain" (cells, tag 1), "left" (x = 0, tag 2), "right" (x = 1,
tag 3), "bottom" (y = 0, tag 4), "top" (y = 1, tag 5). The geometry is defined
once in :func:`sensitivity.fem.meshes.unit_square_model`, which
:func:`sensitivity.fem.meshes.build_mesh` also uses to make it in memory.

Regenerate the committed mesh with::

    python meshes/unit_square.py --h 0.1 --output meshes/unit_square.msh

The output is deterministic (gmsh on one thread, fixed algorithm and seed) and
written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sensitivity.fem.meshes import write_msh
from sensitivity.io import check_output_file
from sensitivity.parallel import exit_on_error

from mpi4py import MPI

HERE = Path(__file__).resolve().parent


def build(path: str | Path = HERE / "unit_square.msh", *, h: float = 0.1, order: int = 1) -> Path:
    """Mesh the unit square with gmsh and write it to ``path`` (MSH 4.1, ASCII); returns the path."""
    return write_msh("unit_square", path, h=h, order=order)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h", type=float, default=0.1, help="element size")
    parser.add_argument("--order", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--output", "-o", type=Path, default=HERE / "unit_square.msh")
    args = parser.parse_args(argv)
    check_output_file(MPI.COMM_SELF, args.output, what="--output")  # before gmsh runs
    print(f"wrote {build(args.output, h=args.h, order=args.order)}")


if __name__ == "__main__":
    sys.exit(exit_on_error(main, comm=MPI.COMM_SELF))
