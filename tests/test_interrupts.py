"""Ctrl-C and stopped ranks (issue items 15 and 3). A Ctrl-C anywhere - while the data
loads, during an epoch's save, in a `--ranks 2` run - prints one line saying what was kept
and how to go on, and exits 130; a rank that stops after its last checkpoint makes the other
end the job within MININET_DIST_TIMEOUT instead of waiting in MPI_Finalize forever.

The moments are made deterministic with hooks run in the child (`python -c HOOK`): a
function of the CLI is wrapped to write a marker file and sleep at the right point, and
the test sends SIGINT once the marker is there."""
import os
import signal
import subprocess
import sys
import time

import pytest

from mininet.models.train import checkpoint_epoch

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
        before(train_lm, "LanguageModel")
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
    return dict(os.environ, MININET_NUM_THREADS="1", COLUMNS="200", MININET_OFFLINE="1", **extra)


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
def _have_mpi():
    try:
        import mpi4py  # noqa: F401
        from mininet.cli.launch import find_mpirun
        find_mpirun()
        return True
    except Exception:
        return False


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="mpi4py/mpirun missing: pip install '.[mpi]'")


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
