"""`mininet train ptb`: a word-level language model (LanguageModel) with truncated
backpropagation through time; perplexity per epoch."""
import json
import math
import time

from rich.console import Console
from rich.table import Table

from .. import get_num_threads, set_num_threads
from ..data import Corpus, batchify
from ..init import manual_seed
from ..models import LanguageModel, load_checkpoint, save_checkpoint
from ..models.train import TrainingDiverged, evaluate_lm, make_optimizer, train_lm_epoch
from .train import Kept, NothingToDo, before_training


def run_lm(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads,
           save, resume, json_out, seq_len, clip, embedding_size, hidden_size, layers,
           max_lines=None, console=None, device="cpu"):
    """Train and report perplexity; a Ctrl-C is Interrupted, saying what is kept."""
    try:
        return _run_lm(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed,
                       data_dir, threads, save, resume, json_out, seq_len, clip, embedding_size,
                       hidden_size, layers, max_lines, console, device)
    except KeyboardInterrupt:   # during training it is Interrupted already
        raise before_training(save, resume) from None


def check_tokens(max_lines, batch_size, splits):
    """Each split's ids (which know their file) must fill two rows of batch_size: one row of
    batchified ids has no next token to predict, so no window, and would report a
    perplexity of 1.00."""
    for ids in splits:
        if len(ids) < 2 * batch_size:
            raise ValueError(
                f"{ids.path} has {len(ids)} tokens"
                + (f" in its first {max_lines} lines" if max_lines else "")
                + f", but --batch-size {batch_size} needs at least {2 * batch_size} (two rows of "
                f"{batch_size} columns: a window and its next tokens); use a longer file or a "
                "smaller --batch-size")


def _run_lm(model_name, epochs, batch_size, lr, optimizer, weight_decay, seed, data_dir, threads,
            save, resume, json_out, seq_len, clip, embedding_size, hidden_size, layers, max_lines,
            console, device):
    console = console or Console(stderr=json_out)
    if threads:
        set_num_threads(threads)
    manual_seed(seed)
    corpus = Corpus(data_dir, max_lines=max_lines)
    vocab = len(corpus.dictionary)
    check_tokens(max_lines, batch_size, (corpus.train, corpus.valid))
    train, valid = batchify(corpus.train, batch_size), batchify(corpus.valid, batch_size)
    model = LanguageModel(embedding_size, vocab, hidden_size, layers, model_name)
    if device != "cpu":   # the windows follow the parameters (train_lm_epoch)
        model.to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    meta = {"model": model_name, "optimizer": optimizer, "dataset": "ptb", "vocab": vocab}
    start = 0
    if resume:
        start = load_checkpoint(resume, model, opt, {"model": model_name, "optimizer": optimizer,
                                                     "dataset": "ptb", "vocab": vocab})["epoch"]
        if start >= epochs:
            raise NothingToDo(f"nothing to do: {resume} has already trained {start} epochs and "
                              f"--epochs is {epochs}; pass a larger --epochs to go on")
        console.print(f"resumed from {resume} at epoch {start}")
    table = Table(title=f"mininet train ptb --model {model_name} ({len(corpus.train):,} training "
                        f"tokens, vocabulary {vocab:,}, {get_num_threads()} threads)")
    for col in ("epoch", "train ppl", "valid ppl", "seconds", "tokens/s"):
        table.add_column(col, justify="right")
    history = []
    kept = Kept(save, resume, start)
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            train_loss = train_lm_epoch(model, train, opt, seq_len, clip)
            seconds = time.perf_counter() - t0
            valid_loss = evaluate_lm(model, valid, seq_len)
            row = {"epoch": epoch + 1, "train_ppl": math.exp(min(train_loss, 700)),
                   "valid_ppl": math.exp(min(valid_loss, 700)), "seconds": seconds}
            if save:   # first, so that `history` holds the saved epochs
                kept.write(epoch + 1, lambda: save_checkpoint(save, model, opt, epoch + 1, meta))
            history.append(row)
            table.add_row(str(row["epoch"]), f"{row['train_ppl']:.2f}", f"{row['valid_ppl']:.2f}",
                          f"{seconds:.2f}", f"{train.size / seconds:,.0f}")
            console.print(f"epoch {epoch + 1}/{epochs}: train ppl {row['train_ppl']:.2f}, valid "
                          f"ppl {row['valid_ppl']:.2f}, {seconds:.2f} s"
                          + (f", saved {save}" if save else ""), highlight=False)
    except (KeyboardInterrupt, TrainingDiverged) as e:
        if history and not json_out:
            console.print(table)
        raise kept.stopped(e, history[-1]["epoch"] if history else start, epochs) from None
    result = {"dataset": "ptb", "model": model_name, "vocab": vocab, "epochs": history}
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        console.print(table)
    return result
