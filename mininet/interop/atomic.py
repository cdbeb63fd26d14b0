"""Files written whole or not at all: into a temp file beside the target, synced, then
renamed over it, so a kill or a full disk never leaves a half-written checkpoint or
weights file (a reader sees the old file or the new one)."""
import contextlib
import glob
import os
import signal
import tempfile
import threading


def temp_prefix(path):
    return f".{os.path.basename(path)}."


def remove_stale_temps(path):
    """Temp files a killed writer of path left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(temp_prefix(path)) + "*.tmp")):
        try:
            os.unlink(stale)
        except OSError:
            pass


def write_atomically(path, write, what):
    """write(f) fills a temp file that then replaces path; an OSError names `what` and
    path, and no temp file is left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    with _sigint_held():
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would differ from open()'s mode
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            raise OSError(f"cannot write {what} {path}: {e.strerror or e}") from None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def _sigint_held():
    """A Ctrl-C (SIGINT) that arrives while a file is written goes to the SIGINT handler
    once the write is over (the file whole, or its temp removed). Raised in the middle,
    inside numpy.savez's zip writer, the KeyboardInterrupt left a member's handle open and
    came out as zipfile's ValueError ("Can't close the ZIP file while there is an open
    writing handle"): a rank stopped by the launcher's Ctrl-C while saving its checkpoint
    exited 2 with that message instead of 130. Only the main thread can set handlers;
    elsewhere, and under a handler that is not a function (ignored), nothing changes."""
    old = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(old):
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            old(signal.SIGINT, caught[0])


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
