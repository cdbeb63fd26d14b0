"""`mininet train ptb`: a word-level language model (the registry's rnn, lstm or
transformer) with truncated backpropagation through time; perplexity per epoch."""
import math
import time

from .. import get_num_threads
from ..data import Corpus, batchify
from ..models.registry import build as build_model
from ..training import (TrainingDiverged, evaluate_lm, make_optimizer, save_checkpoint,
                        train_lm_epoch)
from .train import (Kept, before_training, check_data_dir, downloads, finish, resume_from,
                    setup, threads_phrase)


def run_lm(config, console=None):
    """Train what config (a TrainConfig with dataset "ptb") says and report perplexity; a
    Ctrl-C is Interrupted, saying what is kept. Returns the --json result."""
    cfg = config.checked()
    try:
        return _run_lm(cfg, console)
    except KeyboardInterrupt:   # during training it is Interrupted already
        raise before_training(cfg.save, cfg.resume) from None


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


def perplexity(loss):
    return math.exp(min(loss, 700))


def _run_lm(cfg, console):
    console = setup(cfg, console)
    check_data_dir("ptb", cfg.data_dir, cfg.download)
    corpus = Corpus(cfg.data_dir, max_lines=cfg.max_lines, download=downloads(cfg))
    vocab = len(corpus.dictionary)
    check_tokens(cfg.max_lines, cfg.batch_size, (corpus.train, corpus.valid))
    train, valid = batchify(corpus.train, cfg.batch_size), batchify(corpus.valid, cfg.batch_size)
    model = build_model(cfg.model, vocab_size=vocab, embedding_size=cfg.embedding_size,
                        hidden_size=cfg.hidden_size, num_layers=cfg.layers)
    if cfg.device != "cpu":   # the windows follow the parameters (train_lm_epoch)
        model.to(cfg.device)
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    meta = {"model": cfg.model, "optimizer": cfg.optimizer, "dataset": "ptb", "vocab": vocab}
    start, history = 0, []
    if cfg.resume:
        header, history = resume_from(cfg, model, opt, {"model": cfg.model,
                                                        "optimizer": cfg.optimizer,
                                                        "dataset": "ptb", "vocab": vocab})
        start = header["epoch"]
        console.print(f"resumed from {cfg.resume} at epoch {start}")
    console.print(f"mininet train ptb --model {cfg.model} ({len(corpus.train):,} training tokens, "
                  f"vocabulary {vocab:,}, {threads_phrase(get_num_threads())})", highlight=False)
    kept = Kept(cfg.save, cfg.resume, start)
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            train_loss = train_lm_epoch(model, train, opt, cfg.seq_len, cfg.clip,
                                        graph=cfg.graph)
            seconds = time.perf_counter() - t0
            valid_loss = evaluate_lm(model, valid, cfg.seq_len)
            row = {"epoch": epoch + 1, "train_ppl": perplexity(train_loss),
                   "valid_ppl": perplexity(valid_loss), "train_loss": train_loss,
                   "valid_loss": valid_loss, "seconds": seconds}
            if cfg.save:   # first, so that `history` holds the saved epochs
                kept.write(epoch + 1, lambda: save_checkpoint(cfg.save, model, opt, epoch + 1,
                                                              meta, history=history + [row]))
            history.append(row)
            console.print(f"epoch {epoch + 1}/{cfg.epochs}: train ppl {row['train_ppl']:.2f}, "
                          f"valid ppl {row['valid_ppl']:.2f}, {seconds:.2f} s, "
                          f"{train.size / seconds:,.0f} tokens/s"
                          + (f", saved {cfg.save}" if cfg.save else ""), highlight=False,
                          soft_wrap=True)
    except (KeyboardInterrupt, TrainingDiverged) as e:
        raise kept.stopped(e, history[-1]["epoch"] if history else start, cfg.epochs) from None
    result = {"dataset": "ptb", "model": cfg.model, "vocab": vocab, "epochs": history}
    # the mean losses per token; the plot draws their perplexity beside them (rows of a
    # checkpoint written before the losses were kept: the log of the perplexity)
    plot_rows = [{"epoch": r["epoch"], "train_loss": r.get("train_loss", math.log(r["train_ppl"])),
                  "train_acc": None, "test_loss": r.get("valid_loss", math.log(r["valid_ppl"])),
                  "test_acc": None} for r in history]
    finish(cfg, console, result, plot_rows, "perplexity",
           f"final valid perplexity: [bold]{history[-1]['valid_ppl']:.2f}[/bold]"
           + (f"  (checkpoint: {cfg.save})" if cfg.save else "") if history else "")
    return result

