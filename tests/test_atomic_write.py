"""mininet.interop.atomic.write_atomically under a Ctrl-C: the write finishes (a numpy.savez
checkpoint interrupted mid-zip came out as zipfile's ValueError, exit 2), then the
interrupt is raised as before."""
import signal
import threading

import numpy as np
import pytest

from mininet.interop.atomic import write_atomically


def test_a_ctrl_c_during_the_write_comes_after_the_whole_file(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, lambda f: (np.savez(f, a=np.arange(1000)),
                                          signal.raise_signal(signal.SIGINT),
                                          f.write(b"")), "checkpoint")
    with np.load(path) as z:   # written whole, then the interrupt
        np.testing.assert_array_equal(z["a"], np.arange(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_write_still_raises_its_error_and_the_held_interrupt_after(tmp_path):
    def fail(f):
        signal.raise_signal(signal.SIGINT)
        raise OSError(28, "No space left on device")
    with pytest.raises(KeyboardInterrupt) as info:
        write_atomically(tmp_path / "w.npz", fail, "weights")
    assert "cannot write weights" in str(info.value.__context__)
    assert list(tmp_path.iterdir()) == []


def test_other_threads_and_an_ignored_sigint_write_as_before(tmp_path):
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        write_atomically(tmp_path / "a.npz", lambda f: (np.savez(f, a=np.ones(2)),
                                                        signal.raise_signal(signal.SIGINT)),
                         "checkpoint")
    finally:
        signal.signal(signal.SIGINT, old)
    errors = []
    t = threading.Thread(target=lambda: _write_or_record(tmp_path / "b.npz", errors))
    t.start()
    t.join()
    assert errors == [] and (tmp_path / "a.npz").exists() and (tmp_path / "b.npz").exists()


def _write_or_record(path, errors):
    try:
        write_atomically(path, lambda f: np.savez(f, b=np.zeros(3)), "checkpoint")
    except Exception as e:   # noqa: BLE001 (recorded for the main thread's assertion)
        errors.append(e)
