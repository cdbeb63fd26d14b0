"""The training loop (fit, train_epoch, evaluate, and train_lm_epoch / evaluate_lm for
language models), optimizers and schedules by name, and checkpoints: atomic .npz files read
back without pickle and checked field by field (docs/checkpoint-format.md), from which a
model can be rebuilt alone (build_from_checkpoint)."""
import io
import json
import math
import struct
import time
import zipfile
import zlib

import numpy as np

from . import distributed, nn, optim
from .amp import autocast
from .autograd import Tensor, no_grad
from .init import generator
from .backend.capture import CaptureError, KernelGraph
from .interop.atomic import remove_stale_temps, write_atomically
from .data.fetch import read_into


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("cosine", "step", "none")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; names the file."""


class TrainingDiverged(RuntimeError):
    """The training loss is NaN or infinite: further steps would only write NaNs."""


def _finite(value, where, advice):
    """The loss value, or TrainingDiverged when it is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingDiverged(f"the training loss is {value} {where}: {advice}")
    return value


# steps between two reads of the loss on a device whose kernels run asynchronously
CHECK_EVERY = 50


class _Tally:
    """An epoch's sums: loss x samples (and correct predictions). On the CPU they are read
    at every step: free, and a NaN loss stops training before its step is taken. On a
    device whose kernels run asynchronously (CUDA) they stay on the device, since reading
    a value makes the host wait for the GPU: the host reads them every CHECK_EVERY steps
    and at the end, so a NaN loss is caught up to CHECK_EVERY - 1 steps after it happened
    (the checkpoint, written after the epoch, still holds the last good one). advice:
    what to say when the loss is not finite (None: no check, as in evaluation)."""

    def __init__(self, device, where, advice=None):
        self.host = device is None or device.synchronous
        self.where, self.advice = where, advice
        self.loss, self.correct, self.seen, self.checked, self.steps = 0.0, 0, 0, 0, 0

    def add(self, loss, n, logits=None, y=None):
        if self.host:
            value = loss.item()
            if self.advice:
                _finite(value, f"after {self.seen} {self.where}", self.advice)
            self.loss += value * n
            if logits is not None:
                self.correct += int((logits.cached_data.argmax(1).numpy() == y.numpy()).sum())
        else:
            self.loss = loss.cached_data.astype("float64") * float(n) + self.loss
            if logits is not None:
                self.correct = (logits.cached_data.argmax(1) == y.cached_data).sum() + self.correct
            self.steps += 1
        self.seen += n
        if self.steps % CHECK_EVERY == 0 and self.steps:
            self.check()

    def check(self):
        """The loss sum read back (a device wait), after a finiteness check."""
        loss = _number(self.loss)
        if not self.host and self.advice and self.seen > self.checked:
            _finite(loss, f"between {self.checked} and {self.seen} {self.where}", self.advice)
            self.checked = self.seen
        return loss

    def totals(self):
        """(loss sum, correct, seen) as Python numbers, checked."""
        return self.check(), int(_number(self.correct)), self.seen


def _number(v):
    """A Python number from a tally's sum: itself, or a device scalar read back."""
    return v if isinstance(v, (int, float)) else float(v.item())


def make_optimizer(name, params, lr, weight_decay=0.0):
    """The optimizer named `name` over `params`: "sgd", "momentum" (SGD with
    momentum 0.9), "adam", "adamw", "adagrad" or "rmsprop", with learning rate `lr` and
    `weight_decay`. Another name raises ValueError listing the choices."""
    table = {
        "sgd": lambda: optim.SGD(params, lr=lr, weight_decay=weight_decay),
        "momentum": lambda: optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay),
        "adam": lambda: optim.Adam(params, lr=lr, weight_decay=weight_decay),
        "adamw": lambda: optim.AdamW(params, lr=lr, weight_decay=weight_decay),
        "adagrad": lambda: optim.Adagrad(params, lr=lr, weight_decay=weight_decay),
        "rmsprop": lambda: optim.RMSprop(params, lr=lr, weight_decay=weight_decay),
    }
    if name not in table:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(table)}")
    return table[name]()


def make_scheduler(name, opt, epochs):
    """The learning-rate schedule named `name` for `opt` over `epochs` epochs: None for "none",
    CosineAnnealingLR(opt, epochs) for "cosine", StepLR(opt, epochs // 3, 0.1) for "step".
    Another name raises ValueError."""
    if name == "none":
        return None
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, epochs)
    if name == "step":
        return optim.StepLR(opt, max(epochs // 3, 1), 0.1)
    raise ValueError(f"unknown schedule {name!r}; choose one of none, cosine, step")


class _GraphedStep:
    """train_epoch's step as a KernelGraph: the first batch steps eagerly (state made
    lazily, on a first forward or step, is made outside the capture, as torch asks of
    CUDA graphs), the second is captured, and the step is replayed for every batch of the
    captured shapes and dtypes (copied into the captured inputs); another batch (a last,
    smaller one) steps eagerly. A model the capture refuses (host reads, buffers rebound
    instead of updated in place) trains eagerly from then on, its buffers (running
    statistics) and the generator as before the attempt. A replay that raises (a batch
    whose data the captured kernels refuse, such as an ignore_index label the fused loss
    left to the host) is undone the same way and that batch steps eagerly. A module's
    training flag or a parameter's requires_grad changed between batches (on_batch) means
    a new capture; other Python attributes of the model are read at the capture only.
    The loss is checked after the replayed step, not before it as eagerly."""

    def __init__(self, model, opt, loss_fn, mixed):
        self.model, self.opt, self.loss_fn, self.mixed = model, opt, loss_fn, mixed
        self.graph, self.refused, self.warm = None, None, False

    def __call__(self, x, y):
        """(loss, logits) after the step on (x, y), or None: step eagerly instead."""
        if self.refused is not None:
            return None
        if self.graph is not None and self._signature() != self.signature:
            self.graph, self.warm = None, False   # the model changed: capture again
        if self.graph is None:
            if not self.warm:
                self.warm = True
                return None
            return self._capture(x, y)
        xs, ys = self.inputs
        if not (_same_layout(x, xs) and _same_layout(y, ys)):
            return None
        return self.outputs if self._replay(x, y) else None

    def _replay(self, x, y):
        """x and y into the captured inputs, then the replay: True, or False when a kernel
        raised (the step undone: that batch steps eagerly)."""
        xs, ys = self.inputs
        dev = xs.device
        dev.copy(x.cached_data, xs.cached_data)
        dev.copy(y.cached_data, ys.cached_data)
        saved = self._state()
        try:
            self.graph.replay()
        except CaptureError:
            raise   # the model's tensors were replaced: a mistake to report
        except Exception:
            self._restore(saved)
            return False
        return True

    def _signature(self):
        """What the replay assumes of the model's Python state, cheaply read: the modules'
        training flags and the parameters' requires_grad (of those the capture saw)."""
        return ([m.training for m in self.modules], [p.requires_grad for p in self.params])

    def _tensors(self):
        """The model's parameters and buffers with the buffers they hold."""
        return [(t, t.cached_data.handle, t.cached_data.offset)
                for t in self.model.parameters() + self.model.buffers()]

    def _check_unmoved(self, held):
        """CaptureError if the step rebound a parameter or buffer of the model (a replay
        would keep reading the old tensor)."""
        now = self._tensors()
        if len(now) != len(held) or any(a[0] is not b[0] or a[1] is not b[1] or a[2] != b[2]
                                        for a, b in zip(held, now)):
            raise CaptureError("kernel graph capture: the step rebound a parameter or buffer "
                               "of the model to a new tensor (update it in place)")

    def _state(self):
        """The values a step changes before its optimizer's: buffers, the generator."""
        return ([(b, b.cached_data.copy()) for b in self.buffers],
                generator().bit_generator.state)

    def _restore(self, saved):
        buffers, rng = saved
        for b, data in buffers:   # the attempt's forward pass is undone
            b.cached_data[...] = data
        generator().bit_generator.state = rng   # and its random draws
        self.opt.zero_grad()

    def _capture(self, x, y):
        box = self._capture_step(x, y, self._run)
        if box is not None and self.refused is None:
            self.outputs = box["out"]
        return None if box is None else box["out"]

    def _run(self, xs, ys, box):
        """The step the graph records: box["out"] its outputs, box["stepped"] once the
        optimizer's update is taken."""
        self.opt.zero_grad()
        with self.mixed:
            logits = self.model(xs)
            loss = self.loss_fn(logits, ys)
        box["out"] = (loss, logits)
        loss.backward()
        self.opt.step()
        box["stepped"] = True

    def _capture_step(self, x, y, run):
        """run(xs, ys, box) captured on copies of x and y (the graph's inputs). Returns box,
        or None: step eagerly (the attempt undone: buffers, generator, gradients). After a
        refusal that came once the update was taken (the capture runs eagerly), box is
        returned with self.refused set: the batch is stepped, and must not be twice."""
        if not x.device.synchronous or x.device.name != "cpu":
            self.refused = f"the {x.device.name} device"
            return None
        self.buffers = self.model.buffers()
        self.modules, self.params = list(self.model.modules()), self.model.parameters()
        saved, held = self._state(), self._tensors()
        steps = getattr(self.opt, "step_count", None)
        xs = Tensor.make_const(x.cached_data.copy())
        ys = Tensor.make_const(y.cached_data.copy())
        graph, box = KernelGraph(), {}
        try:
            with graph.capture():
                run(xs, ys, box)
            self._check_unmoved(held)
        except CaptureError as e:
            self.refused = str(e)
            if "stepped" in box or (steps is not None and
                                    getattr(self.opt, "step_count", None) != steps):
                return box   # the update was taken (eagerly): not twice
            self._restore(saved)
            return None
        graph.watch([t for t, _, _ in held], "a parameter or buffer of the model")
        self.graph, self.inputs, self.signature = graph, (xs, ys), self._signature()
        return box


def _same_layout(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def train_epoch(model, loader, opt, loss_fn=None, on_batch=None, reducer=None, precision=None,
                graph=False):
    """One pass over loader; returns (mean loss, accuracy), over every rank's samples in a
    data-parallel run. reducer: a distributed.GradientReducer averaging the gradients
    over the ranks before each step. precision "bf16": the forward pass under
    mininet.autocast (its products keep bf16 in backward); weights, gradients and the
    optimizer's state stay float32, the loss is float32. graph: capture the step on the
    first batch as a mininet.KernelGraph and replay it for the batches of that shape (the
    same updates without the step's Python; a model the capture refuses, such as one that
    reads a value on the host in forward, trains eagerly; not with a reducer)."""
    loss_fn = loss_fn or nn.SoftmaxLoss()
    model.train()
    tally = _Tally(_model_device(model), "samples of this epoch", "lower --lr (or check the data)")
    mixed = autocast(precision or "bf16", enabled=precision is not None)
    graphed = _GraphedStep(model, opt, loss_fn, mixed) if graph and reducer is None else None
    for x, y in loader:
        done = graphed(x, y) if graphed is not None else None
        if done is not None:
            tally.add(done[0], x.shape[0], done[1], y)
            if on_batch:
                on_batch(x.shape[0])
            continue
        opt.zero_grad()
        with mixed:
            logits = model(x)
            loss = loss_fn(logits, y)
        tally.add(loss, x.shape[0], logits, y)
        loss.backward()
        if reducer is not None:
            reducer.finish()
        opt.step()
        if on_batch:
            on_batch(x.shape[0])
    return _mean_over_ranks(*tally.totals(), "train_epoch")


def _mean_over_ranks(total_loss, correct, seen, what):
    """(mean loss, accuracy) of sums taken on each rank; no samples at all is an error, not
    a loss of 0 and an accuracy of 0%."""
    if distributed.world_size() > 1:
        sums = distributed.allreduce_(np.array([total_loss, correct, seen], dtype=np.float64),
                                      "the epoch's loss and accuracy")
        total_loss, correct, seen = sums.tolist()
    if seen == 0:
        raise ValueError(f"{what}: the loader gave no samples, so there is no loss or accuracy "
                         "to report (is the dataset empty?)")
    return total_loss / seen, correct / seen


def evaluate(model, loader, loss_fn=None):
    """(mean loss, accuracy) in eval mode, without building graphs; over every rank's
    shard in a data-parallel run."""
    loss_fn = loss_fn or nn.SoftmaxLoss()
    model.eval()
    tally = _Tally(_model_device(model), "samples")
    with no_grad():
        for x, y in loader:
            logits = model(x)
            tally.add(loss_fn(logits, y), x.shape[0], logits, y)
    return _mean_over_ranks(*tally.totals(), "evaluate")


def fit(model, train_loader, test_loader, opt, epochs, start_epoch=0, on_epoch=None, on_batch=None,
        scheduler=None, reducer=None, precision=None, graph=False):
    """precision "bf16": train and evaluate under mininet.autocast; graph: replay each
    epoch's step as a KernelGraph (see train_epoch)."""
    history = []
    for epoch in range(start_epoch, epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):   # the epoch's shuffle, also after --resume
            sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch(model, train_loader, opt, on_batch=on_batch,
                                            reducer=reducer, precision=precision, graph=graph)
        seconds = time.perf_counter() - t0
        distributed.average_buffers(model)   # running statistics: one model on every rank
        with autocast(precision or "bf16", enabled=precision is not None):
            test_loss, test_acc = evaluate(model, test_loader)
        if scheduler:
            scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": seconds}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return history


# language models (truncated backpropagation through time) ---------------------------------
def _detach(state):
    if state is None:     # a Transformer carries no state between windows
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _model_device(model):
    """Where the model's parameters live (the windows go there); None: the default."""
    params = model.parameters()
    return params[0].device if params else None


class _GraphedLMStep(_GraphedStep):
    """train_lm_epoch's step as a KernelGraph: the first window steps eagerly (the warm-up,
    which also makes a recurrent model's first state), the next window of its shape is
    captured. The state a window hands to the next is static too: the new state is copied
    into the captured one at the end of the step, so each replay continues from the last;
    a window of another length (the last) steps eagerly, and its state is copied back in
    before a later replay. A model change (a training flag, requires_grad) means an eager
    window and a new capture."""

    def __init__(self, model, opt, loss_fn, clip):
        super().__init__(model, opt, loss_fn, autocast("bf16", enabled=False))
        self.clip = clip

    def step(self, x, y, state):
        """(loss, the next window's state) after the step, or None: step eagerly."""
        if self.refused is not None or (state is None and self._stateful):
            return None
        if self.graph is not None and self._signature() != self.signature:
            self.graph, self.warm = None, False   # the model changed: an eager window, then
        if self.graph is None:                    # a new capture
            if not self.warm or x.shape != self.first:   # (not on a shorter last window)
                self.warm = True
                return None
            return self._capture_lm(x, y, state)
        xs, ys = self.inputs
        if not (_same_layout(x, xs) and _same_layout(y, ys)):
            return None
        held = self.state
        if state is not held:   # an eager window since: its state into the captured one
            for a, b in zip(_states(held), _states(state)):
                a.cached_data[...] = b.cached_data
        return (self.outputs[0], held) if self._replay(x, y) else None

    _stateful = False   # set at the first window: whether the model returns a state
    first = None        # and its shape, the one captured

    def _capture_lm(self, x, y, state):
        def run(xs, ys, box):
            self.opt.zero_grad()
            out, new = self.model(xs, state)
            loss = self.loss_fn(out, ys)
            box["out"] = (loss, new)
            loss.backward()
            if self.clip:
                optim.clip_grad_norm(self.opt.params, self.clip)
            self.opt.step()
            box["stepped"] = True
            for a, b in zip(_states(state), _states(new)):
                a.cached_data[...] = b.cached_data   # the next window's state
        box = self._capture_step(x, y, run)
        if box is None:
            return None
        loss, new = box["out"]
        if self.refused is not None:   # stepped eagerly: the model's own new state
            return loss, _detach(new)
        self.outputs, self.state = (loss,), state
        return loss, state


def _states(state):
    """The state's tensors: none, one, or a tuple's (an LSTM's (h, c))."""
    if state is None:
        return ()
    return state if isinstance(state, tuple) else (state,)


def train_lm_epoch(model, batches, opt, seq_len, clip=None, loss_fn=None, on_batch=None,
                   graph=False):
    """One pass over batchified ids (nbatch, batch), a numpy array whose windows go to the
    model's device: windows of seq_len, the state carried and detached between them.
    Returns the mean loss per token (log perplexity). graph: the step captured as a
    mininet.KernelGraph and replayed for the windows of seq_len (its state carried in
    the captured buffers); a model the capture refuses trains eagerly."""
    from .data import get_batch
    loss_fn = loss_fn or nn.SoftmaxLoss()
    model.train()
    device = _model_device(model)
    state = None
    tally = _Tally(device, "predicted tokens", "lower --lr or set --clip")
    graphed = _GraphedLMStep(model, opt, loss_fn, clip) if graph else None
    for k, i in enumerate(range(0, len(batches) - 1, seq_len)):
        x, y = get_batch(batches, i, seq_len, device=device)
        done = graphed.step(x, y, state) if graphed is not None and k else None
        if done is not None:
            loss, state = done
            tally.add(loss, y.shape[0])
            if on_batch:
                on_batch(x.shape[0] * x.shape[1])
            continue
        opt.zero_grad()
        out, state = model(x, state)
        loss = loss_fn(out, y)
        tally.add(loss, y.shape[0])
        loss.backward()
        if clip:
            optim.clip_grad_norm(opt.params, clip)
        opt.step()
        state = _detach(state)
        if graphed is not None and not k:   # the first window: eager, the warm-up
            graphed._stateful, graphed.first, graphed.warm = state is not None, x.shape, True
        if on_batch:
            on_batch(x.shape[0] * x.shape[1])
    total, _, count = tally.totals()
    return total / _windows(count, batches, "train_lm_epoch")


def evaluate_lm(model, batches, seq_len, loss_fn=None):
    """Mean loss per token over batchified ids, in eval mode, without graphs."""
    from .data import get_batch
    loss_fn = loss_fn or nn.SoftmaxLoss()
    model.eval()
    device = _model_device(model)
    state, tally = None, _Tally(device, "predicted tokens")
    with no_grad():
        for i in range(0, len(batches) - 1, seq_len):
            x, y = get_batch(batches, i, seq_len, device=device)
            out, state = model(x, state)
            tally.add(loss_fn(out, y), y.shape[0])
    total, _, count = tally.totals()
    return total / _windows(count, batches, "evaluate_lm")


def _windows(count, batches, what):
    """count (the tokens predicted), or an error when there were none: one row of
    batchified ids has no next token to predict, and a perplexity of 1.00 would be a lie."""
    if count == 0:
        raise ValueError(f"{what}: {len(batches)} row(s) of batchified ids hold no window to "
                         "predict (at least 2 rows are needed: 2 x the batch size in tokens)")
    return count


# checkpoints ----------------------------------------------------------------------------------
# The header's format version (docs/checkpoint-format.md). 1: epoch, step_count, lr, meta,
# rng_state, and no version field; 2: adds version, arch (the model's registry name and
# constructor arguments) and history (the rows of the epochs so far).
CHECKPOINT_VERSION = 2
# a history row: "epoch" and numbers (or null) under short names; at most this many names
MAX_ROW_FIELDS = 16


def save_checkpoint(path, model, opt, epoch, meta=None, rng_state=None, history=None, arch=None):
    """Model + optimizer state in one .npz, written to a temp file and renamed, with the
    file mode a plain open() would give. Temp files left by a killed save are removed.
    arch: {"name", "kwargs"} of the registry's model (default: model.arch, which
    models.registry's build sets), so that build_from_checkpoint can rebuild it; history:
    the per-epoch rows so far (dicts of numbers with an "epoch"), kept across --resume.
    The header is checked as load_checkpoint will check it before anything is written."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            arrays[f"optim/{i}/{k}"] = v
    header = {"version": CHECKPOINT_VERSION, "epoch": epoch, "step_count": osd["step_count"],
              "lr": osd["lr"], "meta": meta or {}, "rng_state": rng_state,
              "arch": arch if arch is not None else getattr(model, "arch", None),
              "history": list(history or [])}
    _check_header(header)
    raw = json.dumps(header).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"save_checkpoint: the header is {len(raw):,} bytes, more than the "
                         f"{MAX_HEADER_BYTES:,} a checkpoint may hold (a history that long?)")
    arrays["header"] = np.frombuffer(raw, dtype=np.uint8)
    remove_stale_temps(path)
    write_atomically(path, lambda f: np.savez(f, **arrays), "checkpoint")


def load_checkpoint(path, model, opt=None, expect=None, contents=None):
    """Restore model and optimizer (opt None: the model alone; the optimizer's entries are
    not read); returns the header (version, epoch, meta, rng_state, arch, history; a
    version 1 file's header gains version 1, arch None and an empty history). expect: meta
    values (model, optimizer) the checkpoint must have been written with. contents: the
    file's bytes when read elsewhere (rank 0 of a data-parallel run sends them).
    A checkpoint is untrusted input, read within what the model needs: its header (every
    field's type and range), then its members' names, then each array's .npy header
    (shape and dtype, against the model's or the optimizer's parameter) before its data,
    then the values; nothing is loaded before all of it is checked. A failure is a
    CheckpointError naming the file."""
    with _opened(path, contents) as zf:
        header = _read_header(path, zf)
        _check_meta(path, header["meta"], expect or {})
        arrays = _read_arrays(path, zf, model, opt)
    try:
        model_state, opt_state = _check_arrays(arrays)
        # the optimizer checks its whole state (names, shapes, dtypes, values) before it
        # replaces anything, and the model's arrays are checked: nothing is half-loaded
        if opt is not None:
            opt.load_state_dict({"step_count": header["step_count"], "lr": header["lr"],
                                 "state": opt_state})
        model.load_state_dict(model_state)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise _misfit(path, e) from None
    return header


def read_checkpoint_header(path, contents=None):
    """The header alone, checked (what load_checkpoint returns), without reading any array."""
    with _opened(path, contents) as zf:
        return _read_header(path, zf)


def build_from_checkpoint(path, contents=None):
    """(model, header): the registry's model that the checkpoint names, built with the
    constructor arguments it records and loaded with its weights (in eval mode; the
    optimizer's state is not read). A version 1 checkpoint records only the model's name:
    models of `mininet train` with their default sizes are rebuilt from it (the arrays'
    shapes must then fit); a language model, whose sizes it lacks, is refused."""
    from .models import registry
    header = read_checkpoint_header(path, contents)
    arch = header["arch"] or _arch_of_version_1(path, header)
    try:
        model = registry.build(arch["name"], **arch["kwargs"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build its model {arch['name']!r} ({e})") from None
    header = load_checkpoint(path, model, None, contents=contents)
    model.eval()
    return model, header


def _arch_of_version_1(path, header):
    """{"name", "kwargs"} for a checkpoint without arch: its meta's model at its defaults."""
    from .models import registry
    name = header["meta"].get("model")
    try:
        entry = registry.get(name)
    except ValueError:
        entry = None
    if entry is None or entry.language_model:
        what = f"model {name!r}" if name else "no model name"
        raise CheckpointError(
            f"{path}: format version {header['version']} records {what} but not the model's "
            f"constructor arguments, so the model cannot be rebuilt from the file alone; "
            f"build the model yourself and use load_checkpoint, or train it again with this "
            f"mininet (format version {CHECKPOINT_VERSION})")
    if header["meta"].get("dataset") == "cifar10" and name != "resnet9":
        raise CheckpointError(f"{path}: format version 1, model {name!r} on cifar10: its "
                              f"sizes are not recorded")
    return {"name": entry.name, "kwargs": dict(entry.kwargs)}


class _opened:
    """The checkpoint's zip archive, its read errors turned into CheckpointErrors naming
    the file."""

    def __init__(self, path, contents):
        self.path, self.contents, self.zf = path, contents, None

    def __enter__(self):
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(self.contents) if self.contents is not None
                                      else self.path)
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no such file") from None
        except zipfile.BadZipFile as e:
            raise _not_a_zip(self.path, self.contents, e) from None
        except _UNREADABLE as e:
            raise _unreadable(self.path, e) from None
        return self.zf

    def __exit__(self, kind, e, tb):
        self.zf.close()
        if kind is not None and not issubclass(kind, CheckpointError) and \
                issubclass(kind, _UNREADABLE):
            raise _unreadable(self.path, e) from None
        return False


def _not_a_zip(path, contents, e):
    """What a file that zipfile cannot open is, told by its first bytes: empty, text, a
    legacy PyTorch pickle, a .npy, safetensors, HDF5, gzip, or a damaged zip."""
    try:
        if contents is not None:
            head, size = bytes(contents[:256]), len(contents)
        else:
            with open(path, "rb") as f:
                head = f.read(256)
                size = f.seek(0, 2)
    except OSError:
        return _unreadable(path, e)
    if head.startswith(b"PK"):   # a zip whose end (the central directory) is missing
        return _unreadable(path, e)
    if size == 0:
        why = "it is empty"
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        why = ("it looks like a PyTorch .pt file in the legacy format (a pickle stream, "
               "torch.save before 1.6): re-save it with a current torch.save, then load it with "
               "mininet.interop.load_torch_state_dict")
    elif head.startswith(b"\x93NUMPY"):
        why = "it is a single .npy array (numpy.save), not an .npz archive"
    elif head.startswith(b"\x89HDF"):
        why = "it is an HDF5 file (a Keras .h5?)"
    elif head.startswith(b"\x1f\x8b"):
        why = "it is gzip-compressed, not a zip archive"
    elif len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        why = ("it looks like a safetensors file: load those with "
               "mininet.interop.load_torch_state_dict (torch names) or mininet.interop.load_file")
    elif _is_text(head):
        start = " ".join(head.decode("utf-8", "replace").split())[:40]
        why = f"it is a text file, not a zip archive (it starts {start!r})"
    else:
        why = f"it is not a zip archive (it starts with bytes {head[:8].hex(' ')})"
    return CheckpointError(f"{path} is not a mininet checkpoint: {why}")


def _is_text(head):
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:   # perhaps a character cut at byte 256
        text = head[:-3].decode("utf-8", "replace")
        if "\ufffd" in text:
            return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _no_header(path, zf):
    """What a zip archive without header.npy is: a PyTorch .pt file, numpy.savez's arrays,
    or some other archive."""
    names = zf.namelist()
    shown = ", ".join(repr(n[:60]) for n in names[:5]) + (f" and {len(names) - 5} more"
                                                           if len(names) > 5 else "")
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        why = ("it looks like a PyTorch .pt file: load those with "
               "mininet.interop.load_torch_state_dict")
    elif not names:
        why = "it is an empty zip archive"
    elif all(n.endswith(".npy") for n in names):
        arrays = ["".join(c if c.isprintable() else "?" for c in n[:-len(".npy")][:60])
                  for n in names]
        listed = ", ".join(arrays[:5]) + (f" and {len(arrays) - 5} more" if len(arrays) > 5
                                          else "")
        why = (f"it is an .npz of arrays ({listed}) without the header member that "
               "save_checkpoint writes")
    else:
        why = f"it is a zip archive with no header member (it holds {shown})"
    return CheckpointError(f"{path} is not a mininet checkpoint: {why}")


def _unreadable(path, e):
    """Truncated, empty, bit-flipped: zip, zlib, .npy, json errors."""
    return CheckpointError(f"{path}: not a mininet checkpoint, or truncated/corrupt "
                           f"({type(e).__name__}: {e})")


# the JSON header is a few KB (the history adds about 150 bytes an epoch)
MAX_HEADER_BYTES = 16 << 20
# what reading a damaged file, or one that is no checkpoint, raises
_UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
               NotImplementedError, RuntimeError, struct.error, OverflowError)


def _misfit(path, why):
    return CheckpointError(f"{path}: does not fit this model and optimizer ({why})")


def checkpoint_epoch(path):
    """The epoch a checkpoint file holds, read from its header alone; None when there is no
    readable checkpoint there."""
    try:
        return read_checkpoint_header(path)["epoch"]
    except CheckpointError:
        return None


def _read_header(path, zf):
    """The header (header.npy: JSON as uint8 bytes), checked, with a version 1 file's
    missing fields filled in (version 1, arch None, history [], meta {})."""
    if "header.npy" not in zf.NameToInfo:
        raise _no_header(path, zf)
    header = json.loads(bytes(_read_npy(zf, "header", _check_header_bytes)).decode())
    try:
        _check_header(header)
    except _TooNew as e:
        raise CheckpointError(f"{path}: {e}") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not a mininet checkpoint, or tampered with ({e})") from None
    return {**header, "version": header.get("version", 1), "meta": header.get("meta") or {},
            "arch": header.get("arch"), "history": header.get("history") or [],
            "rng_state": header.get("rng_state")}


def _check_header_bytes(shape, dtype):
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
        raise ValueError(f"header.npy is {dtype} {shape}, not the bytes of a header (uint8, "
                         f"at most {MAX_HEADER_BYTES:,})")


def _check_meta(path, meta, expect):
    """The meta values (model, optimizer, dataset) expect says this run needs."""
    for key, want in expect.items():
        if key in meta and meta[key] != want:
            what = f"--{key} {{}}" if key != "dataset" else "dataset {}"
            raise CheckpointError(f"{path} was written for {what.format(meta[key])}, not {want}: "
                                  f"use {what.format(meta[key])} or start without --resume")


class _TooNew(ValueError):
    """A format version this mininet does not know."""


def _check_header(header):
    """ValueError unless the header is what save_checkpoint writes: version (absent: 1) a
    known version, epoch and step_count whole numbers >= 0, lr a finite number >= 0 (the
    optimizer's own checks), meta an object of plain values, rng_state null or a state
    numpy's generator accepts, arch null or a name and arguments, history null or rows."""
    if not isinstance(header, dict):
        raise ValueError(f"the header is a {type(header).__name__}, not an object")
    version = header.get("version", 1)
    optim.check_count("version", version)
    if version > CHECKPOINT_VERSION:
        raise _TooNew(f"format version {version} was written by a newer mininet; this one "
                      f"reads versions 1 to {CHECKPOINT_VERSION}: upgrade mininet")
    if version < 1:
        raise ValueError(f"version must be 1 to {CHECKPOINT_VERSION}, got {version}")
    for key in ("epoch", "step_count", "lr"):
        if key not in header:
            raise ValueError(f"the header has no {key!r}")
    optim.check_count("epoch", header["epoch"])
    optim.check_count("step_count", header["step_count"])
    optim.check_lr(header["lr"])
    meta = header.get("meta")
    if meta is not None and not (isinstance(meta, dict) and all(map(_plain, meta.values()))):
        raise ValueError(f"meta must be an object of plain values, got {meta!r:.100}")
    _check_rng_state(header.get("rng_state"))
    _check_arch(header.get("arch"))
    _check_history(header.get("history"), header["epoch"])


def _plain(v):
    return isinstance(v, (str, int, float, bool)) or v is None


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_rng_state(rng_state):
    if rng_state is None:
        return
    from .init import generator
    if not isinstance(rng_state, dict):
        raise ValueError(f"rng_state must be null or an object, got {rng_state!r:.100}")
    probe = type(generator().bit_generator)()
    try:
        probe.state = rng_state
    except Exception as e:  # numpy raises TypeError, ValueError, KeyError, OverflowError
        raise ValueError(f"rng_state is not a {type(probe).__name__} state "
                         f"({type(e).__name__}: {e})") from None


def _check_arch(arch):
    """null, or {"name": a string, "kwargs": an object of plain values or lists of them}."""
    if arch is None:
        return
    if not (isinstance(arch, dict) and set(arch) == {"name", "kwargs"}
            and isinstance(arch["name"], str) and isinstance(arch["kwargs"], dict)
            and all(_plain(v) or (isinstance(v, list) and all(map(_plain, v)))
                    for v in arch["kwargs"].values())):
        raise ValueError(f"arch must be null or {{\"name\": string, \"kwargs\": object of plain "
                         f"values}}, got {arch!r:.100}")


def _check_history(history, epochs):
    """null, or at most `epochs` rows, each an object of at most MAX_ROW_FIELDS numbers (or
    nulls) with a whole "epoch" in 1..epochs."""
    if history is None:
        return
    if not isinstance(history, list) or len(history) > epochs:
        raise ValueError(f"history must be a list of at most {epochs} rows (one an epoch), got "
                         f"{history!r:.100}")
    for row in history:
        if not (isinstance(row, dict) and len(row) <= MAX_ROW_FIELDS
                and all(_is_number(v) or v is None for v in row.values())
                and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool)
                and 1 <= row["epoch"] <= epochs):
            raise ValueError(f"history rows must be objects of numbers with an epoch in 1.."
                             f"{epochs}, got {row!r:.100}")


def _read_arrays(path, zf, model, opt):
    """{name: array} for every member the model (and opt) needs, each checked."""
    return {key: _read_array(path, zf, key, want)
            for key, want in _member_shapes(path, zf, model, opt).items() if want is not None}


def _member_shapes(path, zf, model, opt):
    """{array name: (shape, dtype), or None for an optimizer entry that is not read (opt
    None)} for every member but the header, from the zip's directory alone: a model array,
    or optim/<index>/<name> for that parameter. Any other member, a member stored twice or
    a model array missing is refused."""
    model_arrays = model.state_dict()
    shapes, seen = {}, set()
    for key in (name.removesuffix(".npy") for name in zf.namelist()):
        if key in seen:
            raise _misfit(path, f"{key} is stored twice")
        seen.add(key)
        if key != "header":
            shapes[key] = _expected_shape(path, key, model_arrays, opt)
    missing = sorted(k for k in model_arrays if f"model/{k}" not in shapes)
    if missing:
        raise _misfit(path, f"the model's {', '.join(missing[:5])} "
                            f"{'is' if len(missing) == 1 else 'are'} missing")
    return shapes


def _expected_shape(path, key, model_arrays, opt):
    """(shape, dtype) the array stored as key must have (None: an optimizer entry, opt None)."""
    parts = key.split("/")
    if parts[0] == "model" and key[len("model/"):] in model_arrays:
        want = model_arrays[key[len("model/"):]]
        return want.shape, want.dtype
    if parts[0] == "model":
        raise _misfit(path, f"{key}: the model has no parameter or buffer "
                            f"{key[len('model/'):]!r}")
    if parts[0] != "optim":
        raise _misfit(path, f"{key}: not an entry of a mininet checkpoint")
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        raise _misfit(path, f"{key}: not an optimizer entry (optim/<index>/<name>)")
    if opt is None:
        return None
    if int(parts[1]) >= len(opt.params):
        raise _misfit(path, f"{key}: state for parameter {parts[1]}, but the optimizer has "
                            f"{len(opt.params)} parameters")
    p = opt.params[int(parts[1])]
    return tuple(p.shape), np.dtype(p.dtype)


def _read_array(path, zf, key, want):
    """The array stored as key, whose .npy header must declare want (shape, dtype)."""
    def check(shape, dtype):
        if (shape, dtype) != want:
            raise _misfit(path, f"{key} is {dtype} {shape}, not {want[1]} {want[0]}")
    return _read_npy(zf, key, check)


def _read_npy(zf, key, check):
    """The array stored as key.npy; check(shape, dtype) sees its .npy header before its data
    is read, and exactly the declared data is read (a member of 1 MB may inflate to
    gigabytes)."""
    with zf.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{key}.npy: .npy format version {version} is not supported")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        check(shape, dtype)
        array = np.empty(shape[::-1] if fortran else shape, dtype)
        if read_into(f, array) < array.nbytes or f.read(1):
            raise ValueError(f"{key}.npy: its data is not the {array.nbytes:,} bytes its header "
                             f"declares")
    return array.T if fortran else array


def _check_arrays(arrays):
    """(model state, optimizer state) from the checkpoint's arrays (names, shapes and dtypes
    checked as they were read), the model's values finite. The optimizer's arrays are
    checked by its load_state_dict."""
    model_state, opt_state = {}, {}
    for key, value in arrays.items():
        if key.startswith("model/"):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"{key} holds NaN or infinite values")
            model_state[key[len("model/"):]] = value
        else:
            _, index, name = key.split("/")
            opt_state.setdefault(int(index), {})[name] = value
    return model_state, opt_state
