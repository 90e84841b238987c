"""
A prepared dataset as training, evaluation and sampling read it (the prepare/ scripts write it):

- data_dir/meta.json (load_meta) and the tokenizer it names (load_tokenizer): char, whole-token vocabulary
  (whitespace words, cuneiform signs), GPT-2 BPE via tiktoken, BPE / unigram of HF `tokenizers`, and the
  Turkish morpheme-aware tokenizer of morphology.py;
- the documents of a split and fixed evaluation subsets of them;
- BatchLoader: the windows of a split as batches, each a pure function of (seed, split, stream, index).

Layout of a split file: {split}.bin is uint16 token ids; every document is preceded by the document
separator id, so the document id of a position is cumsum(tokens == sep) and attention can be kept inside
documents. Optional aux arrays {split}.{name}.bin hold one uint8 per token (e.g. `flags`).
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

from morphology import lexicon_from_text, load_morfessor, make_segmenter, MARKER, presegment

UINT16_LIMIT = 65536


SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


class OfflineError(Exception):
    """The canonical online source could not be reached."""


def die(msg):
    """A user-caused error: one clear line on stderr, exit status 1."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(1)


# ----------------------------------------------------------------------------- meta and tokenizers

def load_tokenizer(data_dir):
    """Rebuild the tokenizer of a prepared dataset from its meta.json."""
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    kind = meta['tokenizer']
    if kind == 'char':
        return CharTokenizer([c for c in meta['vocab'] if c not in meta['specials']], specials=meta['specials'])
    if kind == 'vocab':
        return VocabTokenizer(meta['vocab'], n_specials=meta['n_specials'])
    if kind == 'gpt2':
        return TiktokenGPT2()
    if kind == 'hf' and meta.get('presegment'):  # MorphBPE-style: text is segmented into morphemes first
        return MorphTokenizer.load(data_dir, meta)
    if kind == 'hf':
        return HFTokenizer.load(data_dir / meta['tokenizer_file'])
    die(f"{data_dir}/meta.json names an unknown tokenizer {kind!r}")


def load_meta(data_dir):
    path = Path(data_dir) / 'meta.json'
    if not path.exists():
        die(f"{path} not found: run the dataset's prepare script first (e.g. python prepare/shakespeare.py)")
    with open(path) as f:
        return json.load(f)


class CharTokenizer:
    """Characters seen in the training split, plus [UNK], the document separator [SEP] and [MASK]."""
    kind = 'char'

    def __init__(self, chars, specials=('[UNK]', '[SEP]', '[MASK]')):
        self.specials = list(specials)
        self.itos = self.specials + sorted(set(chars) - set(self.specials))
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, train_texts):
        chars = set()
        for t in train_texts:
            chars.update(t)
        return cls(chars)

    def encode(self, text):
        unk = self.stoi['[UNK]']
        return [self.stoi.get(c, unk) for c in text]

    def decode(self, ids):
        return ''.join('' if self.itos[i] in self.specials else self.itos[i] for i in ids)

    def token_bytes(self):
        return [0 if s in self.specials else len(s.encode('utf-8')) for s in self.itos]

    def to_meta(self):
        return {'tokenizer': 'char', 'vocab': self.itos, 'specials': self.specials}

    @property
    def vocab_size(self):
        return len(self.itos)

    def special_ids(self):
        return {s: self.stoi[s] for s in self.specials}


class VocabTokenizer:
    """Whole-token vocabulary (whitespace words, cuneiform signs) built on the training split.
    Ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]; extra specials (e.g. a gap token) follow."""
    kind = 'vocab'

    def __init__(self, itos, n_specials=len(SPECIALS)):
        self.itos = list(itos)
        self.n_specials = n_specials
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists, extra_specials=(), min_freq=1):
        from collections import Counter
        c = Counter()
        for toks in token_lists:
            c.update(toks)
        specials = SPECIALS + [s for s in extra_specials if s not in SPECIALS]
        words = sorted((w for w, n in c.items() if n >= min_freq and w not in specials), key=lambda w: (-c[w], w))
        return cls(specials + words, n_specials=len(specials))

    def encode(self, tokens):
        if isinstance(tokens, str):
            tokens = tokens.split()
        unk = self.stoi['[UNK]']
        return [self.stoi.get(t, unk) for t in tokens]

    def decode(self, ids, sep=' '):
        return sep.join(self.itos[i] for i in ids)

    def token_bytes(self):
        # a token is followed by one separating space in the running text
        return [0 if i < self.n_specials else len(s.encode('utf-8')) + 1 for i, s in enumerate(self.itos)]

    def to_meta(self):
        return {'tokenizer': 'vocab', 'vocab': self.itos, 'n_specials': self.n_specials}

    @property
    def vocab_size(self):
        return len(self.itos)

    def special_ids(self):
        return {s: i for i, s in enumerate(self.itos[:self.n_specials])}


class TiktokenGPT2:
    """GPT-2 BPE via tiktoken. Its vocabulary files are downloaded by tiktoken on first use; where
    that is impossible (no network), construction fails with one line pointing at --tokenizer=bpe."""
    kind = 'gpt2'

    def __init__(self):
        try:
            import tiktoken
            self.enc = tiktoken.get_encoding('gpt2')
        except Exception as e:
            raise OfflineError(f"tiktoken could not load the GPT-2 vocabulary ({type(e).__name__}); "
                               f"use --tokenizer=bpe to train a BPE on the corpus instead") from None
        self.eot = self.enc.eot_token

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode([i for i in ids if i != self.eot])

    def token_bytes(self):
        return [0 if i == self.eot else len(self.enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)]

    def to_meta(self):
        return {'tokenizer': 'gpt2'}

    @property
    def vocab_size(self):
        return self.enc.n_vocab

    def special_ids(self):
        return {'<|endoftext|>': self.eot}


class HFTokenizer:
    """A BPE (byte-level) or unigram (metaspace) vocabulary trained on the corpus with HF
    `tokenizers`; saved as tokenizer.json beside the bins."""
    kind = 'hf'

    def __init__(self, tok, path=None):
        self.tok = tok
        self.path = path

    @classmethod
    def train(cls, texts, vocab_size, model='bpe', specials=('[UNK]', '[SEP]', '[MASK]'), path=None):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        if vocab_size >= UINT16_LIMIT:
            die(f"vocab_size {vocab_size} does not fit uint16 token files; choose vocab_size < {UINT16_LIMIT}")
        if vocab_size <= len(specials):
            die(f"vocab_size {vocab_size} leaves no room beside the {len(specials)} special tokens; choose e.g. 4096")
        specials = list(specials)
        if model == 'bpe':
            tok = Tokenizer(models.BPE(unk_token=None))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        elif model == 'unigram':
            tok = Tokenizer(models.Unigram())
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            tok.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token='[UNK]',
                                              show_progress=False)
        else:
            die(f"unknown subword model {model!r}; use bpe or unigram")
        try:
            tok.train_from_iterator(texts, trainer=trainer)
        except Exception as e:  # tokenizers raises a bare Exception, e.g. a unigram too small for the alphabet
            die(f"could not train a {model} tokenizer of vocab_size {vocab_size} ({e}); choose a larger vocab_size")
        return cls(tok, path)

    @classmethod
    def load(cls, path):
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_file(str(path)), path)

    def save(self, path):
        path = Path(path)
        tmp = path.with_name('.' + path.name + '.tmp')
        self.tok.save(str(tmp))
        os.replace(tmp, path)
        self.path = path

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_bytes(self):
        """UTF-8 bytes each piece stands for in the text. Byte-level BPE: one character of the piece
        is one byte. Metaspace (unigram): the piece's UTF-8 length with '▁' counted as the space it
        stands for. (Decoding pieces one at a time would drop that space and split multi-byte
        characters, biasing bits per byte.)"""
        specials = set(self.special_ids().values())
        byte_level = type(self.tok.decoder).__name__ == 'ByteLevel'  # the pre-tokenizer may be a Sequence
        out = []
        for i in range(self.vocab_size):
            piece = self.tok.id_to_token(i)
            if i in specials or piece is None:
                out.append(0)
            elif byte_level:
                out.append(len(piece))
            else:
                out.append(len(piece.replace('\u2581', ' ').encode('utf-8')))
        return out

    def to_meta(self):
        return {'tokenizer': 'hf', 'tokenizer_file': Path(self.path).name if self.path else 'tokenizer.json'}

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size()

    def special_ids(self):
        out = {}
        for s in ('[UNK]', '[SEP]', '[MASK]', '[PAD]', '[CLS]'):
            i = self.tok.token_to_id(s)
            if i is not None:
                out[s] = i
        return out


class MorphTokenizer:
    """An HF subword tokenizer (HFTokenizer above) trained on presegment()ed text: encode() segments
    the text first; the marker is removed by the pre-tokenizer (Split, 'removed'), so no piece contains it,
    pieces never cross a marked boundary, token_bytes() counts only the original text's bytes and decode()
    gives the original text back."""
    kind = 'hf'

    def __init__(self, hf, segmenter, seg, extra_meta=None):
        self.hf, self.tok, self.segmenter, self.seg = hf, hf.tok, segmenter, seg
        self.extra_meta = dict(extra_meta or {})
        self._cache = {}

    @classmethod
    def train(cls, texts, vocab_size, model, segmenter, seg, path=None, extra_meta=None,
              specials=('[UNK]', '[SEP]', '[MASK]')):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        if vocab_size >= UINT16_LIMIT:
            die(f"vocab_size {vocab_size} does not fit uint16 token files")
        split = pre_tokenizers.Split(MARKER, 'removed')
        if model == 'bpe':
            tok = Tokenizer(models.BPE(unk_token=None))
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False)])
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        elif model == 'unigram':
            # 'first': only the start of the text gets the word marker; a morpheme after MARKER gets none
            tok = Tokenizer(models.Unigram())
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.Metaspace(prepend_scheme='first')])
            tok.decoder = decoders.Metaspace(prepend_scheme='first')
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                              unk_token='[UNK]', show_progress=False)
        else:
            raise ValueError(f'unknown subword model {model!r}')
        self = cls(HFTokenizer(tok, path), segmenter, seg, extra_meta)
        cache = self._cache
        tok.train_from_iterator((presegment(t, seg, cache=cache) for t in texts), trainer=trainer)
        if path is not None:
            self.hf.save(path)
        return self

    @classmethod
    def load(cls, data_dir, meta=None, raw_dir='data/turkish_raw'):
        """Rebuild from a prepared dataset (meta.json 'presegment')."""
        data_dir = Path(data_dir)
        meta = meta or load_meta(data_dir)
        ps = meta['presegment']
        name, lex, mm = ps['segmenter'], None, None
        if name == 'lexicon':
            path = data_dir / ps['lexicon_file']
            lex = lexicon_from_text(path.read_text(encoding='utf-8'), str(path))
        elif name == 'morfessor':
            mm = load_morfessor(data_dir / ps['morfessor_model'])
        return cls(HFTokenizer.load(data_dir / meta['tokenizer_file']), name, make_segmenter(name, lex, mm), ps)

    def presegment(self, text):
        return presegment(text, self.seg, cache=self._cache)

    def encode(self, text):
        return self.hf.encode(self.presegment(text))

    def encode_offsets(self, text):
        """(ids, [(start, end)] character offsets into the ORIGINAL text)."""
        s = self.presegment(text)
        e = self.tok.encode(s, add_special_tokens=False)
        orig, k = [], 0  # orig[i]: position in text of character i of s
        for ch in s:
            orig.append(k)
            if ch != MARKER:
                k += 1
        orig.append(k)
        return e.ids, [(orig[a], orig[b]) for a, b in e.offsets]

    def decode(self, ids):
        return self.hf.decode(ids)

    def token_bytes(self):
        """UTF-8 bytes of the ORIGINAL text each piece stands for: the marker never reaches a piece (the
        pre-tokenizer removes it), so it counts 0 bytes and the HF tokenizer's own count is right."""
        return self.hf.token_bytes()

    def to_meta(self):
        return {**self.hf.to_meta(), 'presegment': {**self.extra_meta, 'segmenter': self.segmenter,
                                                     'marker': 'U+E000',
                                                     'how': 'corpus.MorphTokenizer.load(data_dir)'}}

    @property
    def vocab_size(self):
        return self.hf.vocab_size

    def special_ids(self):
        return self.hf.special_ids()


def tokenizer_meta(tok):
    """The meta.json keys that rebuild a tokenizer and name its special ids."""
    return {**tok.to_meta(), 'vocab_size': tok.vocab_size, 'special_ids': tok.special_ids()}


def word_spans(ids, word_start, word_piece):
    """[(start, end)] token ranges of the words of `ids`: a word starts at a word piece that starts a word
    (or follows a non-word piece) and continues over the following word pieces that do not start one."""
    spans, i, n = [], 0, len(ids)
    while i < n:
        t = ids[i]
        if word_piece[t] and (word_start[t] or i == 0 or not word_piece[ids[i - 1]]):
            j = i + 1
            while j < n and word_piece[ids[j]] and not word_start[ids[j]]:
                j += 1
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


# ----------------------------------------------------------------------------- documents and batches

# The `flags` aux array (one uint8 per token, e.g. damage state of a cuneiform sign): bits 0-1 are a
# state, 0 preserved, 1 damaged, 2 editor-restored, 3 missing; only states 0 and 1 may be targets.
FLAG_STATE_MASK = 3


FLAG_MAX_TARGET_STATE = 1


def special_id_set(meta):
    ids = set((meta.get('special_ids') or {}).values())
    if not ids and meta.get('tokenizer') == 'vocab':
        ids = set(range(meta['n_specials']))
    return ids


def documents(data_dir, split):
    """[(start, end)] token spans of the documents of a split (each span excludes its separator)."""
    data = np.memmap(Path(data_dir) / f'{split}.bin', dtype=np.uint16, mode='r')
    sep = load_meta(data_dir)['sep_id']
    starts = np.flatnonzero(np.asarray(data) == sep)
    ends = list(starts[1:]) + [len(data)]
    return [(int(s) + 1, int(e)) for s, e in zip(starts, ends) if e > s + 1]


def fixed_subset(data_dir, split='val', n=500, seed=42):
    """A fixed evaluation subset: n documents of a split drawn with `seed` (all when fewer), in
    file order. The same call gives the same documents before and after training."""
    docs = documents(data_dir, split)
    if len(docs) <= n:
        return docs
    pick = np.sort(np.random.default_rng(seed).choice(len(docs), n, replace=False))
    return [docs[i] for i in pick]


class BatchLoader:
    """Samples `batch_size` windows of `block_size + 1` tokens from {split}.bin.

    Every batch is a pure function of (seed, split, stream, index): micro-batch g of training is
    get('train', g), whatever the number of processes or accumulation steps, so DDP and
    gradient accumulation see the same data, and resuming at data position g continues exactly.
    Returns a dict of CPU tensors: x, y (int64, B x T), doc (document id per position, B x T,
    when the dataset has a separator), and any aux arrays (uint8) named in `aux`."""

    def __init__(self, data_dir, block_size, batch_size, seed=1337, aux=(), doc_aligned=False):
        self.data_dir = Path(data_dir)
        self.meta = load_meta(self.data_dir)
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.sep_id = self.meta.get('sep_id')
        self.aux = tuple(aux)
        self.doc_aligned = doc_aligned
        self._starts = {}
        for split in self.splits():
            n = len(self._mm(split))
            if n < block_size + 2:
                die(f"{self.data_dir}/{split}.bin has {n} tokens, fewer than block_size+2 = {block_size + 2}; "
                    f"lower block_size")

    def splits(self):
        return [s for s in ('train', 'val', 'test') if (self.data_dir / f'{s}.bin').exists()]

    def _mm(self, split, name=None):
        # re-opened every call, as in nanoGPT, to avoid the memmap growing resident memory
        f = self.data_dir / (f'{split}.bin' if name is None else f'{split}.{name}.bin')
        if not f.exists():
            die(f"{f} not found: run the dataset's prepare script first")
        return np.memmap(f, dtype=np.uint16 if name is None else np.uint8, mode='r')

    def doc_starts(self, split):
        """Positions of the separators (document starts) that leave room for a full window."""
        if split not in self._starts:
            data = self._mm(split)
            s = np.flatnonzero(np.asarray(data) == self.sep_id)
            s = s[s <= len(data) - self.block_size - 1]
            if len(s) == 0:
                s = np.array([0])
            self._starts[split] = s
        return self._starts[split]

    def starts(self, split, index, stream=0):
        rng = np.random.default_rng([self.seed, ('train', 'val', 'test').index(split), stream, index])
        if self.doc_aligned and self.sep_id is not None:
            cand = self.doc_starts(split)
            return cand[rng.integers(0, len(cand), self.batch_size)], rng
        n = len(self._mm(split))
        return rng.integers(0, n - self.block_size - 1, self.batch_size), rng

    def get(self, split, index, stream=0):
        """Batch `index` of `split`; stream 0 is training, stream 1 is evaluation."""
        import torch
        ix, rng = self.starts(split, index, stream)
        T = self.block_size
        data = self._mm(split)
        chunk = np.stack([np.asarray(data[i:i + T + 1], dtype=np.int64) for i in ix])
        batch = {'x': torch.from_numpy(chunk[:, :-1].copy()), 'y': torch.from_numpy(chunk[:, 1:].copy())}
        if self.sep_id is not None:
            batch['doc'] = torch.from_numpy(np.cumsum(chunk[:, :-1] == self.sep_id, axis=1))
        for name in self.aux:
            a = self._mm(split, name)
            batch[name] = torch.from_numpy(np.stack([np.asarray(a[i:i + T], dtype=np.int64) for i in ix]))
        batch['rng'] = rng  # the same generator continues for objective noise (MLM masks, ...)
        return batch
