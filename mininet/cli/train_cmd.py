"""`mininet train`: argument checks, the data-parallel launcher, exit codes."""
from typing import Optional

import typer

from ..models.mlp import MODELS
from . import THREADS_HELP, _check_device, _error, _exit_line, _fail, app, err_console


@app.command()
def train(
    dataset: str = typer.Argument("mnist", help="mnist, fashion-mnist (the same format; Debian's dataset-fashion-mnist files are found), cifar10 (ResNet9) or ptb (a word-level language model; any train/valid/test text corpus with --data-dir)."),
    model: Optional[str] = typer.Option(None, help="softmax, mlp (default), resnet or cnn; for cifar10: resnet9; for ptb: rnn, lstm (default) or transformer."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs (default: 10 for cnn, 20 for the others)."),
    batch_size: int = typer.Option(100, min=1, help="Batch size."),
    lr: float = typer.Option(2e-3, help="Learning rate (> 0)."),
    optimizer: str = typer.Option("adam", help="sgd, momentum, adam, adamw, adagrad or rmsprop."),
    weight_decay: float = typer.Option(1e-4, help="Weight decay (>= 0)."),
    schedule: str = typer.Option("cosine", help="Learning-rate schedule per epoch: cosine, step or none."),
    seed: int = typer.Option(0, help="Random seed (init, dropout, shuffling)."),
    data_dir: Optional[str] = typer.Option(None, help="Folder with the four IDX files (else $MININET_DATA for mnist, $MININET_FASHION_DATA or /usr/share/datasets/fashion-mnist for fashion-mnist, else ~/.cache/mininet/<dataset>)."),
    threads: Optional[int] = typer.Option(None, min=1, help=THREADS_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    save: Optional[str] = typer.Option(None, help="Write model + optimizer state here after each epoch (atomically)."),
    resume: Optional[str] = typer.Option(None, help="Continue from a checkpoint written by --save."),
    export_weights: Optional[str] = typer.Option(None, help="After training, write the model's weights here as a safetensors file (mininet.load_file, safetensors.torch.load_file read it)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-epoch metrics as JSON."),
    seq_len: int = typer.Option(35, min=1, help="ptb: tokens per truncated-BPTT window."),
    clip: Optional[float] = typer.Option(0.25, help="ptb: clip the gradient norm to this (0: off)."),
    embedding_size: int = typer.Option(200, min=1, help="ptb: embedding width."),
    hidden_size: int = typer.Option(200, min=1, help="ptb: hidden units per layer."),
    layers: int = typer.Option(2, min=1, help="ptb: recurrent layers."),
    max_lines: Optional[int] = typer.Option(None, min=1, help="ptb: read only the first lines of each file."),
    ranks: Optional[int] = typer.Option(None, min=1, help="Data-parallel over this many MPI ranks on this machine: runs mpirun itself (pip install 'mininet\\[mpi]'). The global batch is --batch-size x ranks."),
    distributed_run: bool = typer.Option(False, "--distributed", help="This process is one rank of `mpirun -n N mininet train ... --distributed` (data-parallel; rank 0 prints and saves)."),
):
    """Train a model on MNIST, Fashion-MNIST (test accuracy) or PTB (perplexity)."""
    _exit_line.on_interrupt = ("interrupted before training started; nothing was written; run "
                               "the same command to start again")
    import math

    from ..data import DataError
    from ..models.train import OPTIMIZERS, SCHEDULES, CheckpointError
    from ..models.train import TrainingDiverged
    from .train import Interrupted, NothingToDo, check_save_path, run
    if dataset not in ("mnist", "fashion-mnist", "cifar10", "ptb"):
        _fail(f"unknown dataset {dataset!r}: choose mnist, fashion-mnist, cifar10 or ptb")
    lm = dataset == "ptb"
    model = model or {"ptb": "lstm", "cifar10": "resnet9"}.get(dataset, "mlp")
    choices = {"ptb": ("rnn", "lstm", "transformer"), "cifar10": ("resnet9",)}.get(dataset,
                                                                                   tuple(MODELS))
    if model not in choices:
        _fail(f"--model must be one of {', '.join(choices)} for {dataset}, got {model!r}")
    if clip is not None and not (math.isfinite(clip) and clip >= 0):
        _fail(f"--clip must be >= 0, got {clip}")
    if not (math.isfinite(lr) and lr > 0):
        _fail(f"--lr must be a positive number, got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail(f"--weight-decay must be >= 0, got {weight_decay}")
    if optimizer not in OPTIMIZERS:
        _fail(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        _fail(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    _check_device(device)
    if save:
        try:
            check_save_path(save)
        except OSError as e:
            _fail(f"--save {save}: {e}")
    if export_weights:
        if lm:
            _fail("--export-weights covers mnist, fashion-mnist and cifar10 so far, not ptb")
        try:
            check_save_path(export_weights)
        except OSError as e:
            _fail(f"--export-weights {export_weights}: {e}")
    epochs = epochs or (10 if model == "cnn" else 20)
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
        if lm:
            from .train_lm import run_lm
            run_lm(model, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir,
                   threads, save, resume, json_out, seq_len, clip, embedding_size, hidden_size,
                   layers, max_lines, device=device)
        else:
            run(model, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads,
                save, resume, json_out, device, schedule, dataset=dataset,
                distributed_run=distributed_run, export_weights=export_weights)
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
    from ..models.train import checkpoint_epoch
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
