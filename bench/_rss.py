"""Peak resident memory for the bench/*memory*.py scripts (each run in a process of its own)."""
import resource


def peak_mib():
    """This process's peak RSS so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record_after(module, name, peaks):
    """Wrap module.name so each call appends peak_mib() once it has returned (wrap the
    evaluation to get one figure per epoch)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        peaks.append(peak_mib())
        return out
    setattr(module, name, wrapped)


def report(peaks):
    for i, mb in enumerate(peaks, 1):
        print(f"epoch {i}: peak RSS {mb:.1f} MiB")
    print(f"growth epoch 2 -> {len(peaks)}: {peaks[-1] - peaks[1]:+.1f} MiB")
