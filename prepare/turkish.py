"""
Turkish running text, split by document, for the agglutinative-attention comparison.

    python prepare/turkish.py                               # unigram 4096 -> data/turkish_unigram
    python prepare/turkish.py --source=offline
    python prepare/turkish.py --input=DIR_OR_FILE           # .txt files (one document each) or .conllu
    python prepare/turkish.py --tokenizer=bpe --vocab_size=8192
    python prepare/turkish.py --tokenizer=morph_bpe --segmenter=lexicon   # -> data/turkish_morph_bpe_lexicon

--tokenizer=morph_bpe | morph_unigram (MorphBPE idea): the subword vocabulary is trained on text pre-segmented by
--segmenter (prepare/turkish_morph.py: harmony = the vowel-harmony stripper, lexicon = the same refined by
zemberek's root lexicon, morfessor = Morfessor Baseline trained on the training split), with an invisible marker
(U+E000) between the morphemes of a word that the tokenizer's pre-tokenizer removes: no piece crosses a morpheme
boundary, the marker costs 0 bytes, decode() gives the original text. The same segmentation is applied to every
split; meta.json 'presegment' names the segmenter (and the saved lexicon / Morfessor model beside the bins), and
corpus.load_tokenizer(data_dir) rebuilds the segmenting encoder (corpus.MorphTokenizer) from it.

Sources (the first that works, unless --source is given):
  online   UD_Turkish-BOUN (train/dev/test .conllu, CC BY-SA 4.0) from raw.githubusercontent.com
  offline  the wheel turkish-treebanks==1.0.0 (Apache-2.0), fetched with `pip download` and read as a
           zip (never installed): data/wiki.conllu (2,310 sentences) + data/web.conllu (2,541)
  --input  a directory of .txt / .conllu files, or one file. A .txt file is one document (a single
           .txt file is cut into 40 chunks at line boundaries); .conllu files are grouped as below.

CoNLL-U -> documents: sentences (their `# text =` line, else the forms joined by SpaceAfter) are grouped by
`# newdoc id`, else by the sent_id prefix before a final `:S<n>` / `-<n>` / `_<n>` (turkish-treebanks uses
`<wikipedia URL>:S057`, so one article = one document), else in blocks of 20 consecutive sentences. Each
source file keeps its own documents (ids are prefixed with the file name).

Besides the usual bins and meta.json this writes into meta.json, for `attention='agglutinative'`:
  word_start   [vocab] 1 if the piece starts with the Metaspace marker '▁' (or the byte-level 'Ġ'),
               or is punctuation / a special token; else 0
  token_class  [vocab] 0 word-initial, 1 suffix-like (the piece without '▁' is a harmonic suffix
               allomorph or a plural+case chain: lar/ler, da/de/ta/te, dan/den, ın/in/un/ün, ı/i/u/ü,
               a/e, ya/ye, nın/nin, ları ...; also after an apostrophe, 'da, or before trailing punctuation,
               ler,), 2 other word-internal, 3 digit / punctuation / special
Both are functions of the piece alone, so the model's word index and classes depend only on the token and
its predecessors (no whole-word analysis, no leakage of where the word ends).
gold_morphology.json (conllu sources only) keeps, for val/test words, form / lemma / UPOS / features and the
root boundary (len(lemma) where the lowercased form starts with the lemma) for later segmenter evaluation.
"""
import argparse
import itertools
import json
import re
import sys
import unicodedata
import zipfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import die, MorphTokenizer, tokenizer_meta
from download import fetch_url, pip_download, read_member
from prepare.common import (decode_replacing, load_from_source, load_lexicon, make_tokenizer, read_utf8,
                            split_by_document, staged_dataset, write_dataset)

BOUN = 'https://raw.githubusercontent.com/UniversalDependencies/UD_Turkish-BOUN/master/tr_boun-ud-{}.conllu'
OFFLINE_WHEEL = 'turkish-treebanks==1.0.0'
OFFLINE_FILES = ('data/wiki.conllu', 'data/web.conllu')
BLOCK = 20  # sentences per document when a .conllu has no document ids
GOLD_MAX_WORDS = 5000

# ----------------------------------------------------------------------------- token tables

# suffix templates in archiphonemes: A = a|e, I = ı|i|u|ü, D = d|t, C = c|ç (docs/agglutinative.md)
_SINGLE = ['lAr', 'DA', 'DAn', 'nIn', 'In', 'yI', 'I', 'yA', 'A', 'sI', 'Im', 'In', 'ImIz', 'InIz', 'm', 'n',
           'mIz', 'nIz', 'lIk', 'CI', 'lI', 'sIz', 'DI', 'mIş', 'Iyor', 'yor', 'yAcAk', 'AcAk', 'mAk', 'mA',
           'yIp', 'Ip', 'ken', 'ki', 'DIr', 'nA', 'nDA', 'nDAn', 'ylA', 'lA', 'DIk', 'yAn', 'An', 'sA', 'Ar', 'Ir']
_CHAINS = ['lArI', 'lArIn', 'lArA', 'lArDA', 'lArDAn', 'lArInI', 'lArInA', 'lArInDA', 'lArInDAn', 'lArIm',
           'lArImIz', 'lArInIz', 'lArIylA', 'InI', 'InA', 'InDA', 'InDAn', 'sInI', 'sInA', 'sInDA', 'sInDAn',
           'DIğI', 'DIğInI', 'DIklArI', 'mAsI', 'mAsInI', 'mAsInA', 'mIştIr', 'DIr']
_ARCHI = {'A': 'ae', 'I': 'ıiuü', 'D': 'dt', 'C': 'cç'}


def _expand(template):
    return {''.join(p) for p in itertools.product(*[_ARCHI.get(ch, ch) for ch in template])}


SUFFIXES = frozenset(s for t in _SINGLE + _CHAINS for s in _expand(t))


def turkish_lower(s):
    return s.replace('I', 'ı').replace('İ', 'i').lower()


def _is_other(s):
    """digits, punctuation, symbols (no letter at all)."""
    return bool(s) and not any(unicodedata.category(ch).startswith('L') for ch in s)


def token_tables(pieces, special_ids=()):
    """pieces: the vocabulary's strings by id. Returns (word_start, token_class), lists of ints."""
    special_ids = set(special_ids)
    ws, tc = [], []
    for i, p in enumerate(pieces):
        marked = p.startswith('▁') or p.startswith('Ġ')
        body = p[1:] if marked else p
        if i in special_ids or (p.startswith('[') and p.endswith(']') and len(p) > 2 and p[1:-1].isupper()):
            ws.append(1), tc.append(3)
        elif _is_other(body):
            # punctuation starts a word; a bare digit run continues one unless it carries '▁'
            punct = not any(ch.isdigit() for ch in body)
            ws.append(1 if (marked or punct) else 0), tc.append(3)
        elif marked:
            ws.append(1), tc.append(0)
        else:
            # a case suffix after an apostrophe ('a, ’da) and a piece with trailing punctuation (ler,) count too
            core = turkish_lower(body).lstrip("'’").rstrip('.,;:!?)"»…')
            ws.append(0), tc.append(1 if core in SUFFIXES else 2)
    return ws, tc


def hf_pieces(tok):
    """The strings of an HF tokenizer's vocabulary by id."""
    return [tok.tok.id_to_token(i) or '' for i in range(tok.vocab_size)]


# ----------------------------------------------------------------------------- CoNLL-U

def parse_conllu(text):
    """-> list of sentences {'newdoc', 'sent_id', 'text', 'words': [(form, lemma, upos, feats)]}."""
    sents, cur = [], None
    for line in text.splitlines():
        line = line.rstrip('\n')
        if not line.strip():
            if cur and (cur['words'] or cur['text']):
                sents.append(cur)
            cur = None
            continue
        if cur is None:
            cur = {'newdoc': None, 'sent_id': None, 'text': None, 'words': [], '_forms': []}
        if line.startswith('#'):
            k, _, v = line[1:].partition('=')
            k, v = k.strip(), v.strip()
            if k.startswith('newdoc'):
                cur['newdoc'] = v or k
            elif k == 'sent_id':
                cur['sent_id'] = v
            elif k == 'text':
                cur['text'] = v
            continue
        cols = line.split('\t')
        if len(cols) < 10 or not cols[0].isdigit():  # multiword ranges (1-2) and empty nodes (1.1)
            continue
        cur['words'].append((cols[1], cols[2], cols[3], cols[5]))
        cur['_forms'].append(cols[1] + ('' if 'SpaceAfter=No' in cols[9] else ' '))
    if cur and (cur['words'] or cur['text']):
        sents.append(cur)
    for s in sents:
        if not s['text']:
            s['text'] = ''.join(s['_forms']).strip()
        del s['_forms']
    return sents


def _doc_key(sent_id):
    m = re.match(r'^(.*?)(?::S\d+|[-_]\d+)$', sent_id or '')
    return m.group(1) if m and m.group(1) else None


def conllu_documents(text, name):
    """Sentences -> OrderedDict {doc id: [sentence, ...]} (see the module docstring)."""
    sents = parse_conllu(text)
    docs = OrderedDict()
    if any(s['newdoc'] for s in sents):
        key = f'{name}:doc0'
        for s in sents:
            if s['newdoc']:
                key = f"{name}:{s['newdoc']}"
            docs.setdefault(key, []).append(s)
    elif sents and all(_doc_key(s['sent_id']) for s in sents) and len({_doc_key(s['sent_id']) for s in sents}) > 1:
        for s in sents:
            docs.setdefault(f"{name}:{_doc_key(s['sent_id'])}", []).append(s)
    else:
        for k in range(0, len(sents), BLOCK):
            docs[f'{name}:block{k // BLOCK:05d}'] = sents[k:k + BLOCK]
    return docs


# ----------------------------------------------------------------------------- sources

def load_online(raw):
    out = OrderedDict()
    for split in ('train', 'dev', 'test'):
        path = fetch_url(BOUN.format(split), raw / f'tr_boun-ud-{split}.conllu')
        out.update(conllu_documents(decode_replacing(path.read_bytes(), path), f'boun-{split}'))
    return out, 'online UD_Turkish-BOUN (CC BY-SA 4.0)'


def load_offline(raw):
    whl = pip_download(OFFLINE_WHEEL, raw)
    out = OrderedDict()
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        for f in OFFLINE_FILES:
            if f not in names:
                die(f"{whl.name} has no {f}; delete {raw} and try again, or give --input=PATH")
            out.update(conllu_documents(decode_replacing(read_member(z, f), f'{whl.name}:{f}'), Path(f).stem))
    return out, f'pypi wheel {OFFLINE_WHEEL} ({", ".join(OFFLINE_FILES)}; Apache-2.0)'


def load_input(path):
    path = Path(path)
    if not path.exists():
        die(f"--input {path} does not exist")
    files = sorted([*path.glob('*.txt'), *path.glob('*.conllu')]) if path.is_dir() else [path]
    if not files:
        die(f"{path} has no .txt or .conllu files")
    out = OrderedDict()
    for f in files:
        text = read_utf8(f)
        if f.suffix == '.conllu':
            out.update(conllu_documents(text, f.stem))
        elif path.is_dir():
            out[f.stem] = text
        else:  # one .txt file: 40 chunks at line boundaries
            lines = text.splitlines()
            per = max(1, len(lines) // 40)
            for k in range(0, len(lines), per):
                chunk = '\n'.join(lines[k:k + per]).strip()
                if chunk:
                    out[f'{f.stem}:chunk{k // per:03d}'] = chunk
    return out, f'input {path}'


def doc_text(doc):
    return doc if isinstance(doc, str) else '\n'.join(s['text'] for s in doc)


def gold_morphology(docs, names, limit=GOLD_MAX_WORDS):
    """Words of the given (held-out) conllu documents with their gold lemma / features and root boundary."""
    out = []
    for d in names:
        if isinstance(docs[d], str):
            continue
        for s in docs[d]:
            for form, lemma, upos, feats in s['words']:
                lf, ll = turkish_lower(form), turkish_lower(lemma)
                root = len(ll) if ll not in ('', '_') and lf.startswith(ll) else None
                out.append({'doc': d, 'form': form, 'lemma': lemma, 'upos': upos, 'feats': feats, 'root_end': root})
                if len(out) >= limit:
                    return out
    return out


def make_morph_tokenizer(model, segmenter, train_texts, vocab_size, out, raw, morfessor_types=20000, seed=1337):
    """A MorphTokenizer (corpus.py) trained on the training texts pre-segmented by `segmenter`;
    the lexicon / Morfessor model it needs is saved beside tokenizer.json so the dataset is self-contained."""
    import time
    import morphology as tm
    t0, lex, mm, extra = time.time(), None, None, {}
    if segmenter == 'lexicon':
        lex = load_lexicon(raw)
        (out / 'lexicon_roots.txt').write_text('\n'.join(sorted(lex.roots)) + '\n', encoding='utf-8')
        extra = {'lexicon_file': 'lexicon_roots.txt', 'lexicon_source': f'{lex.name} (Apache-2.0)'}
    elif segmenter == 'morfessor':
        counts = tm.word_counts(train_texts)
        mm = tm.train_morfessor(counts, morfessor_types, seed=seed)
        tm.save_morfessor(mm, out / 'morfessor.bin')
        extra = {'morfessor_model': 'morfessor.bin', 'morfessor_types': min(morfessor_types, len(counts))}
    seg = tm.make_segmenter(segmenter, lex, mm)
    tok = MorphTokenizer.train(train_texts, vocab_size, model, segmenter, seg, path=out / 'tokenizer.json',
                                  extra_meta=extra)
    print(f"morph tokenizer: {model} on text pre-segmented by {segmenter} ({time.time() - t0:.1f}s)")
    return tok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--source', default='auto', choices=['auto', 'online', 'offline', 'input'])
    ap.add_argument('--input', default='')
    ap.add_argument('--tokenizer', default='unigram', choices=['unigram', 'bpe', 'char', 'morph_bpe', 'morph_unigram'])
    ap.add_argument('--segmenter', default='harmony', choices=['harmony', 'lexicon', 'morfessor'],
                    help='for morph_bpe / morph_unigram (prepare/turkish_morph.py)')
    ap.add_argument('--morfessor_types', type=int, default=20000, help='Morfessor: most frequent training types')
    ap.add_argument('--vocab_size', type=int, default=4096, help='for unigram / bpe')
    ap.add_argument('--out', default='')
    ap.add_argument('--seed', type=int, default=1337)
    a = ap.parse_args(argv)
    morph = a.tokenizer.startswith('morph_')
    out = Path(a.out or (f'data/turkish_{a.tokenizer}_{a.segmenter}' if morph else f'data/turkish_{a.tokenizer}'))
    raw = Path('data/turkish_raw')
    docs, used = load_from_source(a.source, a.input, lambda: load_online(raw), lambda: load_offline(raw),
                                  lambda: load_input(a.input), f'the offline wheel {OFFLINE_WHEEL}')
    texts = {d: doc_text(v) for d, v in docs.items()}
    texts = {d: t for d, t in texts.items() if t.strip()}
    n_sent = sum(len(v) for v in docs.values() if not isinstance(v, str))
    print(f"source: {used} ({len(texts)} documents, {n_sent:,} sentences, "
          f"{sum(len(t.split()) for t in texts.values()):,} words, {sum(len(t) for t in texts.values()):,} characters)")

    splits = split_by_document(list(texts), seed=a.seed)
    with staged_dataset(out) as tmp:
        if morph:
            tok = make_morph_tokenizer(a.tokenizer[len('morph_'):], a.segmenter, [texts[d] for d in splits['train']],
                                       a.vocab_size, tmp, raw, a.morfessor_types, a.seed)
        else:
            tok = make_tokenizer(a.tokenizer, [texts[d] for d in splits['train']], a.vocab_size, tmp)
        if a.tokenizer == 'char':
            pieces = [('▁' if c.isspace() else c) for c in tok.itos]  # whitespace starts the next word
        else:
            pieces = hf_pieces(tok)
        ws, tc = token_tables(pieces, special_ids=tok.special_ids().values())
        ids = {s: [tok.encode(texts[d]) for d in names] for s, names in splits.items()}
        meta = {**tokenizer_meta(tok), 'dataset': 'turkish', 'source': used,
                'licence': 'see source (UD_Turkish-BOUN CC BY-SA 4.0; turkish-treebanks Apache-2.0)',
                'documents': {s: names for s, names in splits.items()},
                'bytes': {s: sum(len(texts[d].encode('utf-8')) for d in names) for s, names in splits.items()},
                'characters': {s: sum(len(texts[d]) for d in names) for s, names in splits.items()},
                'word_start': ws, 'token_class': tc,
                'token_tables': 'word_start / token_class: see prepare/turkish.py (for attention=agglutinative)'}
        sep = tok.special_ids().get('[SEP]')
        gold = gold_morphology(docs, splits['val'] + splits['test'])
        if gold:
            (tmp / 'gold_morphology.json').write_text(json.dumps(
                {'source': used, 'splits': ['val', 'test'], 'root_end': 'len(lemma) if form starts with lemma (Turkish lowercase)',
                 'words': gold}, ensure_ascii=False))
        write_dataset(tmp, ids, meta, sep_id=sep)
    if gold:
        print(f"wrote {out / 'gold_morphology.json'}: {len(gold)} held-out words with lemma / features")
    n_tok = sum(len(x) for v in ids.values() for x in v)
    n_words = sum(len(texts[d].split()) for v in splits.values() for d in v)
    counts = [tc.count(k) for k in range(4)]
    print(f"tokens per word {n_tok / max(1, n_words):.2f}; characters per token "
          f"{sum(len(t) for t in texts.values()) / max(1, n_tok):.2f}; vocabulary classes "
          f"word-initial {counts[0]}, suffix-like {counts[1]}, internal {counts[2]}, other {counts[3]}; "
          f"word-start pieces {sum(ws)}")


if __name__ == '__main__':
    main()
