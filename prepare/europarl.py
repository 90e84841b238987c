"""
English-French parallel text for the Backpack vs transformer comparison -> data/europarl.

    python prepare/europarl.py                               # online Europarl v7, else the offline fallback
    python prepare/europarl.py --source=offline              # LibreOffice help EN/FR paragraph pairs
    python prepare/europarl.py --input=PREFIX                # PREFIX.en + PREFIX.fr, line-aligned (or a .tgz)

Sources (the first that works, unless --source is given):
  online   Europarl v7 fr-en (statmt.org, 190 MB tgz): europarl-v7.fr-en.en / .fr, line-aligned. The
           archive has no session boundaries, so a document is a chunk of --chunk consecutive lines.
  offline  the Debian packages libreoffice-help-en-us + libreoffice-help-fr (apt-get download, MPL-2.0):
           the p, h1-h6, td, li and span elements whose id starts with par_id or hd_id, joined on
           (relative file, id); identical (untranslated) pairs dropped. A document is one help file.
  --input  PREFIX.en and PREFIX.fr (line-aligned), or a Europarl-style .tgz; documents as online.
Every source: whitespace normalised, empty / identical pairs dropped, length filter (--min_words ..
--max_words words on each side), exact duplicates dropped (first occurrence kept).

Splits are by document (80/10/10, prepare.common.split_by_document). The held-out translation pairs
(test.pairs.jsonl, at most --test_pairs) come from the test documents only, and any test pair whose
English or French side occurs anywhere in the train split is removed, so it never appears in training.

Training text: one line per pair, `<en> EN <fr> FR`; a deterministic 20% of the pairs (hash of the
pair) are written instead as two monolingual lines `<en> EN` and `<fr> FR`. The tags <en> and <fr> are
special tokens of the BPE (one id each, listed in meta.json 'lang_tags'), so evaluate.py can tell the
language of every token (the last tag before it). A translation prompt is `<en> EN <fr>`.
Tokenizer: a byte-level BPE trained with HF tokenizers on the train split of both languages
(--vocab_size, < 65536). GPT-2 BPE (tiktoken) is not offered: its <en>/<fr> would not be single tokens.

Word similarity (for evaluate.py), written to data/europarl/wordsim/: SimLex-999 and WordSim-353 from
the gensim==4.4.0 wheel's test data (pip download, read with zipfile, gensim is not installed); a small
hand-written EN-FR list of translation pairs (bilingual_en_fr.tsv); Multi-SimLex EN/FR when --multisimlex
URLs are reachable (none is, offline: it says so).
"""
import argparse
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, HFTokenizer, OfflineError, tokenizer_meta
from download import download_problem, DOWNLOAD_TIMEOUT, fetch_url, pip_download, read_member, record_download
from prepare.common import (decode_replacing, decode_utf8, load_from_source, read_utf8, split_by_document,
                            staged_dataset, write_dataset)

EUROPARL_URL = 'https://www.statmt.org/europarl/v7/fr-en.tgz'
MULTISIMLEX_URLS = {  # Multi-SimLex (Vulic et al. 2020) per-language files; only reachable online
    'multisimlex_en': 'https://raw.githubusercontent.com/cambridgeltl/multisimlex/master/data/ENG.csv',
    'multisimlex_fr': 'https://raw.githubusercontent.com/cambridgeltl/multisimlex/master/data/FRA.csv'}
TAGS = ('<en>', '<fr>')
SPECIALS = ('[UNK]', '[SEP]', '[MASK]') + TAGS
TRACKED = {'p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'td', 'li', 'span'}
# A small EN-FR translation list for the cross-lingual sense similarity (everyday + software words that
# occur in both sources; pairs spelled the same in both languages are left out on purpose).
BILINGUAL = [('file', 'fichier'), ('window', 'fenêtre'), ('table', 'tableau'), ('text', 'texte'),
             ('cell', 'cellule'), ('column', 'colonne'), ('row', 'ligne'), ('chart', 'diagramme'),
             ('font', 'police'), ('color', 'couleur'), ('print', 'imprimer'), ('save', 'enregistrer'),
             ('open', 'ouvrir'), ('close', 'fermer'), ('insert', 'insérer'), ('delete', 'supprimer'),
             ('name', 'nom'), ('number', 'nombre'), ('example', 'exemple'), ('function', 'fonction'),
             ('value', 'valeur'), ('sheet', 'feuille'), ('field', 'champ'), ('button', 'bouton'),
             ('key', 'touche'), ('list', 'liste'), ('formula', 'formule'), ('shape', 'forme'),
             ('paragraph', 'paragraphe'), ('tools', 'outils'), ('help', 'aide'), ('user', 'utilisateur'),
             ('new', 'nouveau'), ('left', 'gauche'), ('right', 'droite'), ('size', 'taille'),
             ('first', 'premier'), ('language', 'langue'), ('word', 'mot'), ('character', 'caractère'),
             ('year', 'année'), ('day', 'jour'), ('country', 'pays'), ('law', 'loi'), ('work', 'travail'),
             ('question', 'question'), ('report', 'rapport'), ('time', 'temps'), ('president', 'président'),
             ('commission', 'commission'), ('member', 'membre'), ('people', 'personnes'), ('right', 'droit'),
             ('data', 'données'), ('search', 'rechercher'), ('change', 'modifier'), ('line', 'ligne'),
             ('page', 'page'), ('document', 'document'), ('menu', 'menu')]
BILINGUAL = [(e, f) for e, f in BILINGUAL if e != f]


def norm(s):
    return re.sub(r'\s+', ' ', html.unescape(s)).strip()


# ----------------------------------------------------------------------------- offline: LibreOffice help

class IdParagraphs(HTMLParser):
    """Text of every tracked element whose id starts with par_id / hd_id (nested text included)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.active, self.found = [], {}   # active: [tag, id, depth, parts]

    def handle_starttag(self, tag, attrs):
        for a in self.active:
            if a[0] == tag:
                a[2] += 1
        i = dict(attrs).get('id') or ''
        if tag in TRACKED and (i.startswith('par_id') or i.startswith('hd_id')):
            self.active.append([tag, i, 1, []])

    def handle_endtag(self, tag):
        keep = []
        for a in self.active:
            if a[0] == tag:
                a[2] -= 1
            if a[2] == 0:
                self.found.setdefault(a[1], norm(''.join(a[3])))
            else:
                keep.append(a)
        self.active = keep

    def handle_data(self, data):
        for a in self.active:
            a[3].append(data)


def id_paragraphs(path):
    p = IdParagraphs()
    p.feed(decode_replacing(Path(path).read_bytes(), path))
    p.close()
    return p.found


def libreoffice_pairs(root):
    """{relative file: [(en, fr)]} from extracted help trees root/usr/share/libreoffice/help/{en-US,fr}."""
    base = Path(root) / 'usr/share/libreoffice/help'
    en_dir, fr_dir = base / 'en-US', base / 'fr'
    docs = {}
    for f in sorted(en_dir.rglob('*.html')):
        rel = f.relative_to(en_dir).as_posix()
        g = fr_dir / rel
        if not g.exists():
            continue
        en, fr = id_paragraphs(f), id_paragraphs(g)
        pairs = [(en[i], fr[i]) for i in en if i in fr]
        if pairs:
            docs[rel] = pairs
    return docs


def load_offline(raw):
    raw.mkdir(parents=True, exist_ok=True)
    debs = {}
    for pkg in ('libreoffice-help-en-us', 'libreoffice-help-fr'):
        hit = sorted(raw.glob(f'{pkg}_*.deb'))
        problem = download_problem(hit[-1]) if hit else None
        if problem:  # a cached .deb is reused only when it is what was downloaded
            print(f"{hit[-1]} {problem}: downloading it again")
            hit[-1].unlink()
            hit = []
        if not hit:
            print(f"offline fallback: apt-get download {pkg} -> {raw}")
            try:
                r = subprocess.run(['apt-get', 'download', pkg], cwd=raw, capture_output=True, text=True,
                                   timeout=DOWNLOAD_TIMEOUT)
                last = (r.stderr.strip().splitlines() or ['no output'])[-1]
            except subprocess.TimeoutExpired:
                r, last = None, f"no answer within {DOWNLOAD_TIMEOUT} s"
            hit = sorted(raw.glob(f'{pkg}_*.deb'))
            if r is None or r.returncode != 0 or not hit:
                die(f"apt-get download {pkg} failed ({last}); run `apt-get update` first, or give --input=PREFIX")
            record_download(hit[-1], f'apt-get download {pkg}')
        debs[pkg] = hit[-1]
    ext = raw / 'extracted'
    if not (ext / 'usr/share/libreoffice/help/fr').exists():
        tmp = raw / '.extracting'
        shutil.rmtree(tmp, ignore_errors=True)
        for d in debs.values():
            r = subprocess.run(['dpkg-deb', '-x', str(d), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                last = (r.stderr.strip().splitlines() or ['no output'])[-1]
                die(f"dpkg-deb could not unpack {d} ({last}); delete it and run again, or give --input=PREFIX")
        tmp.rename(ext)
    docs = libreoffice_pairs(ext)
    if not docs:
        die(f"no aligned paragraphs found under {ext}; delete {raw} and try again")
    return docs, 'debian ' + ' + '.join(d.name for d in debs.values()), 'MPL-2.0 (LibreOffice help)'


# ----------------------------------------------------------------------------- online / --input: Europarl

def chunk_docs(en_lines, fr_lines, chunk, name):
    if len(en_lines) != len(fr_lines):
        die(f"{name}: {len(en_lines)} English lines but {len(fr_lines)} French lines; the files must be line-aligned")
    return {f'{name}:{k // chunk:06d}': list(zip(en_lines[k:k + chunk], fr_lines[k:k + chunk]))
            for k in range(0, len(en_lines), chunk)}


def read_tgz(path, chunk, user_file=False):
    """A Europarl-style .tgz: the downloaded archive (invalid UTF-8 replaced and counted) or, with
    user_file, one given with --input (anything but UTF-8 refused)."""
    decode = decode_utf8 if user_file else decode_replacing
    en = fr = None
    try:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.name.endswith('.en'):
                    en = decode(read_member(tf, m), f'{path}:{m.name}').split('\n')
                elif m.name.endswith('.fr'):
                    fr = decode(read_member(tf, m), f'{path}:{m.name}').split('\n')
    except (tarfile.TarError, EOFError, OSError) as e:  # OSError: a broken gzip stream
        die(f"{path} is not a readable .tgz ({type(e).__name__}): expected a Europarl-style archive with .en and "
            f".fr members" + ('' if user_file else '; delete it and run again'))
    if en is None or fr is None:
        die(f"{path} holds no .en/.fr pair of files")
    return chunk_docs(en, fr, chunk, 'europarl')


def load_online(raw, chunk):
    path = fetch_url(EUROPARL_URL, raw / 'fr-en.tgz', timeout=20)
    return read_tgz(path, chunk), 'europarl-v7 fr-en (statmt.org)', 'Europarl: no copyright restrictions (statmt.org)'


def load_input(path, chunk):
    p = Path(path)
    if p.suffix in ('.tgz', '.gz') and p.exists():
        return read_tgz(p, chunk, user_file=True), f'input {p}', 'as the input'
    en, fr = Path(str(p) + '.en'), Path(str(p) + '.fr')
    if not (en.exists() and fr.exists()):
        die(f"--input {path}: need {en} and {fr} (line-aligned) or a .tgz")
    return (chunk_docs(read_utf8(en).split('\n'), read_utf8(fr).split('\n'), chunk, p.name),
            f'input {p}', 'as the input')


# ----------------------------------------------------------------------------- cleaning, format, word similarity

def clean_docs(docs, min_words, max_words):
    seen, out, stats = set(), {}, {'raw': 0, 'identical': 0, 'length': 0, 'duplicate': 0}
    for d in sorted(docs):
        keep = []
        for en, fr in docs[d]:
            stats['raw'] += 1
            en, fr = norm(en), norm(fr)
            if not en or not fr or en == fr:
                stats['identical'] += 1
                continue
            if not (min_words <= len(en.split()) <= max_words and min_words <= len(fr.split()) <= max_words):
                stats['length'] += 1
                continue
            if (en, fr) in seen:
                stats['duplicate'] += 1
                continue
            seen.add((en, fr))
            keep.append((en, fr))
        if keep:
            out[d] = keep
    return out, stats


def monolingual(en, fr):
    """Deterministic 20% of the pairs go in as two monolingual lines."""
    return int(hashlib.sha1(f'{en}\t{fr}'.encode()).hexdigest()[:8], 16) % 5 == 0


def doc_text(pairs):
    lines = []
    for en, fr in pairs:
        lines += [f'<en> {en}', f'<fr> {fr}'] if monolingual(en, fr) else [f'<en> {en} <fr> {fr}']
    return '\n'.join(lines) + '\n'


def word_similarity_files(raw, out):
    """SimLex-999 / WordSim-353 from the gensim wheel, the bilingual list, Multi-SimLex when online."""
    wdir = out / 'wordsim'
    wdir.mkdir(parents=True, exist_ok=True)
    got = {}
    try:
        whl = pip_download('gensim==4.4.0', raw)
        with zipfile.ZipFile(whl) as z:
            for name, member in (('simlex999', 'gensim/test/test_data/simlex999.txt'),
                                 ('wordsim353', 'gensim/test/test_data/wordsim353.tsv')):
                rows = []
                for line in decode_replacing(read_member(z, member), f'{whl.name}:{member}').splitlines():
                    parts = line.split('\t')
                    if line.startswith('#') or len(parts) < 3:
                        continue
                    rows.append(f'{parts[0].strip()}\t{parts[1].strip()}\t{float(parts[2])}')
                (wdir / f'{name}.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
                got[name] = len(rows)
    except SystemExit:
        print("word similarity: the gensim wheel could not be fetched; SimLex-999 / WordSim-353 skipped")
    for name, url in MULTISIMLEX_URLS.items():
        try:
            path = fetch_url(url, raw / f'{name}.csv', timeout=10)
            rows = []
            for line in decode_replacing(path.read_bytes(), path).splitlines()[1:]:
                parts = line.split(',')
                if len(parts) >= 3:
                    try:
                        rows.append(f'{parts[0].strip()}\t{parts[1].strip()}\t{float(parts[-1])}')
                    except ValueError:
                        pass
            (wdir / f'{name}.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
            got[name] = len(rows)
        except OfflineError as e:
            print(f"word similarity: Multi-SimLex unreachable ({e}); {name} skipped (offline there is no French set)")
    (wdir / 'bilingual_en_fr.tsv').write_text(''.join(f'{e}\t{f}\n' for e, f in BILINGUAL), encoding='utf-8')
    got['bilingual_en_fr'] = len(BILINGUAL)
    return got


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'offline', 'input'])
    ap.add_argument('--input', default='')
    ap.add_argument('--vocab_size', type=int, default=8192)
    ap.add_argument('--out', default='data/europarl')
    ap.add_argument('--raw', default='', help='download cache (default OUT/raw)')
    ap.add_argument('--chunk', type=int, default=1000, help='lines per document for line-aligned sources')
    ap.add_argument('--min_words', type=int, default=2)
    ap.add_argument('--max_words', type=int, default=80)
    ap.add_argument('--test_pairs', type=int, default=2000, help='most held-out translation pairs kept')
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--no_wordsim', action='store_true', help='skip the word-similarity downloads (tests)')
    a = ap.parse_args(argv)
    out = Path(a.out)
    raw = Path(a.raw) if a.raw else out / 'raw'
    if raw.resolve() == out.resolve():
        die("--raw must not be the dataset directory itself: it is replaced as a whole; use e.g. --raw=OUT/raw")
    if a.chunk < 1:
        die(f"--chunk={a.chunk}: a document needs at least one line; use e.g. --chunk=1000")
    docs, used, licence = load_from_source(a.source, a.input, lambda: load_online(raw, a.chunk),
                                           lambda: load_offline(raw), lambda: load_input(a.input, a.chunk),
                                           'the offline LibreOffice help pairs')
    docs, stats = clean_docs(docs, a.min_words, a.max_words)
    n_pairs = sum(len(v) for v in docs.values())
    print(f"source: {used}: {len(docs)} documents, {n_pairs:,} pairs kept of {stats['raw']:,} "
          f"(dropped: {stats['identical']:,} empty/identical, {stats['length']:,} by length, {stats['duplicate']:,} duplicates)")
    if n_pairs == 0:
        die("no sentence pairs left after cleaning; check the source or --min_words/--max_words")

    splits = split_by_document(list(docs), seed=a.seed)
    train_en = {en for d in splits['train'] for en, _ in docs[d]}
    train_fr = {fr for d in splits['train'] for _, fr in docs[d]}
    test = [(en, fr, d) for d in splits['test'] for en, fr in docs[d] if en not in train_en and fr not in train_fr]
    leaked = sum(len(docs[d]) for d in splits['test']) - len(test)
    test = test[:a.test_pairs] if len(test) <= a.test_pairs else \
        [test[i] for i in sorted(__import__('random').Random(a.seed).sample(range(len(test)), a.test_pairs))]
    print(f"held-out translation pairs: {len(test):,} from the test documents "
          f"({leaked:,} test pairs whose side also occurs in train excluded)")

    texts = {d: doc_text(docs[d]) for d in docs}
    # the download cache is carried into the new dataset directory when it lives inside (OUT/raw by default)
    r, o = raw.resolve(), out.resolve()
    with staged_dataset(out, keep=[r.relative_to(o).parts[0]] if r.is_relative_to(o) else []) as tmp:
        tok = HFTokenizer.train([texts[d] for d in splits['train']], a.vocab_size, model='bpe', specials=SPECIALS)
        tok.save(tmp / 'tokenizer.json')
        tags = {t: tok.tok.token_to_id(t) for t in TAGS}
        assert all(tok.encode(t) == [i] for t, i in tags.items()), "language tags must be single tokens"
        ids = {s: [tok.encode(texts[d]) for d in names] for s, names in splits.items()}
        wordsim = {} if a.no_wordsim else word_similarity_files(raw, tmp)
        (tmp / 'test.pairs.jsonl').write_text(
            ''.join(json.dumps({'en': en, 'fr': fr, 'doc': d}, ensure_ascii=False) + '\n' for en, fr, d in test),
            encoding='utf-8')
        meta = {**tokenizer_meta(tok), 'dataset': 'europarl', 'source': used, 'licence': licence,
                'lang_tags': tags, 'format': '<en> EN <fr> FR per pair; 20% of pairs as monolingual <en> EN / <fr> FR lines',
                'pairs': {s: sum(len(docs[d]) for d in names) for s, names in splits.items()},
                'test_pairs_file': 'test.pairs.jsonl', 'test_pairs': len(test), 'wordsim': wordsim,
                'cleaning': stats, 'documents': {s: names for s, names in splits.items()},
                'bytes': {s: sum(len(texts[d].encode('utf-8')) for d in names) for s, names in splits.items()}}
        write_dataset(tmp, ids, meta, sep_id=tok.special_ids()['[SEP]'])


if __name__ == '__main__':
    main()
