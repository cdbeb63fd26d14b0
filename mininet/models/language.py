"""LanguageModel: Embedding -> RNN, LSTM or Transformer -> Linear over the vocabulary
(needle's)."""
from .. import nn, ops


class LanguageModel(nn.Module):
    """forward(x (seq_len, batch) token ids, h=None) -> (logits (seq_len*batch, vocab), h),
    h the final state (the LSTM's is (h, c); the Transformer's None), to detach and pass to
    the next window."""

    def __init__(self, embedding_size, output_size, hidden_size, num_layers=1, seq_model="rnn",
                 device=None, dtype="float32"):
        super().__init__()
        if seq_model not in ("rnn", "lstm", "transformer"):
            raise ValueError(f"LanguageModel: seq_model must be 'rnn', 'lstm' or 'transformer', "
                             f"got {seq_model!r}")
        self.embedding = nn.Embedding(output_size, embedding_size, device=device, dtype=dtype)
        if seq_model == "transformer":   # causal; hidden_size is the feed-forward width
            self.seq = nn.Transformer(embedding_size, hidden_size, num_layers, device=device,
                                      dtype=dtype)
            self.hidden_size = embedding_size
        else:
            cls = nn.LSTM if seq_model == "lstm" else nn.RNN
            self.seq = cls(embedding_size, hidden_size, num_layers, device=device, dtype=dtype)
            self.hidden_size = hidden_size
        self.head = nn.Linear(self.hidden_size, output_size, device=device, dtype=dtype)

    def forward(self, x, h=None):
        out, h = self.seq(self.embedding(x), h)
        seq, batch = out.shape[:2]
        return self.head(ops.reshape(out, (seq * batch, self.hidden_size))), h
