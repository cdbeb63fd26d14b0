"""The datasets' files: opened only when they are regular files, read in chunks, and
downloaded into their folder through a temp file, md5-verified, then renamed, so a
folder never holds half a file."""
import hashlib
import os
import stat
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

CHUNK = 1 << 20   # bytes read at a time by read_into


class FetchError(RuntimeError):
    """Every mirror failed; the message lists why."""


def dataset_dir(path, env, name):
    """--data-dir, else $env, else ~/.cache/mininet/<name> (XDG_CACHE_HOME honoured)."""
    if path:
        return Path(path).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mininet" / name


def open_regular(path, error, mode="rb", encoding=None):
    """path opened for reading, or error naming it unless it is a regular file: a device
    such as /dev/zero would be read without end and a FIFO would block. The descriptor
    that is read is the one checked (opened with O_NONBLOCK, so that opening a FIFO does
    not wait for a writer; blocking again once checked): the path cannot be swapped
    between the check and the open. A missing path raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: not a regular file (a folder, device or pipe); put the data "
                        f"file itself there")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding)
    except BaseException:
        os.close(fd)
        raise


def read_into(f, array):
    """Fill array (any dtype, C-contiguous) from the binary stream f, a chunk at a time (no
    copy of the whole); the number of bytes read, short where the stream ended."""
    view, got = memoryview(array.reshape(-1).view(np.uint8)), 0
    while got < len(view) and (n := f.readinto(view[got:got + CHUNK])):
        got += n
    return got


def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name, folder, mirrors, md5, progress=None):
    """folder/name from the first mirror that serves it with the right md5.
    MININET_OFFLINE=1 turns downloads off (the tests set it: they never download)."""
    if os.environ.get("MININET_OFFLINE", "") not in ("", "0"):
        raise FetchError("downloads are off (MININET_OFFLINE is set)")
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + name, timeout=30) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(name, done, total)
            digest = md5sum(tmp)
            if digest != md5:
                raise FetchError(f"checksum mismatch (md5 {digest}, expected {md5})")
            os.replace(tmp, folder / name)
            return folder / name
        except Exception as e:  # try the next mirror
            errors.append(f"{mirror}{name}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise FetchError("; ".join(errors))
