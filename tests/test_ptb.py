"""Word-level corpus loading on small generated files: ids, <eos>, batchify/get_batch
layout, errors naming the file; and a word LSTM language model lowers perplexity."""
import numpy as np
import pytest

import mininet
from mininet import nn
from mininet.autograd import Tensor
from mininet.data import Corpus, CorpusError, Dictionary, batchify, get_batch
from conftest import SENTENCES, write_corpus


@pytest.fixture
def corpus_dir(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat \n the dog sat \n")
    (tmp_path / "ptb.valid.txt").write_text(" a cat \n")
    (tmp_path / "test.txt").write_text(" the bird \n")          # the plain-corpus name works too
    return tmp_path


def test_dictionary_and_corpus(corpus_dir):
    d = Dictionary()
    assert [d.add_word(w) for w in ("a", "b", "a")] == [0, 1, 0] and len(d) == 2
    c = Corpus(corpus_dir, download=False)
    words = c.dictionary.idx2word
    assert [words[i] for i in c.train] == ["the", "cat", "sat", "<eos>", "the", "dog", "sat", "<eos>"]
    assert [words[i] for i in c.test] == ["the", "bird", "<eos>"]
    assert c.train.dtype == np.int64 and len(c.dictionary) == 7
    assert len(Corpus(corpus_dir, max_lines=1, download=False).train) == 4


def test_batchify_and_get_batch():
    data = np.arange(23)
    b = batchify(data, 4)
    assert b.shape == (5, 4)
    np.testing.assert_array_equal(b[:, 1], np.arange(5, 10))    # columns are contiguous runs
    x, y = get_batch(b, 0, 3)
    assert x.shape == (3, 4) and y.shape == (12,)
    np.testing.assert_array_equal(y.numpy(), b[1:4].reshape(-1))
    x, y = get_batch(b, 3, 3)                                     # the last window is shorter
    assert x.shape == (1, 4)
    with pytest.raises(IndexError):
        get_batch(b, 4, 3)
    with pytest.raises(ValueError, match="fill one row"):
        batchify(np.arange(3), 4)


def test_missing_and_unreadable_files_name_them(tmp_path, corpus_dir):
    with pytest.raises(CorpusError, match="ptb.train.txt not found"):
        Corpus(tmp_path / "empty", download=False)
    (corpus_dir / "ptb.valid.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="ptb.valid.txt"):
        Corpus(corpus_dir, download=False)


def test_word_language_model_lowers_perplexity(tmp_path):
    """Truncated BPTT over a generated corpus: perplexity falls well below the vocabulary."""
    from mininet.models import LanguageModel
    mininet.init.manual_seed(0)
    write_corpus(tmp_path, SENTENCES * 12, SENTENCES[:1], SENTENCES[1:2])
    c = Corpus(tmp_path, download=False)
    v = len(c.dictionary)
    data = batchify(c.train, 4)
    model = LanguageModel(16, v, 32, 1, "lstm")
    opt = mininet.optim.Adam(model.parameters(), lr=0.02)
    ppl = []
    for epoch in range(6):
        state, total, count = None, 0.0, 0
        for i in range(0, len(data) - 1, 8):
            x, y = get_batch(data, i, 8)
            opt.zero_grad()
            out, state = model(x, state)
            loss = nn.SoftmaxLoss()(out, y)
            loss.backward()
            opt.step()
            state = tuple(s.detach() for s in state)
            total, count = total + loss.item() * y.shape[0], count + y.shape[0]
        ppl.append(float(np.exp(total / count)))
    assert ppl[0] > 5 and ppl[-1] < 2.5, ppl
