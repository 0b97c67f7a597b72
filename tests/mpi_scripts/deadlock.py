"""A deliberately wrong program: a collective called on rank 0 only. It never returns."""

from mpi4py import MPI

comm = MPI.COMM_WORLD
if comm.rank == 0:
    comm.allreduce(1)  # the other ranks never join: deadlock
comm.Barrier()
print("unreachable", flush=True)
