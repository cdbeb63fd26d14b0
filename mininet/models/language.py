"""LanguageModel: Embedding -> RNN or LSTM -> Linear over the vocabulary (needle's)."""
from .. import nn, ops


class LanguageModel(nn.Module):
    """forward(x (seq_len, batch) token ids, h=None) -> (logits (seq_len*batch, vocab), h),
    h the final state (the LSTM's is (h, c)), to detach and pass to the next window."""

    def __init__(self, embedding_size, output_size, hidden_size, num_layers=1, seq_model="rnn",
                 device=None, dtype="float32"):
        super().__init__()
        if seq_model not in ("rnn", "lstm"):
            raise ValueError(f"LanguageModel: seq_model must be 'rnn' or 'lstm', got {seq_model!r}")
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(output_size, embedding_size, device=device, dtype=dtype)
        cls = nn.LSTM if seq_model == "lstm" else nn.RNN
        self.seq = cls(embedding_size, hidden_size, num_layers, device=device, dtype=dtype)
        self.head = nn.Linear(hidden_size, output_size, device=device, dtype=dtype)

    def forward(self, x, h=None):
        out, h = self.seq(self.embedding(x), h)
        seq, batch = out.shape[:2]
        return self.head(ops.reshape(out, (seq * batch, self.hidden_size))), h
