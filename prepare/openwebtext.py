"""
OpenWebText (Gokaslan & Cohen 2019) for MDLM's production run, in nanoGPT's manner (data/openwebtext/prepare.py).

    python prepare/openwebtext.py                                 # online: the Hugging Face hub, GPT-2 BPE
    python prepare/openwebtext.py --input=DIR_OR_FILE [--tokenizer=bpe --vocab_size=32768]

Sources:
  online   Skylion007/openwebtext from the Hugging Face hub with `datasets` (imported only here; not in
           requirements.txt: `pip install datasets`); ~8M documents, ~9B GPT-2 tokens
  --input  a directory of .txt files (one document each, the OpenWebText layout once its .xz archives are
           unpacked) or a .jsonl / .json file of records with a "text" field (the hub's layout)
There is no offline registry copy: without the network (or `datasets`) the script says so in one line and
how to pass local files.

Tokenizer (--tokenizer=auto): GPT-2 BPE via tiktoken when its files can be fetched, else (or with
--tokenizer=bpe) a byte-level BPE trained with HF `tokenizers` on the first --bpe_docs train documents
(prepare.common.make_tokenizer). MDLM needs a [MASK] id: the trained BPE has one; with GPT-2 train.py adds
it at id vocab_size (50257), as printed below.

Held-out split by document (prepare.common.split_by_document; val --val_fraction of the documents, nanoGPT's
0.0005). Tokens are written in shards of --shard_docs documents under out/raw/shards-<key>/ with a
manifest.json: an interrupted run (Ctrl-C, kill) resumes where it stopped, re-tokenizing nothing that is
done; <key> names the source, split and tokenizer, so other settings never mix. The shards are then joined
into uint16 memmaps train.bin / val.bin (each document preceded by the separator) and the dataset directory
is swapped in whole (prepare.common.staged_dataset). Licence: OpenWebText CC0 (the text: its authors').
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, HFTokenizer, OfflineError, tokenizer_meta
from prepare.common import (auto_tokenizer, check_vocab_fits, make_tokenizer, read_utf8, split_by_document,
                            staged_dataset, to_uint16)

HF_NAME = 'Skylion007/openwebtext'
UNREACHABLE = ("OpenWebText cannot be reached ({why}): pass local files with --input=DIR (a directory of .txt "
               "files, one document each) or --input=FILE.jsonl / FILE.json (records with a \"text\" field)")


class Corpus:
    """Document ids (sorted) and their texts, read on demand (the full corpus does not fit in memory)."""

    def __init__(self, ids, get, name):
        self.ids, self.get, self.name = ids, get, name


def load_online(cache):
    try:
        import datasets
    except ImportError:
        raise OfflineError("the Hugging Face `datasets` package is not installed: pip install datasets")
    try:
        ds = datasets.load_dataset(HF_NAME, split='train', cache_dir=str(cache))  # no loading script: no code runs
    except Exception as e:  # no network, hub refused, ...: one line
        raise OfflineError(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}")
    width = len(str(len(ds)))
    return Corpus([f'owt{i:0{width}d}' for i in range(len(ds))], lambda d: ds[int(d[3:])]['text'], f'hub {HF_NAME}')


def load_input(path):
    path = Path(path)
    if not path.exists():
        die(f"--input {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob('*.txt'))
        if not files:
            die(f"{path} has no .txt files; give a directory of .txt files or a .jsonl / .json with a \"text\" field")
        return Corpus([str(f.relative_to(path)) for f in files], lambda d: read_utf8(path / d), f'input {path}')
    texts = []
    try:
        if path.suffix == '.jsonl':
            for n, line in enumerate(path.read_text(encoding='utf-8').splitlines()):
                if line.strip():
                    texts.append(json.loads(line)['text'])
        elif path.suffix == '.json':
            data = json.loads(path.read_text(encoding='utf-8'))
            texts = [r['text'] for r in (data if isinstance(data, list) else data.get('data', data.get('train', [])))]
        else:
            die(f"{path}: give a directory of .txt files or a .jsonl / .json file")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        die(f"{path}: not records with a \"text\" field ({type(e).__name__}: {str(e)[:80]})")
    width = len(str(len(texts)))
    keep = [i for i, t in enumerate(texts) if t.strip()]
    return Corpus([f'doc{i:0{width}d}' for i in keep], lambda d: texts[int(d[3:])], f'input {path}')


def shard_key(corpus, splits, kind, vocab_size, shard_docs):
    h = hashlib.sha256(json.dumps([corpus.name, {s: v for s, v in splits.items()}, kind, vocab_size, shard_docs])
                       .encode()).hexdigest()
    return h[:12]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'input'], help='no offline copy exists')
    ap.add_argument('--input', default='')
    ap.add_argument('--tokenizer', default='auto', choices=['auto', 'gpt2', 'bpe'])
    ap.add_argument('--vocab_size', type=int, default=32768, help='for --tokenizer=bpe (< 65536)')
    ap.add_argument('--bpe_docs', type=int, default=20000, help='train documents the BPE is trained on')
    ap.add_argument('--val_fraction', type=float, default=0.0005)
    ap.add_argument('--shard_docs', type=int, default=50000, help='documents per shard (the unit of resumption)')
    ap.add_argument('--out', default='data/openwebtext')
    ap.add_argument('--seed', type=int, default=1337)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.source == 'input' and not a.input:
        die("--source=input needs --input=PATH")
    if a.input:
        corpus = load_input(a.input)
    else:
        try:
            corpus = load_online(out / 'raw' / 'hf')
        except OfflineError as e:
            die(UNREACHABLE.format(why=e))
    print(f"source: {corpus.name} ({len(corpus.ids):,} documents)")
    splits = split_by_document(corpus.ids, fractions=(1 - a.val_fraction, a.val_fraction), names=('train', 'val'),
                               seed=a.seed)
    kind = auto_tokenizer(a.tokenizer, a.vocab_size)
    key = shard_key(corpus, splits, kind, a.vocab_size if kind == 'bpe' else 0, a.shard_docs)
    work = out / 'raw' / f'shards-{key}'
    work.mkdir(parents=True, exist_ok=True)
    if kind == 'bpe':
        if (work / 'tokenizer.json').exists():  # a resumed run: the tokenizer its shards were written with
            tok = HFTokenizer.load(work / 'tokenizer.json')
        else:
            tmp = work / '.tok.tmp'
            tmp.mkdir(exist_ok=True)
            tok = make_tokenizer('bpe', [corpus.get(d) for d in splits['train'][:a.bpe_docs]], a.vocab_size, tmp)
            os.replace(tmp / 'tokenizer.json', work / 'tokenizer.json')
            shutil.rmtree(tmp, ignore_errors=True)
            tok = HFTokenizer.load(work / 'tokenizer.json')
    else:
        tok = make_tokenizer('gpt2', [])
    check_vocab_fits(tok.vocab_size)
    sp = tok.special_ids()
    sep = sp.get('[SEP]', sp.get('<|endoftext|>'))
    mask = sp.get('[MASK]')
    print(f"tokenizer: {kind}, {tok.vocab_size} ids; separator {sep}; [MASK] "
          + (f"{mask}" if mask is not None else f"added by train.py at id {tok.vocab_size}"))
    manifest_path = work / 'manifest.json'
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    jobs = [(s, k, names[i:i + a.shard_docs]) for s, names in splits.items()
            for k, i in enumerate(range(0, len(names), a.shard_docs))]
    todo = [j for j in jobs if f'{j[0]}-{j[1]:05d}' not in manifest]
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} shards already written in {work}")
    from tqdm import tqdm
    for split, k, names in tqdm(todo, desc='tokenizing shards', disable=not todo):
        write_shard(work, manifest, split, k, names, corpus, tok, sep)
    with staged_dataset(out) as tmp:
        counts = {}
        for split in splits:
            entries = [manifest[f'{split}-{k:05d}'] for s, k, _ in jobs if s == split]
            total = sum(e['tokens'] for e in entries)
            arr = np.memmap(tmp / f'{split}.bin', dtype=np.uint16, mode='w+', shape=(max(total, 1),))
            pos = 0
            for e in tqdm(entries, desc=f'writing {split}.bin', leave=False):
                part = np.fromfile(work / e['file'], dtype=np.uint16)
                arr[pos:pos + len(part)] = part
                pos += len(part)
            arr.flush()
            del arr
            if total == 0:
                open(tmp / f'{split}.bin', 'wb').close()
            counts[split] = {'tokens': int(total), 'documents': sum(e['documents'] for e in entries)}
        if kind == 'bpe':
            shutil.copy(work / 'tokenizer.json', tmp / 'tokenizer.json')
        meta = {**tokenizer_meta(tok), 'dataset': 'openwebtext', 'source': corpus.name,
                'licence': 'OpenWebText: CC0 (the collection); the texts belong to their authors',
                'documents': {s: len(v) for s, v in splits.items()}, 'shards': key,
                'sep_id': int(sep), 'dtype': 'uint16', 'counts': counts, 'aux': {}}
        (tmp / 'meta.json').write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    print(' '.join(f"{s} {c['tokens']:,} tokens / {c['documents']:,} docs" for s, c in counts.items()))


def write_shard(work, manifest, split, k, names, corpus, tok, sep):
    """Tokenize one shard (each document preceded by the separator) to work/SPLIT-K.bin, atomically, then
    record it in the manifest (written atomically too): a kill leaves either the shard recorded or not."""
    parts = []
    for d in names:
        parts.append(np.array([sep], dtype=np.int64))
        parts.append(np.asarray(tok.encode(corpus.get(d)), dtype=np.int64))
    arr = to_uint16(np.concatenate(parts))
    name = f'{split}-{k:05d}'
    tmp = work / f'.{name}.bin.tmp'
    arr.tofile(tmp)
    os.replace(tmp, work / f'{name}.bin')
    manifest[name] = {'file': f'{name}.bin', 'tokens': int(arr.size), 'documents': len(names)}
    tmp = work / '.manifest.json.tmp'
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, work / 'manifest.json')


if __name__ == '__main__':
    main()
