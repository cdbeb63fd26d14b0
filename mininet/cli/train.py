"""`mininet train mnist`: progress bar per epoch, a table per epoch, a summary."""
import json
import os
import random
import shlex
import signal
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import numpy as np

from .. import distributed, get_num_threads, set_num_threads
from ..data import CIFAR10Dataset, DataLoader, DistributedSampler, MNISTDataset
from ..distributed import GradientReducer
from ..init import generator, manual_seed
from ..interop import save_file
from ..models import ResNet9, build_model, fit, load_checkpoint, save_checkpoint
from ..models.train import (CheckpointError, TrainingDiverged, checkpoint_epoch, make_optimizer,
                             make_scheduler)


class NothingToDo(Exception):
    """--resume from a checkpoint that already has --epochs epochs."""


class Interrupted(Exception):
    """Ctrl-C during training; the message names the last checkpoint."""


def check_save_path(path):
    """Fail before training, not after the first epoch, when --save cannot be written:
    create its folder and a temp file there, as the save will."""
    import tempfile
    if os.path.isdir(path):
        raise OSError("is a directory; give a file name such as model.npz")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(f"cannot write in {folder} ({e.strerror or e})") from None


def _resume_command(save):
    """The command line that continues this run from its checkpoint (as the user typed
    it, when `--ranks` re-launched this process under mpirun)."""
    typed = os.environ.get("MININET_COMMAND")
    args = shlex.split(typed) if typed else sys.argv[1:]
    if "--resume" in args:
        i = args.index("--resume")
        del args[i:i + 2]
    return "mininet " + " ".join(shlex.quote(a) for a in args) + f" --resume {shlex.quote(save)}"


class Kept:
    """What --save holds, for the line that an interrupt or a divergence prints: the epoch
    this run last saved, or the one it was saving when it stopped (read back from the file:
    the rename may or may not have happened), and the command that continues."""

    def __init__(self, save, resume, start):
        self.save, self.resume, self.start = save, resume, start
        same = save and resume and os.path.abspath(save) == os.path.abspath(resume)
        self.epoch = start if same else None
        self.saving = None

    def write(self, epoch, write):
        """write() saves epoch to --save; an interrupt during it leaves self.saving set."""
        self.saving = epoch
        write()
        self.epoch, self.saving = epoch, None

    def saved(self):
        if self.saving is not None and checkpoint_epoch(self.save) == self.saving:
            return self.saving
        return self.epoch

    def where(self):
        epoch = self.saved()
        if epoch:
            return f"last checkpoint: {self.save} (epoch {epoch}); continue with: {_resume_command(self.save)}"
        if self.resume:
            lost = f"no epoch finished, so {self.save} was not written; " if self.save else ""
            return (f"{lost}{self.resume} is unchanged (epoch {self.start}); continue with: "
                    f"{_resume_command(self.resume)}")
        if self.save:
            return f"no epoch finished, so {self.save} was not written; run the same command to start again"
        return "no checkpoint was written (use --save PATH to keep finished epochs)"

    def stopped(self, e, done, epochs):
        """Interrupted or TrainingDiverged for exception e, done epochs finished."""
        when = (f"while saving epoch {self.saving}/{epochs}" if self.saving is not None
                else f"during epoch {done + 1}/{epochs}")
        if isinstance(e, KeyboardInterrupt):
            return Interrupted(f"interrupted {when}; {self.where()}")
        return TrainingDiverged(f"{e}; stopped {when}; {self.where()}")


def before_training(save, resume):
    """Interrupted for a Ctrl-C while the data loads or the model is set up."""
    if resume:
        kept = f"{resume} is unchanged; continue with: {_resume_command(resume)}"
    else:
        kept = ("nothing was written" + (f" to {save}" if save else "")
                + "; run the same command to start again")
    return Interrupted(f"interrupted before training started (loading the data, setting up the "
                       f"model); {kept}")


def sigusr1_interrupts():
    """In a rank of a `--ranks` job: SIGUSR1 is a Ctrl-C. The launcher passes the user's
    Ctrl-C on as SIGUSR1, which mpirun forwards to every rank (mpirun answers SIGINT by
    killing the job before any rank can say what it kept). One that came while Python and
    mininet were still loading (launch.RANK_MAIN notes it) is raised now."""
    signal.signal(signal.SIGUSR1, signal.default_int_handler)
    if getattr(sys.modules.get("__main__"), "mininet_sigusr1_pending", None):
        raise KeyboardInterrupt


def run(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads, save,
        resume, json_out, device="cpu", schedule="cosine", console=None, dataset="mnist",
        distributed_run=False, export_weights=None):
    """Train and evaluate. distributed_run: one rank of an mpirun job (data-parallel: each
    rank takes batch_size samples of every global batch; rank 0 alone prints and saves).
    A Ctrl-C is Interrupted, whose message says what --save (or --resume) holds and how to
    go on."""
    if distributed_run:
        distributed.init(threads)
    try:
        if distributed.world_size() > 1:
            sigusr1_interrupts()
        return _run(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir,
                    threads, save, resume, json_out, device, schedule, console, dataset,
                    export_weights)
    except KeyboardInterrupt:   # during training it is Interrupted already
        raise before_training(save, resume) from None


def _run(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads, save,
         resume, json_out, device, schedule, console, dataset, export_weights=None):
    rank, ranks = distributed.rank(), distributed.world_size()
    tty = {"1": True, "0": False}.get(os.environ.get("MININET_TTY", ""))
    console = console or Console(stderr=json_out, quiet=rank != 0, force_terminal=tty)
    if threads:
        set_num_threads(threads)
    manual_seed(seed)
    random.seed(seed)
    progress_dl = _download_progress(console)
    if dataset == "cifar10":
        train_set = CIFAR10Dataset.load("train", data_dir, progress=progress_dl)
        test_set = CIFAR10Dataset.load("test", data_dir, progress=progress_dl)
        model = ResNet9()
    else:
        flatten = model_name != "cnn"
        train_set = MNISTDataset.load("train", data_dir, progress=progress_dl, flatten=flatten,
                                      dataset=dataset)
        test_set = MNISTDataset.load("test", data_dir, progress=progress_dl, flatten=flatten,
                                     dataset=dataset)
        model = build_model(model_name)
    check_sizes(dataset, data_dir, len(train_set), len(test_set))
    if device != "cpu":
        model.to(device)
    distributed.broadcast_parameters(model)   # identical already (same seed); now certainly
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    scheduler = make_scheduler(schedule, opt, epochs)
    start = 0
    if resume:
        header = load_checkpoint(resume, model, opt, {"model": model_name, "optimizer": optimizer,
                                                      "dataset": dataset},
                                 contents=read_on_rank0(resume) if ranks > 1 else None)
        start = header["epoch"]
        if start >= epochs:
            raise NothingToDo(f"nothing to do: {resume} has already trained {start} epochs and "
                              f"--epochs is {epochs}; pass a larger --epochs to go on")
        for _ in range(start):  # the schedule is a function of the epoch
            scheduler and scheduler.step()
        if header.get("rng_state"):
            generator().bit_generator.state = header["rng_state"]
        console.print(f"resumed from {resume} at epoch {start}")
    reducer = None
    if ranks > 1:
        # dropout differs per rank; the shuffle is the samplers' (seed, epoch), shared
        generator().bit_generator.state = np.random.default_rng([seed, rank, start]).bit_generator.state
        train_loader = DataLoader(train_set, batch_size, device=device,
                                  sampler=DistributedSampler(train_set, seed=seed))
        test_loader = DataLoader(test_set, 1000, device=device,
                                 sampler=DistributedSampler(test_set, shuffle=False, pad=False))
        reducer = GradientReducer(model)
        console.print(f"data-parallel over {ranks} ranks x {get_num_threads()} threads: global "
                      f"batch {batch_size * ranks} ({batch_size} per rank)")
    else:
        train_loader = DataLoader(train_set, batch_size, shuffle=True, device=device)
        test_loader = DataLoader(test_set, 1000, device=device)
    meta = {"model": model_name, "optimizer": optimizer, "batch_size": batch_size,
            "dataset": dataset, "ranks": ranks}
    where = f"{ranks} ranks x {get_num_threads()} threads" if ranks > 1 else f"{get_num_threads()} threads"
    table = Table(title=f"mininet train {dataset} --model {model_name} ({len(train_set)} train / "
                        f"{len(test_set)} test, {where})")
    for col in ("epoch", "train loss", "train acc", "test acc", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    history = []
    kept = Kept(save, resume, start)
    with Progress(TextColumn("epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[rate]} samples/s"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=json_out) as progress:
        per_rank = len(train_loader.sampler) if ranks > 1 else len(train_set)
        task = progress.add_task("train", total=per_rank * ranks,
                                 epoch=start + 1, rate="-")

        def on_batch(n):
            progress.advance(task, n * ranks)
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, rate=f"{progress.tasks[task].completed / elapsed:,.0f}")

        def on_epoch(row):
            if save and rank == 0:   # first, so that `history` holds the saved epochs
                kept.write(row["epoch"], lambda: save_checkpoint(
                    save, model, opt, row["epoch"], meta, generator().bit_generator.state))
            history.append(row)
            cells = (str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['train_acc']:.2%}",
                     f"{row['test_acc']:.2%}", f"{row['seconds']:.2f}",
                     f"{len(train_set) / row['seconds']:,.0f}")
            table.add_row(*cells)
            # one line per epoch as it ends, so a log of a piped run shows progress
            progress.console.print(f"epoch {row['epoch']}/{epochs}: train loss {cells[1]}, train acc "
                                   f"{cells[2]}, test acc {cells[3]}, {cells[4]} s"
                                   + (f", saved {save}" if save else ""), highlight=False)
            progress.reset(task, epoch=row["epoch"] + 1, rate="-")

        try:
            fit(model, train_loader, test_loader, opt, epochs, start, on_epoch=on_epoch,
                on_batch=on_batch, scheduler=scheduler, reducer=reducer)
        except (KeyboardInterrupt, TrainingDiverged) as e:
            progress.stop()
            if history and not json_out:
                console.print(table)
            raise kept.stopped(e, history[-1]["epoch"] if history else start, epochs) from None
    if export_weights and rank == 0:
        save_file(model.state_dict(), export_weights, metadata={
            "format": "mininet", "model": model_name, "dataset": dataset,
            "epochs": str(history[-1]["epoch"] if history else start)})
        console.print(f"weights written to {export_weights} (safetensors)", highlight=False)
    result = {"dataset": dataset, "model": model_name, "ranks": ranks,
              "global_batch_size": batch_size * ranks, "epochs": history, "final_test_acc": history[-1]["test_acc"] if history else None}
    if json_out:
        if rank == 0:
            print(json.dumps(result, indent=2))
    else:
        console.print(table)
        if history:
            console.print(f"final test accuracy: [bold]{history[-1]['test_acc']:.2%}[/bold]"
                          + (f"  (checkpoint: {save})" if save else ""))
    return result


def check_sizes(dataset, data_dir, n_train, n_test):
    """An empty training or test set is an error naming its file, before training (the
    epoch would report a loss of 0 and an accuracy of 0%)."""
    for split, n in (("train", n_train), ("test", n_test)):
        if n == 0:
            raise ValueError(f"{split_file(dataset, data_dir, split)} holds 0 "
                             f"{'training' if split == 'train' else 'test'} images "
                             f"({n_train} training, {n_test} test): "
                             f"{'training' if split == 'train' else 'testing'} needs at least 1")


def split_file(dataset, data_dir, split):
    """The file(s) a split of the dataset was read from, for error messages (the loaders'
    own look-ups)."""
    from ..data import cifar, mnist
    if dataset == "cifar10":
        folder = cifar.batches_folder(cifar.data_dir(data_dir))
        names = cifar.TRAIN if split == "train" else cifar.TEST
        return folder / names[0] if len(names) == 1 else f"{folder}/{{{','.join(names)}}}"
    folder = mnist.data_dir(data_dir, dataset)
    name = mnist.FILES[f"{split}_images"]
    return mnist.find_file(folder, name) or folder / name


def read_on_rank0(path):
    """The file's bytes, read by rank 0 and sent to every rank (the other machines need
    not see rank 0's disk); a file rank 0 cannot read is an error on every rank."""
    contents = None
    if distributed.rank() == 0:
        try:
            with open(path, "rb") as f:
                contents = f.read()
        except FileNotFoundError:
            contents = CheckpointError(f"{path}: no such file")
        except OSError as e:
            contents = CheckpointError(f"{path}: cannot read ({e.strerror or e})")
    contents = distributed.broadcast_object(contents, what="sending the --resume checkpoint")
    if isinstance(contents, Exception):
        raise contents
    return contents


def _download_progress(console):
    state = {}

    def progress(name, done, total):
        if name not in state:
            state[name] = True
            console.print(f"downloading {name} ({total / 1e6:.1f} MB)")
    return progress
