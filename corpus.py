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
import errno
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


MAX_MESSAGE = 600  # characters of one error line: a value quoted from hostile input never floods the terminal


def one_line(msg, n=MAX_MESSAGE):
    """msg on one line (newlines shown as spaces), cut to n characters."""
    msg = ' '.join(str(msg).split('\n'))
    return msg if len(msg) <= n else msg[:n] + f"... ({len(msg):,} characters)"


def die(msg):
    """A user-caused error: one clear line on stderr, exit status 1."""
    print(f"error: {one_line(msg)}", file=sys.stderr)
    raise SystemExit(1)


def excerpt(text, n=60):
    """A short quotation of `text` for a message: at most n characters, with the total length when cut (a
    warning about a 5 MB word prints 60 characters of it, not the word)."""
    if not isinstance(text, str):
        text = repr(text)
        return text if len(text) <= n else text[:n] + f"... ({len(text):,} characters)"
    return repr(text) if len(text) <= n else repr(text[:n]) + f"... ({len(text):,} characters)"


# The machine, not the program, is at fault for these: one line instead of a traceback, whatever script raised
# them (an uncaught one still exits 1). Every other exception keeps its traceback: it is a bug to report.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
                       errno.EFBIG: 'the file would exceed the size limit', errno.EROFS: 'the file system is read-only',
                       errno.EACCES: 'permission denied', errno.EPERM: 'operation not permitted'}


def environment_error(e):
    """One line for an error of the machine (disk full, no permission, out of memory), or None for any other.
    Libraries that wrap the OS error in their own (HF tokenizers' Rust writer) are recognised by its text."""
    if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
        where = f" ({e.filename})" if e.filename else ''
        return f"{_ENVIRONMENT_ERRNOS[e.errno]}{where}: free space or fix the permissions, then run again"
    text = str(e)
    for code, what in _ENVIRONMENT_ERRNOS.items():
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and (f'os error {code})' in text or os.strerror(code) in text):
            return f"{what} ({one_line(text, 120)}): free space, then run again"
    if isinstance(e, MemoryError) or type(e).__name__ == 'OutOfMemoryError' or (
            isinstance(e, RuntimeError) and ("can't allocate memory" in text or 'not enough memory' in text)):
        return "out of memory: use a smaller model, batch_size or dataset, or a machine with more memory"
    return None


def _excepthook(kind, value, tb):
    msg = environment_error(value)
    if msg is None:
        return sys.__excepthook__(kind, value, tb)
    print(f"error: {msg}", file=sys.stderr)


sys.excepthook = _excepthook


# ----------------------------------------------------------------------------- JSON of untrusted origin

MAX_JSON_DEPTH = 200  # ORACC corpusjson nests ~20 deep; nothing this toolkit reads needs more


def json_depth(obj):
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        deepest = max(deepest, d)
        stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return deepest


def loads_json(text, max_depth=MAX_JSON_DEPTH):
    """json.loads for text this toolkit did not write: nesting deeper than max_depth is refused (a hostile file
    100,000 levels deep would otherwise end in a RecursionError here or in the code that walks it). Errors are
    json.JSONDecodeError (a ValueError), as for any malformed JSON."""
    try:
        obj = json.loads(text)
    except RecursionError:
        obj = None
        depth = None
    else:
        depth = json_depth(obj)
        if depth <= max_depth:
            return obj
    raise json.JSONDecodeError(f"nested deeper than {max_depth} levels" + (f" ({depth})" if depth else ''),
                               text if isinstance(text, str) else '', 0)


def read_json(path, what='', max_depth=MAX_JSON_DEPTH):
    """A JSON file, or one line (exit 1) saying why it cannot be read: missing, not UTF-8, malformed, too deep."""
    path = Path(path)
    try:
        return loads_json(path.read_bytes().decode('utf-8'), max_depth)
    except FileNotFoundError:
        die(f"{path} not found{what and ': ' + what}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        die(f"{path} is not readable JSON ({str(e).splitlines()[0][:120]}){what and ': ' + what}")


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


_META_CACHE = {}


def load_meta(data_dir):
    """data_dir/meta.json, checked (meta_problem): every script reads a dataset's meta.json through here, so a
    damaged or hand-edited one ends in one line that says to re-run the prepare script, never in a traceback
    or a wrong result later. Memoised per file version."""
    path = Path(data_dir) / 'meta.json'
    if not path.exists():
        die(f"{path} not found: run the dataset's prepare script first (e.g. python prepare/shakespeare.py)")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _META_CACHE:
        meta = read_json(path, "re-run the dataset's prepare script")
        problem = meta_problem(meta)
        if problem:
            die(f"{path}: {problem}; re-run the dataset's prepare script (it writes a consistent meta.json)")
        _META_CACHE[key] = meta
    return json.loads(json.dumps(_META_CACHE[key]))  # a copy: callers may change theirs


TOKENIZER_KINDS = ('char', 'vocab', 'gpt2', 'hf')


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _plain_name(v):
    """A file name inside the dataset directory: no directory part, not . or .."""
    return isinstance(v, str) and v not in ('', '.', '..') and '/' not in v and '\\' not in v and '\0' not in v


def meta_problem(meta):
    """What is wrong with a meta.json (None when nothing): the keys that say what a token id means, their types
    and ranges (ids of uint16 files, specials inside the vocabulary), and file names that stay in the directory."""
    if not isinstance(meta, dict):
        return f"holds a {type(meta).__name__}, not a JSON object"
    V = meta.get('vocab_size')
    if not _is_int(V) or not 1 <= V <= UINT16_LIMIT:
        return f"vocab_size must be an integer in 1..{UINT16_LIMIT} (ids are uint16), got {excerpt(V)}"
    kind = meta.get('tokenizer')
    if kind not in TOKENIZER_KINDS:
        return f"tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, got {excerpt(kind)}"
    if kind in ('char', 'vocab'):
        vocab = meta.get('vocab')
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab) or len(vocab) != V:
            return f"a {kind} tokenizer needs 'vocab', a list of {V} strings (one per id)"
    if kind == 'char' and not (isinstance(meta.get('specials'), list) and all(isinstance(t, str) for t in meta['specials'])):
        return "a char tokenizer needs 'specials', a list of strings"
    if kind == 'vocab' and not (_is_int(meta.get('n_specials')) and 0 <= meta['n_specials'] <= V):
        return f"n_specials must be an integer in 0..{V}, got {excerpt(meta.get('n_specials'))}"
    sp = meta.get('special_ids', {})
    if not isinstance(sp, dict):
        return "special_ids must be an object {token: id}"
    for name, i in sp.items():
        if not _is_int(i) or not 0 <= i < V:
            return f"the id of {excerpt(name)} in special_ids must be an integer in 0..{V - 1}, got {excerpt(i)}"
    if 'sep_id' in meta and meta['sep_id'] is not None and not (_is_int(meta['sep_id']) and 0 <= meta['sep_id'] < V):
        return f"sep_id must be an integer in 0..{V - 1}, got {excerpt(meta['sep_id'])}"
    if meta.get('dtype', 'uint16') != 'uint16':
        return f"dtype must be uint16, got {excerpt(meta.get('dtype'))}"
    aux = meta.get('aux', {})
    if not isinstance(aux, dict) or not all(isinstance(n, str) and n.isidentifier() and t == 'uint8' for n, t in aux.items()):
        return "aux must map plain names to 'uint8'"
    for k in ('tokenizer_file',):
        if k in meta and not _plain_name(meta[k]):
            return f"{k} must be a file name inside the dataset directory, got {excerpt(meta[k])}"
    if kind == 'hf' and not _plain_name(meta.get('tokenizer_file', 'tokenizer.json')):
        return "tokenizer_file must be a file name inside the dataset directory"
    ps = meta.get('presegment')
    if ps is not None:
        if not isinstance(ps, dict):
            return "presegment must be an object"
        for k in ('lexicon_file', 'morfessor_model'):
            if k in ps and not _plain_name(ps[k]):
                return f"presegment.{k} must be a file name inside the dataset directory, got {excerpt(ps[k])}"
    for k in ('word_start', 'token_class'):
        if k in meta and not (isinstance(meta[k], list) and len(meta[k]) == V and all(_is_int(v) for v in meta[k])):
            return f"{k} must be a list of {V} integers (one per id)"
    return None


_CHECKED_BINS = {}


def check_token_file(data_dir, split, vocab_size=None):
    """A split's token file as it must be: whole uint16 values, every id below the vocabulary size (an id beyond it
    would index past the embedding mid-run), its aux arrays of the same length. Read once per file version and
    process (numpy, in 64M-token chunks: about a second per GB). Ends the program with one line otherwise."""
    data_dir = Path(data_dir)
    path = data_dir / f'{split}.bin'
    meta = load_meta(data_dir)
    V = vocab_size or meta['vocab_size']
    if not path.exists():
        die(f"{path} not found: run the dataset's prepare script first")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, V)
    if key in _CHECKED_BINS:
        return
    if st.st_size % 2:
        die(f"{path} has an odd number of bytes ({st.st_size:,}): not a file of uint16 ids (cut short?); re-run the prepare script")
    n = st.st_size // 2
    if n:
        data = np.memmap(path, dtype=np.uint16, mode='r')
        step = 1 << 26
        top = max(int(data[i:i + step].max()) for i in range(0, n, step))
        if top >= V:
            die(f"{path} holds token id {top}, beyond the vocabulary of {V} in meta.json: the bins and meta.json are "
                f"of different builds; re-run the dataset's prepare script")
    for name in meta.get('aux', {}):
        a = data_dir / f'{split}.{name}.bin'
        if a.exists() and a.stat().st_size != n:
            die(f"{a} has {a.stat().st_size:,} entries for the {n:,} tokens of {path.name}; re-run the prepare script")
    _CHECKED_BINS[key] = True


def check_dataset(data_dir, vocab_size=None):
    """meta.json (load_meta), the tokenizer file it names, and every split's token file (check_token_file) of a
    prepared dataset."""
    meta = load_meta(data_dir)
    if meta['tokenizer'] == 'hf' and not (Path(data_dir) / meta.get('tokenizer_file', 'tokenizer.json')).is_file():
        die(f"{Path(data_dir) / meta.get('tokenizer_file', 'tokenizer.json')} not found: re-run the dataset's prepare script")
    for split in ('train', 'val', 'test'):
        if (Path(data_dir) / f'{split}.bin').exists():
            check_token_file(data_dir, split, vocab_size)


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
        try:
            return cls(Tokenizer.from_file(str(path)), path)
        except Exception as e:  # tokenizers raises a bare Exception for a missing or damaged file
            die(f"{path} is not a readable tokenizer ({one_line(e, 120)}); re-run the dataset's prepare script")

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
            check_token_file(self.data_dir, split)
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
