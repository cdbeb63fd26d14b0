"""Ctrl-C and stopped ranks (issue items 15 and 3). A Ctrl-C anywhere - while the data
loads, during an epoch's save, in a `--ranks 2` run - prints one line saying what was kept
and how to go on, and exits 130; a rank that stops after its last checkpoint makes the other
end the job within MININET_DIST_TIMEOUT instead of waiting in MPI_Finalize forever; the
`--ranks` launcher leaves no process of its job running, whenever the Ctrl-C comes and even
when it is killed itself.

The moments are made deterministic with hooks run in the child (`python -c HOOK`): a
function of the CLI is wrapped to write a marker file and sleep at the right point, and
the test sends SIGINT once the marker is there."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from mininet.models.train import checkpoint_epoch
from conftest import CLI_ENV, needs_mpi

HOOK = """if True:
    import importlib, os, sys, time
    marker, where = sys.argv[1], sys.argv[2]
    train = importlib.import_module("mininet.cli.train")
    train_lm = importlib.import_module("mininet.cli.train_lm")

    def pause():
        open(marker, "w").close()
        time.sleep(120)

    def before(module, name):
        real = getattr(module, name)
        def wrapped(*a, **k):
            pause()
            return real(*a, **k)
        setattr(module, name, wrapped)

    if where == "setup":          # the model is being set up (the data is loaded)
        before(train, "build_model")
    elif where == "setup-lm":
        before(train_lm, "build_model")
    else:                         # during epoch 2's save: before or after the file is replaced
        real_save = train.save_checkpoint
        def save_checkpoint(path, model, opt, epoch, *a, **k):
            if epoch == 2 and where == "save-before":
                pause()
            real_save(path, model, opt, epoch, *a, **k)
            if epoch == 2 and where == "save-after":
                pause()
        train.save_checkpoint = save_checkpoint
    sys.argv = ["mininet"] + sys.argv[3:]
    from mininet.cli import main
    main()
"""


def _env(**extra):
    return {**os.environ, **CLI_ENV, **extra}


def interrupt_at(where, tmp_path, *args):
    """Run the CLI with the hook at `where`, Ctrl-C it there; (exit status, stdout, stderr)."""
    marker = tmp_path / "marker"
    p = subprocess.Popen([sys.executable, "-c", HOOK, str(marker), where, *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + 90
        while not marker.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), ("the hook was not reached; exit status", p.poll())
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p.returncode, out, err


def one_line(code, err, *words):
    assert code == 130, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _mnist_args(tiny_mnist, *extra):
    return ("train", "mnist", "--data-dir", tiny_mnist, "--model", "softmax", "--batch-size", "50",
            *extra)


def test_ctrl_c_while_setting_up_says_nothing_was_written_and_exits_130(tiny_mnist, tmp_path):
    """Before: exit 130 with nothing on stderr (typer turned the KeyboardInterrupt into a
    silent exit before the CLI saw it)."""
    ck = tmp_path / "ck.npz"
    code, out, err = interrupt_at("setup", tmp_path, *_mnist_args(tiny_mnist, "--save", ck))
    one_line(code, err, "before training started", "nothing was written", str(ck),
             "run the same command")
    assert not ck.exists()


def test_ctrl_c_while_setting_up_a_resumed_run_names_the_resume_file(tiny_mnist, tmp_path):
    ck = tmp_path / "ck.npz"
    r = subprocess.run([sys.executable, "-m", "mininet.cli", *map(str, _mnist_args(
        tiny_mnist, "--epochs", "1", "--save", ck))], capture_output=True, text=True,
        env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    code, out, err = interrupt_at("setup", tmp_path, *_mnist_args(
        tiny_mnist, "--epochs", "3", "--resume", ck, "--save", ck))
    line = one_line(code, err, "before training started", f"{ck} is unchanged")
    assert line.endswith(f"--resume {ck}"), line
    assert checkpoint_epoch(ck) == 1


def test_ctrl_c_while_loading_a_corpus_exits_130_with_one_line(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("train", "valid", "test"):
        (folder / f"{name}.txt").write_text("the cat sat on the mat\n" * 10)
    code, out, err = interrupt_at("setup-lm", tmp_path, "train", "ptb", "--data-dir", folder,
                                  "--batch-size", "4")
    one_line(code, err, "before training started", "nothing was written")


@pytest.mark.parametrize("where, kept", [("save-before", 1), ("save-after", 2)])
def test_ctrl_c_during_an_epochs_save_names_the_epoch_the_file_holds(tiny_mnist, tmp_path, where,
                                                                     kept):
    """Before: a Ctrl-C during epoch 2's save said `(epoch 2)` while the file held epoch 1."""
    ck = tmp_path / "ck.npz"
    code, out, err = interrupt_at(where, tmp_path, *_mnist_args(tiny_mnist, "--epochs", "5",
                                                                "--save", ck))
    line = one_line(code, err, "while saving epoch 2/5", f"last checkpoint: {ck} (epoch {kept})",
                    f"--resume {ck}")
    assert checkpoint_epoch(ck) == kept, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "marker"]   # no temp files


# several ranks ---------------------------------------------------------------------------------
def _alive(pid):
    """Whether process pid runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_mpi
def test_ctrl_c_of_a_ranks_run_names_the_checkpoint_and_exits_130(tiny_mnist, tmp_path):
    """Before: mpirun took the Ctrl-C, killed the ranks and exited 1 with no message. The
    Ctrl-C goes to the launcher's process group, as a terminal sends it."""
    ck = tmp_path / "ck.npz"
    p = subprocess.Popen([sys.executable, "-m", "mininet.cli", *map(str, _mnist_args(
        tiny_mnist, "--ranks", "2", "--epochs", "1000", "--batch-size", "10", "--save", ck))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=_env(MININET_MPIRUN_ARGS="--mca btl tcp,self"))
    try:
        deadline = time.time() + 120
        while not ck.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ck.exists(), ("no checkpoint", p.poll())
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.terminate()   # the launcher passes SIGTERM on to mpirun, which ends the ranks
            p.communicate(timeout=60)
    line = one_line(p.returncode, err, str(ck), "--ranks 2", f"--resume {ck}")
    assert f"(epoch {checkpoint_epoch(ck)})" in line, line
    assert "train loss" in out


# The launcher's windows, made deterministic by LAUNCH_HOOK in the launcher process: "ranks"
# stops every rank before it can take a Ctrl-C (as one still starting Python would); "popen"
# does too, and also holds the launcher between Popen and its first look at the job until
# the test writes `go`; "take N" lets the ranks take the Ctrl-C, then exit N instead of
# training ("take never": sleep); "stubborn" replaces mpirun by a process and a child of it
# that ignore SIGTERM. They write marks (rank<pid>, took<pid>, launched) in the folder argv[1].
LAUNCH_HOOK = """if True:
    import importlib, os, sys, time
    marks, where = sys.argv[1], sys.argv[2].split()
    launch = importlib.import_module("mininet.cli.launch")
    mark = ("import os, time\\n"
            f"open(os.path.join({marks!r}, 'rank%d' % os.getpid()), 'w').close()\\n")
    if where[0] in ("ranks", "popen"):
        launch.RANK_MAIN = mark + "time.sleep(120)\\n" + launch.RANK_MAIN
    elif where[0] == "stubborn":
        launch.KILL_GRACE = 0.5
        ignore = ("import os, signal\\n"
                  "for s in (signal.SIGTERM, signal.SIGUSR1): signal.signal(s, signal.SIG_IGN)\\n"
                  "os.fork()\\n")
        launch.mpirun_command = lambda *a: [sys.executable, "-c", ignore + mark + "time.sleep(120)"]
    else:
        end = "time.sleep(120)\\n" if where[1] == "never" else f"sys.exit({int(where[1])})\\n"
        launch.RANK_MAIN = launch.RANK_MAIN.replace("from mininet.cli import main\\nmain()\\n",
            mark + "while not mininet_sigusr1_pending: time.sleep(0.01)\\n"
            + mark.replace("'rank%d'", "'took%d'") + end)
    if where[0] == "popen":
        real = launch.subprocess.Popen
        def popen(*a, **k):
            p = real(*a, **k)
            open(os.path.join(marks, "launched"), "w").close()
            while not os.path.exists(os.path.join(marks, "go")):
                time.sleep(0.02)
            return p
        launch.subprocess.Popen = popen
    sys.argv = ["mininet"] + sys.argv[3:]
    from mininet.cli import main
    main()
"""


def _with_env(entry):
    """The pids of live processes whose environment holds entry ('NAME=value')."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if name.isdigit() and entry.encode() in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            pass
    return [pid for pid in found if _alive(pid)]


class Launcher:
    """`mininet train ... --ranks 2` under LAUNCH_HOOK, in a session of its own as a shell
    runs it; every process of its job carries a unique environment entry."""

    def __init__(self, tmp_path, where, *args):
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        job = uuid.uuid4().hex
        self.entry = f"MININET_TEST_JOB={job}"
        self.p = subprocess.Popen(
            [sys.executable, "-c", LAUNCH_HOOK, str(self.marks), where, "train", "mnist",
             "--data-dir", str(tmp_path), "--model", "softmax", "--ranks", "2", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=_env(MININET_MPIRUN_ARGS="--mca btl tcp,self", MININET_TEST_JOB=job))

    def wait_for(self, *names, ranks="rank"):
        """Until the marks `names` are there, and one `ranks`<pid> of each rank."""
        deadline = time.time() + 60
        while time.time() < deadline and self.p.poll() is None:
            have = {p.name for p in self.marks.iterdir()}
            if set(names) <= have and sum(n.startswith(ranks) for n in have) >= 2:
                return
            time.sleep(0.02)
        pytest.fail(f"marks {names} and {ranks}<pid> not reached; launcher status "
                    f"{self.p.poll()}: {self.p.stderr.read() if self.p.poll() is not None else ''}")

    def ctrl_c(self):
        os.killpg(self.p.pid, signal.SIGINT)   # the terminal's Ctrl-C: the whole foreground group

    def finish(self, timeout=60):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err

    def left(self, within=10):
        """What of the job still runs `within` s from now (at once when nothing does)."""
        deadline = time.time() + within
        while (pids := _with_env(self.entry)) and time.time() < deadline:
            time.sleep(0.1)
        return pids

    def close(self):
        """Kill what a failed test left."""
        for pid in [self.p.pid] * (self.p.poll() is None) + _with_env(self.entry):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.p.communicate()


@pytest.fixture
def launcher(tmp_path):
    started = []
    yield lambda *a: started.append(Launcher(tmp_path, *a)) or started[-1]
    for job in started:
        job.close()


@needs_mpi
@pytest.mark.parametrize("where", ["ranks", "popen"])
def test_ctrl_c_before_the_ranks_are_ready_ends_the_job_with_one_line(launcher, tmp_path, where):
    """Before: the launcher passed the Ctrl-C on as SIGUSR1, which killed the ranks that
    had not yet installed their handler: prterun's report, exit 130 and no line of ours;
    a Ctrl-C between Popen and the handlers left the job running in the background."""
    ck = tmp_path / "ck.npz"
    job = launcher(where, "--save", ck)
    job.wait_for(*(["launched"] if where == "popen" else []))
    job.ctrl_c()
    (job.marks / "go").touch()
    code, out, err = job.finish()
    one_line(code, err, "before training started", f"nothing was written to {ck}")
    assert job.left() == []
    assert not ck.exists()


@needs_mpi
def test_a_killed_launcher_takes_its_job_with_it(launcher):
    """Before: mpirun ran in a session of its own and outlived a SIGKILLed launcher."""
    job = launcher("ranks")
    job.wait_for()
    job.p.kill()
    job.finish()
    assert job.left() == []


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(launcher):
    """SIGTERM for the launcher is passed on; what is still running KILL_GRACE s later, in
    mpirun's session, is killed."""
    job = launcher("stubborn")
    job.wait_for()
    job.p.terminate()
    assert job.finish()[0] == 128 + signal.SIGTERM
    assert job.left() == []


@needs_mpi
@pytest.mark.parametrize("status, code", [(3, 3), (0, 0)])
def test_the_launcher_exits_with_the_ranks_status_unless_rank_0_took_the_ctrl_c(launcher, status,
                                                                                code):
    """Ranks that fail after the Ctrl-C (3) are a failure, not an interrupt (before: 130);
    ranks that exit 0 without rank 0 having said what was kept had already finished."""
    job = launcher(f"take {status}")
    job.wait_for()
    job.ctrl_c()
    assert job.finish()[0] == code
    assert job.left() == []


@needs_mpi
def test_a_second_ctrl_c_ends_the_ranks_at_once_with_one_line(launcher, tmp_path):
    ck = tmp_path / "ck.npz"
    job = launcher("take never", "--save", ck)
    job.wait_for()
    job.ctrl_c()
    job.wait_for(ranks="took")   # both ranks took the first; they would not stop
    job.ctrl_c()
    code, out, err = job.finish()
    one_line(code, err, "interrupted again", "ended at once", f"{ck} was not written")
    assert job.left() == []


STOP_AFTER_RUN = """if True:
    import importlib, os, signal, sys
    outdir = sys.argv[1]
    train = importlib.import_module("mininet.cli.train")
    real = train.run

    def run(*a, **k):
        result = real(*a, **k)
        from mininet import distributed
        with open(os.path.join(outdir, f"pid{distributed.rank()}"), "w") as f:
            f.write(str(os.getpid()))
        if distributed.rank() == 1:   # stopped after its last checkpoint and collective
            os.kill(os.getpid(), signal.SIGSTOP)
        return result
    train.run = run
    sys.argv = ["mininet"] + sys.argv[2:]
    from mininet.cli import main
    main()
"""


@needs_mpi
def test_a_rank_stopped_after_the_last_checkpoint_ends_the_job_in_time(tiny_mnist, tmp_path):
    """Before: rank 0 waited in MPI_Finalize forever, whatever MININET_DIST_TIMEOUT said."""
    from mininet.cli.launch import mpirun_prefix
    ck = tmp_path / "ck.npz"
    cmd = mpirun_prefix(2) + ["--mca", "btl", "tcp,self", sys.executable, "-c", STOP_AFTER_RUN,
                              str(tmp_path), *map(str, _mnist_args(tiny_mnist, "--epochs", "1",
                                                                   "--save", ck)), "--distributed"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(MININET_DIST_TIMEOUT="5"))
    try:
        out, err = p.communicate(timeout=60)
    finally:
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)
                if (tmp_path / f"pid{r}").exists()]
        if p.poll() is None:
            p.kill()
            p.communicate()
        for pid in pids:      # the ranks this test started, should the fix fail
            deadline = time.time() + 10
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"rank process {pid} was left running")
    assert p.returncode != 0, (out, err)
    assert time.perf_counter() - t0 < 45
    assert "before MPI_Finalize) did not complete within 5 s" in err, err
    assert checkpoint_epoch(ck) == 1
