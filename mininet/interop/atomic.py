"""Files written whole or not at all: into a temp file beside the target, synced, then
renamed over it, so a kill or a full disk never leaves a half-written checkpoint or
weights file (a reader sees the old file or the new one)."""
import glob
import os
import tempfile


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


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
