"""`mininet train mnist|fashion-mnist|cifar10`: a TrainConfig in, a progress bar during
each epoch, one line per finished epoch, a summary (or JSON) out."""
import dataclasses
import json
import math
import os
import random
import shlex
import signal
import sys
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import numpy as np

from .. import distributed, get_num_threads, set_num_threads
from ..backend.device import get_device
from ..data import CIFAR10Dataset, DataError, DataLoader, DistributedSampler, MNISTDataset
from ..distributed import GradientReducer
from ..init import generator, manual_seed
from ..interop import save_file
from ..models import registry
from ..models.registry import build as build_model
from ..training import (OPTIMIZERS, SCHEDULES, CheckpointError, TrainingDiverged,
                        checkpoint_epoch, fit, load_checkpoint, make_optimizer, make_scheduler,
                        save_checkpoint)

# the datasets `mininet train` takes, as their authors write them
DATASETS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
            "ptb": "PTB"}


@dataclasses.dataclass
class TrainConfig:
    """What `mininet train` runs: one field per flag (json_out is --json). None for model,
    epochs and batch_size: the registry's default for the dataset and model. data_dir None:
    the default folder (created and filled by a download when files are missing); a
    data_dir the user names is read only, unless download is set. The ptb fields (seq_len
    to max_lines) size and feed the language model."""
    dataset: str = "mnist"
    model: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    seed: int = 0
    data_dir: Optional[str] = None
    download: bool = False
    threads: Optional[int] = None
    device: str = "cpu"
    save: Optional[str] = None
    resume: Optional[str] = None
    json_out: bool = False
    export_weights: Optional[str] = None
    plot: Optional[str] = None
    distributed_run: bool = False
    seq_len: int = 35
    clip: Optional[float] = 0.25
    embedding_size: int = 200
    hidden_size: int = 200
    layers: int = 2
    max_lines: Optional[int] = None
    precision: str = "fp32"   # or "bf16": forward and backward under mininet.autocast
    graph: bool = True        # replay the step as a KernelGraph (train_epoch's graph)

    def checked(self):
        """A copy with the model's canonical name and the defaults filled in; ValueError
        naming the flag for a value out of range."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: choose "
                             f"{', '.join(list(DATASETS)[:-1])} or {list(DATASETS)[-1]}")
        name = self.model or registry.DEFAULT_MODEL[self.dataset]
        choices = registry.names(self.dataset)
        entry = registry.MODELS.get(registry.ALIASES.get(name, name))
        if entry is None or entry.name not in choices:
            raise ValueError(f"--model must be one of {', '.join(choices)} for {self.dataset}, "
                             f"got {name!r}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip >= 0):
            raise ValueError(f"--clip must be >= 0, got {self.clip}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.precision == "bf16" and (self.device != "cpu" or self.dataset == "ptb"):
            raise ValueError("--precision bf16 covers mnist, fashion-mnist and cifar10 on the "
                             "cpu so far")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--seq-len", self.seq_len), ("--embedding-size", self.embedding_size),
                            ("--hidden-size", self.hidden_size), ("--layers", self.layers)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        return dataclasses.replace(self, model=entry.name, epochs=self.epochs or entry.epochs,
                                   batch_size=self.batch_size or entry.batch_size)


def threads_phrase(n):
    """"1 thread", "4 threads"."""
    return f"{n} thread" + ("" if n == 1 else "s")


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


def run(config, console=None):
    """Train and evaluate what config (a TrainConfig) says. config.distributed_run: one rank
    of an mpirun job (data-parallel: each rank takes batch_size samples of every global
    batch; rank 0 alone prints and saves). A Ctrl-C is Interrupted, whose message says
    what --save (or --resume) holds and how to go on. Returns the --json result."""
    cfg = config.checked()
    if cfg.dataset == "ptb":
        from .train_lm import run_lm
        return run_lm(cfg, console)
    if cfg.distributed_run:
        distributed.init(cfg.threads)
    try:
        if distributed.world_size() > 1:
            sigusr1_interrupts()
        return _run(cfg, console)
    except KeyboardInterrupt:   # during training it is Interrupted already
        raise before_training(cfg.save, cfg.resume) from None


def setup(cfg, console=None):
    """Threads and seeds set; the console: the one given, else one on stderr under --json
    (stdout then holds the JSON alone), quiet on every rank but 0."""
    if cfg.threads:
        set_num_threads(cfg.threads)
    manual_seed(cfg.seed)
    random.seed(cfg.seed)
    tty = {"1": True, "0": False}.get(os.environ.get("MININET_TTY", ""))
    return console or Console(stderr=cfg.json_out, quiet=distributed.rank() != 0,
                              force_terminal=tty)


def check_data_dir(dataset, data_dir, download):
    """A --data-dir the user named is read, not created or filled, unless --download: a
    folder that is not there is an error (before, a typo made a new folder and downloaded
    into it). Missing files in a folder that is there are the loaders' errors."""
    if data_dir is None or download or os.path.isdir(os.path.expanduser(data_dir)):
        return
    raise DataError(f"no {DATASETS[dataset]} files in {data_dir} (there is no such folder); "
                    f"pass --download to fetch them there")


def downloads(cfg):
    """Whether missing data files may be fetched: into the default folder, or with --download."""
    return cfg.data_dir is None or cfg.download


def _load_images(cfg, entry, progress):
    """(train set, test set) of an image dataset, shaped for the model's input."""
    check_data_dir(cfg.dataset, cfg.data_dir, cfg.download)
    kw = dict(download=downloads(cfg), progress=progress)
    if cfg.dataset == "cifar10":
        return tuple(CIFAR10Dataset.load(s, cfg.data_dir, **kw) for s in ("train", "test"))
    return tuple(MNISTDataset.load(s, cfg.data_dir, flatten=len(entry.input_shape) == 1,
                                   dataset=cfg.dataset, **kw) for s in ("train", "test"))


def resume_from(cfg, model, opt, expect, contents=None):
    """(header, history so far) from --resume, model and opt loaded; NothingToDo when it
    holds every epoch already."""
    header = load_checkpoint(cfg.resume, model, opt, expect, contents=contents)
    start = header["epoch"]
    if start >= cfg.epochs:
        raise NothingToDo(f"nothing to do: {cfg.resume} has already trained {start} epochs and "
                          f"--epochs is {cfg.epochs}; pass a larger --epochs to go on")
    return header, [row for row in header["history"] if row["epoch"] <= start]


def _run(cfg, console=None):
    rank, ranks = distributed.rank(), distributed.world_size()
    console = setup(cfg, console)
    entry = registry.get(cfg.model)
    train_set, test_set = _load_images(cfg, entry, _download_progress(console))
    check_sizes(cfg.dataset, cfg.data_dir, len(train_set), len(test_set))
    model = build_model(cfg.model)
    if cfg.device != "cpu":
        model.to(cfg.device)
    distributed.broadcast_parameters(model)   # identical already (same seed); now certainly
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(cfg.schedule, opt, cfg.epochs)
    start, history = 0, []
    if cfg.resume:
        header, history = resume_from(
            cfg, model, opt, {"model": cfg.model, "optimizer": cfg.optimizer,
                              "dataset": cfg.dataset},
            contents=read_on_rank0(cfg.resume) if ranks > 1 else None)
        start = header["epoch"]
        for _ in range(start):  # the schedule is a function of the epoch
            scheduler and scheduler.step()
        if header.get("rng_state"):
            generator().bit_generator.state = header["rng_state"]
        console.print(f"resumed from {cfg.resume} at epoch {start}")
    train_loader, test_loader, reducer = _loaders(cfg, model, train_set, test_set, start, console)
    meta = {"model": cfg.model, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
            "dataset": cfg.dataset, "ranks": ranks}
    where = (f"{ranks} ranks x {threads_phrase(get_num_threads())}" if ranks > 1
             else threads_phrase(get_num_threads()))
    if cfg.device != "cpu":   # the GPU does the work: name it, not the CPU threads
        gpu = repr(get_device(cfg.device))
        where = f"{ranks} ranks x {gpu}" if ranks > 1 else gpu
    console.print(f"mininet train {cfg.dataset} --model {cfg.model} ({len(train_set)} train / "
                  f"{len(test_set)} test, {where})", highlight=False)
    kept = Kept(cfg.save, cfg.resume, start)
    epochs = cfg.epochs
    with Progress(TextColumn("epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[rate]} samples/s"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=cfg.json_out or not console.is_terminal) as progress:
        per_rank = len(train_loader.sampler) if ranks > 1 else len(train_set)
        task = progress.add_task("train", total=per_rank * ranks, epoch=start + 1, rate="-")

        def on_batch(n):
            progress.advance(task, n * ranks)
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, rate=f"{progress.tasks[task].completed / elapsed:,.0f}")

        def on_epoch(row):
            if cfg.save and rank == 0:   # first, so that `history` holds the saved epochs
                kept.write(row["epoch"], lambda: save_checkpoint(
                    cfg.save, model, opt, row["epoch"], meta, generator().bit_generator.state,
                    history=history + [row]))
            history.append(row)
            # one line per epoch as it ends (so a log of a piped run shows progress), and
            # nothing else per epoch: the summary does not repeat them
            progress.console.print(
                f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, train acc "
                f"{row['train_acc']:.2%}, test acc {row['test_acc']:.2%}, {row['seconds']:.2f} s, "
                f"{len(train_set) / row['seconds']:,.0f} samples/s"
                + (f", saved {cfg.save}" if cfg.save else ""), highlight=False, soft_wrap=True)
            progress.reset(task, epoch=row["epoch"] + 1, rate="-")

        try:
            fit(model, train_loader, test_loader, opt, epochs, start, on_epoch=on_epoch,
                on_batch=on_batch, scheduler=scheduler, reducer=reducer,
                precision=None if cfg.precision == "fp32" else cfg.precision,
                graph=cfg.graph)
        except (KeyboardInterrupt, TrainingDiverged) as e:
            progress.stop()
            raise kept.stopped(e, history[-1]["epoch"] if history else start, epochs) from None
    if cfg.export_weights and rank == 0:
        save_file(model.state_dict(), cfg.export_weights, metadata={
            "format": "mininet", "model": cfg.model, "dataset": cfg.dataset,
            "epochs": str(history[-1]["epoch"] if history else start)})
        console.print(f"weights written to {cfg.export_weights} (safetensors)", highlight=False)
    result = {"dataset": cfg.dataset, "model": cfg.model, "ranks": ranks,
              "global_batch_size": cfg.batch_size * ranks, "epochs": history,
              "final_test_acc": history[-1]["test_acc"] if history else None}
    if rank == 0:
        finish(cfg, console, result, [plot_row(r) for r in history], "accuracy",
               f"final test accuracy: [bold]{history[-1]['test_acc']:.2%}[/bold]"
               + (f"  (checkpoint: {cfg.save})" if cfg.save else ""))
    return result


def _loaders(cfg, model, train_set, test_set, start, console):
    """(train loader, test loader, gradient reducer or None): each rank's shard in a
    data-parallel run, where dropout differs per rank and the shuffle is the samplers'
    (seed, epoch), shared."""
    ranks = distributed.world_size()
    if ranks == 1:
        return (DataLoader(train_set, cfg.batch_size, shuffle=True, device=cfg.device),
                DataLoader(test_set, 1000, device=cfg.device), None)
    generator().bit_generator.state = np.random.default_rng(
        [cfg.seed, distributed.rank(), start]).bit_generator.state
    train_loader = DataLoader(train_set, cfg.batch_size, device=cfg.device,
                              sampler=DistributedSampler(train_set, seed=cfg.seed))
    test_loader = DataLoader(test_set, 1000, device=cfg.device,
                             sampler=DistributedSampler(test_set, shuffle=False, pad=False))
    console.print(f"data-parallel over {ranks} ranks x {threads_phrase(get_num_threads())}: "
                  f"global batch {cfg.batch_size * ranks} ({cfg.batch_size} per rank)",
                  highlight=False)
    return train_loader, test_loader, GradientReducer(model)


def plot_row(row):
    """A history row as plot_training takes it."""
    return {k: row.get(k) for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")}


def finish(cfg, console, result, plot_history, metric, summary):
    """The --json document or the summary line, then the --plot figure."""
    if cfg.json_out:
        print(json.dumps(result, indent=2))
    elif result["epochs"]:
        console.print(summary)
    if cfg.plot:
        try:
            from ..benchmark.plot import plot_training
            plot_training(plot_history, cfg.plot, metric=metric)
        except ImportError as e:   # trained: say why there is no plot
            raise OSError(f"--plot {cfg.plot}: cannot draw plots here ({e})") from None
        except (OSError, ValueError) as e:
            raise OSError(f"--plot {cfg.plot}: {e}") from None
        console.print(f"plot written to {cfg.plot}", highlight=False)


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
