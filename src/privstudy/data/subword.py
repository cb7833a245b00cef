"""A subword tokenizer (SentencePiece BPE, case-folded NFKC) trained on given texts, and notes cut into
fixed-length token windows.

SentencePiece rather than Hugging Face ``tokenizers``: the latter's WordPiece and BPE trainers gave a
different vocabulary on every run of the same texts (ties broken in hash-map order), and a trial must
give the same numbers for the same seed. SentencePiece's training is deterministic (checked by the tests).

Special ids: 0 ``[PAD]``, 1 ``[UNK]``, 2 ``[MASK]``; the windows carry no begin/end markers (nothing
here classifies or pairs sentences).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np

PAD, UNK, MASK = 0, 1, 2
SPECIALS = ["[PAD]", "[UNK]", "[MASK]"]


class Tokenizer:
    """A trained SentencePiece model: ``encode`` texts to ids, ``vocab_size`` entries, ``piece(id)``."""

    def __init__(self, model: bytes):
        import sentencepiece as spm

        self.model = model
        self._sp = spm.SentencePieceProcessor(model_proto=model)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, int32 arrays of their own lengths."""
        return [np.asarray(ids, dtype=np.int32) for ids in self._sp.encode([str(t) for t in texts])]


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A BPE tokenizer of at most ``vocab_size`` entries (fewer when the texts cannot fill it), learnt
    from ``texts`` with case folding; every character of the texts is kept (no [UNK] on training text)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([str(t) for t in texts]),
        model_writer=out,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc_cf",
        pad_id=PAD,
        pad_piece=SPECIALS[PAD],
        unk_id=UNK,
        unk_piece=SPECIALS[UNK],
        bos_id=-1,
        eos_id=-1,
        user_defined_symbols=[SPECIALS[MASK]],
        max_sentence_length=1 << 20,
        num_threads=1,
        minloglevel=2,
    )
    tok = Tokenizer(out.getvalue())
    assert [tok._sp.piece_to_id(s) for s in SPECIALS] == [PAD, UNK, MASK]
    return tok


@dataclasses.dataclass(frozen=True)
class Windows:
    """Fixed-length token windows: ``tokens`` (n, seq_len) int32 padded with PAD at the end,
    ``lengths`` (n,) real tokens, ``note`` (n,) the note each window came from, ``index`` (n,) its
    position within the note."""

    tokens: np.ndarray
    lengths: np.ndarray
    note: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, rows: np.ndarray) -> "Windows":
        return Windows(self.tokens[rows], self.lengths[rows], self.note[rows], self.index[rows])


def windows(
    ids: Sequence[np.ndarray],
    notes: Sequence[int],
    seq_len: int,
    min_tokens: int,
    max_windows: int | None = None,
) -> Windows:
    """Cut each note's ids into consecutive windows of ``seq_len`` tokens; a last window shorter than
    ``min_tokens`` is dropped, a longer one padded; at most ``max_windows`` per note (its first ones).

    Args:
        ids: token ids per note.
        notes: (n_notes,) the note id written for each note's windows.
    """
    rows, lengths, note_ids, index = [], [], [], []
    for seq, note in zip(ids, notes):
        starts = range(0, len(seq), seq_len)
        k = 0
        for s in starts:
            piece = seq[s : s + seq_len]
            if len(piece) < min_tokens or (max_windows is not None and k >= max_windows):
                break
            row = np.full(seq_len, PAD, dtype=np.int32)
            row[: len(piece)] = piece
            rows.append(row)
            lengths.append(len(piece))
            note_ids.append(note)
            index.append(k)
            k += 1
    if not rows:
        return Windows(
            np.zeros((0, seq_len), np.int32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )
    return Windows(
        np.stack(rows),
        np.asarray(lengths, np.int64),
        np.asarray(note_ids, np.int64),
        np.asarray(index, np.int64),
    )


def occurrences(
    queries: np.ndarray, corpus: np.ndarray, corpus_weight: np.ndarray | None = None
) -> np.ndarray:
    """How many times each query window (n, T) occurs, token for token, among the corpus windows (m, T),
    each corpus row counted ``corpus_weight`` times (default once): a sequence's times seen in training."""
    w = np.ones(len(corpus), np.int64) if corpus_weight is None else np.asarray(corpus_weight, np.int64)
    counts: dict[bytes, int] = {}
    for row, k in zip(np.ascontiguousarray(corpus), w):
        key = row.tobytes()
        counts[key] = counts.get(key, 0) + int(k)
    return np.array([counts.get(r.tobytes(), 0) for r in np.ascontiguousarray(queries)], dtype=np.int64)
