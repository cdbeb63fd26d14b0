"""`mininet train`: the flags (a TrainConfig), argument checks, the data-parallel
launcher, exit codes."""
from typing import Optional

import typer

from ..models import registry
from . import THREADS_HELP, _check_device, _error, _exit_line, _fail, app, err_console


def _per_dataset(what):
    """"mnist, fashion-mnist: ...; cifar10: ...; ptb: ..." with what(names) for each."""
    groups = {}
    for dataset in ("mnist", "fashion-mnist", "cifar10", "ptb"):
        groups.setdefault(registry.names(dataset), []).append(dataset)
    return "; ".join(f"{', '.join(ds)}: {what(names)}" for names, ds in groups.items())


def _usual(values):
    """"20; cnn: 10": the most common of values (a dict name -> value), then the others."""
    common = max(set(values.values()), key=list(values.values()).count)
    others = {}
    for name, v in values.items():
        if v != common:
            others.setdefault(v, []).append(name)
    return "; ".join([str(common)] + [f"{', '.join(ns)}: {v}" for v, ns in others.items()])


def _default_of(field):
    return _usual({n: getattr(e, field) for n, e in registry.MODELS.items()})


MODEL_HELP = ("The model, from mininet's model registry (`mininet bench train --help` describes "
              "each). " + _per_dataset(lambda names: ", ".join(names)) + ". Default: "
              + _usual(dict(registry.DEFAULT_MODEL)) + ".")


@app.command()
def train(
    dataset: str = typer.Argument("mnist", help="mnist (MNIST), fashion-mnist (Fashion-MNIST, the same format; Debian's dataset-fashion-mnist files are found), cifar10 (CIFAR-10, the python batches) or ptb (PTB, the Penn Treebank: a word-level language model; any train/valid/test text corpus with --data-dir)."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    epochs: Optional[int] = typer.Option(None, min=1, help=f"Epochs (default: {_default_of('epochs')})."),
    batch_size: Optional[int] = typer.Option(None, min=1, help=f"Batch size (default: the model's: {_default_of('batch_size')}). For ptb: columns of the token stream."),
    lr: float = typer.Option(2e-3, help="Learning rate (> 0)."),
    optimizer: str = typer.Option("adam", help="sgd, momentum, adam, adamw, adagrad or rmsprop."),
    weight_decay: float = typer.Option(1e-4, help="Weight decay (>= 0)."),
    schedule: str = typer.Option("cosine", help="Learning-rate schedule per epoch: cosine, step or none (not ptb)."),
    seed: int = typer.Option(0, help="Random seed (init, dropout, shuffling)."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the dataset's files: MNIST's or Fashion-MNIST's four IDX files, CIFAR-10's cifar-10-batches-py, PTB's (or any corpus's) train/valid/test text. Read only: a folder that is not there is an error, and missing files are not fetched, unless --download. Default: $MININET_DATA (mnist), $MININET_FASHION_DATA or /usr/share/datasets/fashion-mnist, $MININET_CIFAR_DATA, $MININET_PTB_DATA, else ~/.cache/mininet/<dataset>, where missing files are downloaded (md5-verified)."),
    download: bool = typer.Option(False, "--download", help="Fetch missing data files into --data-dir (creating it); without --data-dir they are fetched into the default folder anyway."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    save: Optional[str] = typer.Option(None, help="Write model + optimizer state here after each epoch (atomically; docs/checkpoint-format.md)."),
    resume: Optional[str] = typer.Option(None, help="Continue from a checkpoint written by --save (--json then lists its earlier epochs too)."),
    export_weights: Optional[str] = typer.Option(None, help="After training, write the model's weights here as a safetensors file (mininet.load_file, safetensors.torch.load_file read it)."),
    plot: Optional[str] = typer.Option(None, help="After training, draw loss and accuracy (ptb: perplexity) per epoch into this image file, e.g. out.png."),
    json_out: bool = typer.Option(False, "--json", help="Print per-epoch metrics as JSON."),
    seq_len: int = typer.Option(35, min=1, help="ptb: tokens per truncated-BPTT window."),
    clip: Optional[float] = typer.Option(0.25, help="ptb: clip the gradient norm to this (0: off)."),
    embedding_size: int = typer.Option(200, min=1, help="ptb: embedding width."),
    hidden_size: int = typer.Option(200, min=1, help="ptb: hidden units per layer."),
    layers: int = typer.Option(2, min=1, help="ptb: recurrent layers."),
    max_lines: Optional[int] = typer.Option(None, min=1, help="ptb: read only the first lines of each file."),
    ranks: Optional[int] = typer.Option(None, min=1, help="Data-parallel over this many MPI ranks on this machine: runs mpirun itself (pip install 'mininet-dl\\[mpi]'). The global batch is --batch-size x ranks."),
    precision: str = typer.Option("fp32", help="fp32, or bf16: bfloat16 mixed precision (mininet.autocast: products and convolutions read bf16-rounded inputs and sum in float32; weights, optimizer state and loss stay float32). cpu; not ptb."),
    graph: bool = typer.Option(True, "--graph/--no-graph", help="Capture the training step once as a mininet.KernelGraph and replay its kernels for every full batch (the same updates without the step's Python; a model the capture refuses, such as one that reads a value on the host in forward, trains eagerly). cpu; not with --ranks."),
    distributed_run: bool = typer.Option(False, "--distributed", help="This process is one rank of `mpirun -n N mininet train ... --distributed` (data-parallel; rank 0 prints and saves)."),
):
    """Train a model on MNIST, Fashion-MNIST, CIFAR-10 (test accuracy) or PTB (perplexity)."""
    _exit_line.on_interrupt = ("interrupted before training started; nothing was written; run "
                               "the same command to start again")
    from ..data import DataError
    from ..training import CheckpointError, TrainingDiverged
    from .train import Interrupted, NothingToDo, TrainConfig, check_save_path, run
    try:
        cfg = TrainConfig(
            dataset=dataset, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
            optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, seed=seed,
            data_dir=data_dir, download=download, threads=threads, device=device, save=save,
            resume=resume, json_out=json_out, export_weights=export_weights, plot=plot,
            distributed_run=distributed_run, seq_len=seq_len, clip=clip,
            embedding_size=embedding_size, hidden_size=hidden_size, layers=layers,
            max_lines=max_lines, precision=precision.lower(), graph=graph).checked()
    except ValueError as e:
        _fail(str(e))
    lm = cfg.dataset == "ptb"
    _check_device(device)
    for flag, path in (("--save", save), ("--export-weights", export_weights), ("--plot", plot)):
        if not path:
            continue
        if flag == "--export-weights" and lm:
            _fail("--export-weights covers mnist, fashion-mnist and cifar10 so far, not ptb")
        try:
            check_save_path(path)
        except OSError as e:
            _fail(f"{flag} {path}: {e}")
    if plot:
        _check_plotting(plot)
    if (ranks or 1) > 1 or distributed_run:
        if lm:
            _fail("--ranks/--distributed: data-parallel training covers mnist, fashion-mnist "
                  "and cifar10 so far, not ptb")
        if device != "cpu":
            _fail("--ranks/--distributed: data-parallel training runs on the CPU only so far")
    if (ranks or 1) > 1 and not distributed_run:
        _launch(ranks, save, resume)
    from ..distributed import DistributedError
    try:
        run(cfg)
    except NothingToDo as e:
        err_console.print(str(e))
    except Interrupted as e:
        _interrupted(str(e))
    except (TrainingDiverged, DistributedError) as e:
        _fail_rank(str(e), code=1)
    except CheckpointError as e:
        _fail_rank(f"--resume {e}")
    except (DataError, ValueError, KeyError, OSError) as e:   # DataError: the loaders' errors
        _fail_rank(str(e))
    _finish_ranks()


def _check_plotting(path):
    """--plot fails before training, not after it: a file type it cannot write, or nothing
    to draw with (matplotlib, the `plot` extra)."""
    try:
        from ..benchmark.plot import PLOT_HINT, plot_format
    except ImportError as e:
        _fail(f"--plot {path}: cannot draw plots here ({e})")
    try:
        plot_format(path)
    except ValueError as e:
        _fail(f"--plot {e}")
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        _fail(f"--plot {path}: cannot draw plots here ({PLOT_HINT})")


def _launch(ranks, save, resume):
    """Run this command as `ranks` MPI ranks (they print) and exit as they did. After a Ctrl-C
    rank 0 says what was kept, unless the job had to be ended before the ranks could take
    it, or they did not stop in time: then this process says it."""
    from .launch import LaunchError, relaunch
    from .train import before_training
    try:
        ended = relaunch(ranks)
    except (LaunchError, OSError) as e:
        _fail(str(e))
    if ended.unanswered == "early":
        _error(str(before_training(save, resume)))
    elif ended.unanswered:
        why = {"again": "interrupted again: the ranks were ended at once",
               "overdue": "interrupted, and the ranks did not stop within MININET_DIST_TIMEOUT "
                          "+ 30 s: they were ended"}[ended.unanswered]
        _error(f"{why}; {_kept(save, resume)}")
    elif ended.code == 130:
        _exit_line.printed = True   # rank 0 said what was kept
    raise typer.Exit(ended.code)


def _kept(save, resume):
    """What --save (or --resume) holds after the launcher ended the ranks: read from the file."""
    from ..training import checkpoint_epoch
    from .train import Kept
    kept = Kept(save, resume, (checkpoint_epoch(resume) if resume else None) or 0)
    kept.epoch = checkpoint_epoch(save) if save else None
    return kept.where()


def _finish_ranks():
    """A rank of a data-parallel run meets the others before MPI_Finalize, within
    MININET_DIST_TIMEOUT: a rank that stopped (SIGSTOP, a debugger) or died after its last
    collective makes this one end the job with an error, instead of waiting forever."""
    from .. import distributed
    if not distributed.is_initialized():
        return
    import signal
    try:
        try:
            distributed.finalize()
        except KeyboardInterrupt:   # the launcher's Ctrl-C came after this rank's work: finish
            distributed.finalize()
    except distributed.DistributedError as e:
        _fail_rank(str(e), code=1)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # done: a late Ctrl-C has nothing to stop


def _interrupted(message):
    """Ctrl-C: one line (what was kept, how to go on) and exit 130. In a data-parallel run
    rank 0 alone prints it and every rank finishes MPI cleanly, so mpirun adds no report of
    its own; the ranks of a `--ranks` job then exit 0 and the launcher, which passed the
    Ctrl-C on and waited for them, exits 130."""
    import os
    from .. import distributed
    from .launch import note_answered
    if distributed.rank() == 0:
        _error(message)
        note_answered()   # for the launcher's exit status
    if not distributed.is_initialized():
        raise typer.Exit(130)
    _finish_ranks()
    raise typer.Exit(0 if os.environ.get("MININET_LAUNCHER") == "1" else 130)


def _fail_rank(message, code=2):
    """_fail, and in a data-parallel run end the other ranks too: they would otherwise
    wait for this one in their next collective."""
    from .. import distributed
    if distributed.world_size() > 1:
        if distributed.rank() != 0:
            message = f"rank {distributed.rank()}: {message}"
        _error(message)
        distributed.abort(code)
    _fail(message, code)
