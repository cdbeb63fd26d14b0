"""Downloads for the datasets: each file fetched into its folder through a temp file,
md5-verified, then renamed, so a folder never holds half a file."""
import hashlib
import os
import stat
import tempfile
import urllib.request
from pathlib import Path


class FetchError(RuntimeError):
    """Every mirror failed; the message lists why."""


def dataset_dir(path, env, name):
    """--data-dir, else $env, else ~/.cache/mininet/<name> (XDG_CACHE_HOME honoured)."""
    if path:
        return Path(path).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mininet" / name


def check_regular_file(path, error):
    """Raise error, naming path, unless it is a regular file: a device such as /dev/zero
    would be read without end and a FIFO would block. A missing path raises OSError."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise error(f"{path}: not a regular file (a folder, device or pipe); put the data "
                    f"file itself there")


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
