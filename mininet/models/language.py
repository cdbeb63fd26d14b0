"""LanguageModel: Embedding -> RNN, LSTM or Transformer -> Linear over the vocabulary
(needle's), and its PyTorch twin built from the same sizes."""
from .. import nn, ops

SEQ_MODELS = ("rnn", "lstm", "transformer")
# the Transformer's attention heads and longest sequence (its positional table), in both twins
HEADS = 4
MAX_LEN = 2048


def lm_spec(kind="lstm", vocab_size=10000, embedding_size=200, hidden_size=200, num_layers=2):
    return ("lm", kind, vocab_size, embedding_size, hidden_size, num_layers)


class LanguageModel(nn.Module):
    """forward(x (seq_len, batch) token ids, h=None) -> (logits `(seq_len*batch, vocab)`, h),
    h the final state (the LSTM's is (h, c); the Transformer's None), to detach and pass to
    the next window."""

    def __init__(self, embedding_size, output_size, hidden_size, num_layers=1, seq_model="rnn",
                 device=None, dtype="float32"):
        super().__init__()
        if seq_model not in SEQ_MODELS:
            raise ValueError(f"LanguageModel: seq_model must be 'rnn', 'lstm' or 'transformer', "
                             f"got {seq_model!r}")
        self.spec = lm_spec(seq_model, output_size, embedding_size, hidden_size, num_layers)
        self.embedding = nn.Embedding(output_size, embedding_size, device=device, dtype=dtype)
        if seq_model == "transformer":   # causal; hidden_size is the feed-forward width
            self.seq = nn.Transformer(embedding_size, hidden_size, num_layers, num_heads=HEADS,
                                      sequence_len=MAX_LEN, device=device, dtype=dtype)
            self.hidden_size = embedding_size
        else:
            cls = nn.LSTM if seq_model == "lstm" else nn.RNN
            self.seq = cls(embedding_size, hidden_size, num_layers, device=device, dtype=dtype)
            self.hidden_size = hidden_size
        self.head = nn.Linear(self.hidden_size, output_size, device=device, dtype=dtype)

    def forward(self, x, h=None):
        """Token ids x of shape (seq_len, batch) and the state h (None: zeros) give
        (logits of shape `(seq_len * batch, vocab)`, the final state) (the LSTM's state is (h, c),
        the RNN's and GRU's h (num_layers, batch, hidden), the Transformer's None)."""
        out, h = self.seq(self.embedding(x), h)
        seq, batch = out.shape[:2]
        return self.head(ops.reshape(out, (seq * batch, self.hidden_size))), h


def torch_language_model(kind, vocab_size, embedding_size, hidden_size, num_layers):
    """LanguageModel in PyTorch, layer for layer: the same parameters (torch's layouts: its
    Linear and recurrent weights are ours transposed), forward(x, h) -> (logits, h)."""
    import torch
    import torch.nn as tnn

    class TorchLanguageModel(tnn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tnn.Embedding(vocab_size, embedding_size)
            if kind == "transformer":   # pre-norm, ReLU, no dropout, causal: nn.Transformer's
                self.positions = tnn.Embedding(MAX_LEN, embedding_size)
                layer = tnn.TransformerEncoderLayer(embedding_size, HEADS, hidden_size, dropout=0.0,
                                                    norm_first=True)
                self.seq = tnn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
                width = embedding_size
            else:
                cls = tnn.LSTM if kind == "lstm" else tnn.RNN
                self.seq = cls(embedding_size, hidden_size, num_layers)
                width = hidden_size
            self.head = tnn.Linear(width, vocab_size)

        def forward(self, x, h=None):
            e = self.embedding(x)
            if kind == "transformer":
                t = x.shape[0]
                e = e + self.positions(torch.arange(t))[:, None, :]
                mask = tnn.Transformer.generate_square_subsequent_mask(t)
                out, h = self.seq(e, mask=mask, is_causal=True), None
            else:
                out, h = self.seq(e, h)
            return self.head(out.reshape(-1, out.shape[-1])), h

    if kind not in SEQ_MODELS:
        raise ValueError(f"torch_language_model: kind must be one of {', '.join(SEQ_MODELS)}, "
                         f"got {kind!r}")
    return TorchLanguageModel()
