"""Multi-head attention (PyTorch's nn.MultiheadAttention semantics, needle's (in, out)
weight layout): softmax(q k^T / sqrt(head_dim) + mask) v per head, then an output
projection. Sequences are (seq_len, batch, embed) or, with batch_first, (batch, seq_len,
embed)."""
from typing import Any

import numpy as np

from .. import init, ops
from ..autograd import Tensor
from .layers import Dropout
from .module import Module, Parameter


def _uniform(shape, fan_in, dtype, device):
    bound = 1.0 / fan_in ** 0.5
    return Parameter(init.rand(*shape, low=-bound, high=bound, dtype=dtype, device=device))



def _constant(module, name, key, make):
    """A constant tensor that depends only on shapes (the causal mask, the position ids),
    made once per key and kept on the module (the last key's), not rebuilt from numpy at
    every forward: cheaper, and a kernel graph's capture can record its use."""
    held = module.__dict__.get(name)
    if held is None or held[0] != key:
        held = (key, make())
        object.__setattr__(module, name, held)
    return held[1]

class MultiHeadAttention(Module):
    """Multi-head attention, PyTorch's nn.MultiheadAttention semantics with needle's
    (in, out) weights: W_q, W_k, W_v, W_out (embed_dim, embed_dim) and biases (embed_dim,)
    (None with bias=False). forward(q, k=None, v=None): q of shape (L, N, E) ((N, L, E) with
    batch_first), k and v (S, N, E) defaulting to q (self-attention); returns q's shape.
    causal=True masks each position's view of later ones; dropout applies to the attention
    weights in training. The weights of the last call are kept, detached, in `attention`
    (N, num_heads, L, S). embed_dim not divisible by num_heads raises ValueError."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, causal=False,
                 batch_first=False, device=None, dtype="float32"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.causal, self.batch_first = causal, batch_first
        d = embed_dim
        self.W_q, self.W_k, self.W_v, self.W_out = (_uniform((d, d), d, dtype, device)
                                                    for _ in range(4))
        self.b_q, self.b_k, self.b_v, self.b_out = ((_uniform((d,), d, dtype, device)
                                                     for _ in range(4)) if bias else (None,) * 4)
        self.dropout = Dropout(dropout)
        self.attention = None

    def _heads(self, x, w, b):
        """(B, T, D) -> projected and split: (B, H, T, D/H)."""
        bsz, t, _ = x.shape
        y = ops.linear(x, w, b)
        return ops.permute(ops.reshape(y, (bsz, t, self.num_heads, -1)), (0, 2, 1, 3))

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None) -> Tensor:
        """Attention of queries `q` over keys `k` and values `v`: q (L, N, E),
        k and v (S, N, E) ((N, L, E) / (N, S, E) with batch_first); k defaults to q, v to k.
        Returns (L, N, E) (batch first with batch_first). Input that is not 3-D with embed_dim
        features raises ValueError."""
        k = q if k is None else k
        v = k if v is None else v
        if q.ndim != 3 or q.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: input must be 3-D with {self.embed_dim} "
                             f"features, got shape {q.shape}")
        if not self.batch_first:
            q, k, v = (ops.permute(a, (1, 0, 2)) for a in (q, k, v))
        bsz, tq, d = q.shape
        tk = k.shape[1]
        qh, kh, vh = (self._heads(a, w, b) for a, w, b in ((q, self.W_q, self.b_q),
                                                           (k, self.W_k, self.b_k),
                                                           (v, self.W_v, self.b_v)))
        scores = ops.matmul(qh, ops.transpose(kh)) * (1.0 / (d // self.num_heads) ** 0.5)
        if self.causal:
            scores = scores + ops.broadcast_to(_constant(
                self, "_mask", (tq, tk, scores.dtype, scores.device),
                lambda: Tensor(np.triu(np.full((tq, tk), -np.inf, dtype=scores.dtype), 1),
                               dtype=scores.dtype, device=scores.device)), scores.shape)
        weights = ops.softmax(scores, -1)
        self.attention = weights.detach()
        out = ops.matmul(self.dropout(weights), vh)                       # (B, H, Tq, D/H)
        out = ops.reshape(ops.permute(out, (0, 2, 1, 3)), (bsz, tq, d))
        out = ops.linear(out, self.W_out, self.b_out)
        return out if self.batch_first else ops.permute(out, (1, 0, 2))


class TransformerLayer(Module):
    """Pre-norm encoder layer (PyTorch's TransformerEncoderLayer with norm_first=True,
    ReLU): x + attn(norm1(x)), then + linear2(relu(linear1(norm2(x)))), dropout on both
    branches. Input (L, N, embed_dim) ((N, L, embed_dim) with batch_first); output of the
    same shape. hidden_size is the width of the feed-forward block."""

    def __init__(self, embed_dim, num_heads, hidden_size, dropout=0.0, causal=False,
                 batch_first=False, device=None, dtype="float32"):
        super().__init__()
        from .layers import LayerNorm1d, Linear
        self.attn = MultiHeadAttention(embed_dim, num_heads, dropout, True, causal, batch_first,
                                       device, dtype)
        self.norm1 = LayerNorm1d(embed_dim, device=device, dtype=dtype)
        self.norm2 = LayerNorm1d(embed_dim, device=device, dtype=dtype)
        self.linear1 = Linear(embed_dim, hidden_size, device=device, dtype=dtype)
        self.linear2 = Linear(hidden_size, embed_dim, device=device, dtype=dtype)
        self.drop1, self.drop2, self.drop3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """One encoder layer over x of shape (L, N, embed_dim) ((N, L, embed_dim)
        with batch_first): returns the same shape."""
        x = x + self.drop1(self.attn(self.norm1(x)))
        h = self.drop2(ops.relu(self.linear1(self.norm2(x))))
        return x + self.drop3(self.linear2(h))


class Transformer(Module):
    """A stack of TransformerLayers over a learned positional embedding added to the
    input: forward(x (seq, batch, embed) or batch_first) -> same shape (and None, so it
    drops into LanguageModel's (output, state) protocol)."""

    def __init__(self, embed_dim, hidden_size, num_layers=1, num_heads=4, dropout=0.0,
                 causal=True, batch_first=False, sequence_len=2048, device=None, dtype="float32"):
        super().__init__()
        from .sequence import Embedding
        self.batch_first, self.sequence_len = batch_first, sequence_len
        self.positions = Embedding(sequence_len, embed_dim, device=device, dtype=dtype)
        self.layers = [TransformerLayer(embed_dim, num_heads, hidden_size, dropout, causal,
                                        True, device, dtype) for _ in range(num_layers)]

    def forward(self, x: Tensor, h: Any = None) -> tuple[Tensor, None]:
        """x of shape (L, N, embed_dim) ((N, L, embed_dim) with batch_first) plus the
        positional embedding, through every layer: returns (output of x's shape, None); `h` is
        ignored (LanguageModel's (output, state) protocol). L > sequence_len raises ValueError."""
        if not self.batch_first:
            x = ops.permute(x, (1, 0, 2))
        bsz, t, d = x.shape
        if t > self.sequence_len:
            raise ValueError(f"Transformer: sequence of {t} is longer than sequence_len "
                             f"{self.sequence_len}")
        pos = self.positions(_constant(
            self, "_positions", (bsz, t, x.device),
            lambda: Tensor(np.broadcast_to(np.arange(t), (bsz, t)), device=x.device)))
        x = x + pos
        for layer in self.layers:
            x = layer(x)
        return (x if self.batch_first else ops.permute(x, (1, 0, 2))), None
