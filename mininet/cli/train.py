"""`mininet train mnist`: progress bar per epoch, a table per epoch, a summary."""
import json
import random

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import get_num_threads, set_num_threads
from ..data import DataLoader, MNISTDataset
from ..init import generator, manual_seed
from ..models import build_model, fit, load_checkpoint, save_checkpoint
from ..models.train import make_optimizer, make_scheduler


def run(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads, save,
        resume, json_out, device="cpu", schedule="cosine", console=None):
    console = console or Console(stderr=json_out)
    if threads:
        set_num_threads(threads)
    manual_seed(seed)
    random.seed(seed)
    flatten = model_name != "cnn"
    progress_dl = _download_progress(console)
    train_set = MNISTDataset.load("train", data_dir, progress=progress_dl, flatten=flatten)
    test_set = MNISTDataset.load("test", data_dir, progress=progress_dl, flatten=flatten)
    model = build_model(model_name)
    if device != "cpu":
        model.to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    scheduler = make_scheduler(schedule, opt, epochs)
    start = 0
    if resume:
        header = load_checkpoint(resume, model, opt)
        start = header["epoch"]
        for _ in range(start):  # the schedule is a function of the epoch
            scheduler and scheduler.step()
        if header.get("rng_state"):
            generator().bit_generator.state = header["rng_state"]
        console.print(f"resumed from {resume} at epoch {start}")
    train_loader = DataLoader(train_set, batch_size, shuffle=True, device=device)
    test_loader = DataLoader(test_set, 1000, device=device)
    meta = {"model": model_name, "optimizer": optimizer, "batch_size": batch_size}

    table = Table(title=f"mininet train mnist --model {model_name} ({len(train_set)} train / "
                        f"{len(test_set)} test, {get_num_threads()} threads)")
    for col in ("epoch", "train loss", "train acc", "test acc", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    history = []
    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]} samples/s"), TimeElapsedColumn(),
                  console=console, transient=True, disable=json_out) as progress:
        task = progress.add_task("train", total=len(train_set), epoch=start + 1, rate="-")

        def on_batch(n):
            progress.advance(task, n)
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, rate=f"{progress.tasks[task].completed / elapsed:,.0f}")

        def on_epoch(row):
            history.append(row)
            table.add_row(str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['train_acc']:.2%}",
                          f"{row['test_acc']:.2%}", f"{row['seconds']:.1f}",
                          f"{len(train_set) / row['seconds']:,.0f}")
            if save:
                save_checkpoint(save, model, opt, row["epoch"], meta, generator().bit_generator.state)
            progress.reset(task, epoch=row["epoch"] + 1, rate="-")

        fit(model, train_loader, test_loader, opt, epochs, start, on_epoch=on_epoch, on_batch=on_batch,
            scheduler=scheduler)
    result = {"model": model_name, "epochs": history, "final_test_acc": history[-1]["test_acc"] if history else None}
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        console.print(table)
        if history:
            console.print(f"final test accuracy: [bold]{history[-1]['test_acc']:.2%}[/bold]"
                          + (f"  (checkpoint: {save})" if save else ""))
    return result


def _download_progress(console):
    state = {}

    def progress(name, done, total):
        if name not in state:
            state[name] = True
            console.print(f"downloading {name} ({total / 1e6:.1f} MB)")
    return progress
