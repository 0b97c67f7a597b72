"""Channel with a circular obstacle (DFG flow-around-a-cylinder geometry), meshed with gmsh.

The channel [0, length] x [0, height] minus the disk of radius ``radius`` about
``center``, refined towards the obstacle. Physical groups: "fluid" (cells, tag 1),
"inlet" (x = 0, tag 2), "outlet" (x = length, tag 3), "walls" (y = 0 and
y = height, tag 4), "obstacle" (the circle, tag 5). The geometry is defined once in
:func:`sensitivity.fem.meshes.channel_obstacle_model`, which
:func:`sensitivity.fem.meshes.build_mesh` also uses to make it in memory.

Regenerate the committed mesh with::

    python meshes/channel_obstacle.py --h 0.04 --output meshes/channel_obstacle.msh

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


def build(path: str | Path = HERE / "channel_obstacle.msh", *, length: float = 2.2, height: float = 0.41,
          center: tuple[float, float] = (0.2, 0.2), radius: float = 0.05, h: float = 0.04,
          h_obstacle: float | None = None, order: int = 1) -> Path:
    """Mesh the channel with gmsh and write it to ``path`` (MSH 4.1, ASCII); returns the path.

    ``h`` is the element size away from the obstacle, ``h_obstacle`` the size on
    it (default ``h / 4``), ``order`` the geometric order of the elements.
    """
    return write_msh("channel_obstacle", path, length=length, height=height, center=center,
                     radius=radius, h=h, h_obstacle=h_obstacle, order=order)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h", type=float, default=0.04, help="element size away from the obstacle")
    parser.add_argument("--h-obstacle", type=float, default=None, help="element size on the obstacle (h/4)")
    parser.add_argument("--length", type=float, default=2.2)
    parser.add_argument("--height", type=float, default=0.41)
    parser.add_argument("--center", type=float, nargs=2, default=(0.2, 0.2), metavar=("X", "Y"))
    parser.add_argument("--radius", type=float, default=0.05)
    parser.add_argument("--order", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--output", "-o", type=Path, default=HERE / "channel_obstacle.msh")
    args = parser.parse_args(argv)
    check_output_file(MPI.COMM_SELF, args.output, what="--output")  # before gmsh runs
    path = build(args.output, length=args.length, height=args.height, center=tuple(args.center),
                 radius=args.radius, h=args.h, h_obstacle=args.h_obstacle, order=args.order)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(exit_on_error(main, comm=MPI.COMM_SELF))
