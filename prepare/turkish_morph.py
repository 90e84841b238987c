"""
Turkish morpheme segmenter without a lexicon (issue 7): the vowel-harmony suffix stripper of
notes/agglutinative.md section 4, scored on the root boundary of gold_morphology.json (prepare/turkish.py).

    python prepare/turkish_morph.py --eval [--data=data/turkish_unigram]
    python prepare/turkish_morph.py evlerden kitaplarımız geliyorum      # print segmentations

segment(word) -> [root, suffix, ...] on the Turkish-lowercased word (I -> ı, İ -> i), ''.join(...) == lower(word).

Suffix templates are written with archiphonemes, realised against the stem they attach to:
  A  a | e          by the backness of the last vowel before it
  I  ı | i | u | ü  by backness and rounding of that vowel
  D  t after a voiceless consonant (f s t k ç ş h p), else d;   C  ç | c by the same rule
  (y) (n) (s)       buffer consonant: present only (and always) after a vowel-final stem
  (I) (A)           linking vowel: present only (and always) after a consonant-final stem
Algorithm: strip suffixes right to left, longest allomorph first; a strip is accepted only if the realised
suffix equals the word's tail and the remainder keeps >= 2 letters and a vowel. Added to the notes' recipe:
  * slot order: each template has a slot (derivation < plural < possessive < case < ki for nouns;
    negation < tense/aspect < person for verbs); right to left the slots must decrease, and nominal and verbal
    suffixes do not mix, except through nominalisers (mAk, mA, DIk, (y)An ...) which end a verbal stem;
  * among the strip sequences allowed by these rules the one removing the most letters wins (ties: the one
    found first, i.e. longest allomorph first), so arabasına -> araba+sı+na rather than arabas+ın+a;
  * an apostrophe (Ankara'da, 7580'e, ABD'de) fixes the root: only the part after it is stripped; a stem
    with no vowel (digits, acronyms) accepts any harmony.
Known limits (no lexicon): a root that ends like a suffix is cut (araba -> arab+a, kedi -> ked+i); root-final
consonant alternation is not undone (çocuğun -> çocuğ+un, whose gold root 'çocuk' is no prefix of the form,
so gold_morphology.json has root_end=None for it); vowel-dropping stems (başlıyor -> başl+ıyor).
"""
import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path

VOWELS = set('aeıioöuüâîû')
BACK = set('aıouâû')
ROUND = set('oöuüû')
VOICELESS = set('fstkçşhp')
APOSTROPHES = "'’"

# (template, mode, slot, mode to the left, slot cap to the left). mode: 'N' nominal, 'V' verbal, '*' either.
# A plain entry keeps its own mode and caps the next (left) slot at its own; a nominaliser switches to 'V'.
_NOM = [('lIk', 1), ('CI', 1), ('lI', 1), ('sIz', 1),
        ('lAr', 2),
        ('(I)m', 3), ('In', 3), ('(s)I', 3), ('(I)mIz', 3), ('(I)nIz', 3),
        ('(y)I', 4), ('(y)A', 4), ('DA', 4), ('DAn', 4), ('(n)In', 4), ('(y)lA', 4),
        ]
_PRONOMINAL_N = ['nI', 'nA', 'nDA', 'nDAn']  # case after a 3rd-person possessive: the next strip must be (s)I
_VERB = [('mA', 1),
         ('(I)yor', 6), ('DI', 6), ('mIş', 6), ('(y)AcAk', 6), ('Ar', 6), ('Ir', 6), ('mAz', 6),
         ('mAlI', 6), ('(y)sA', 6), ('mAktA', 6),
         ('(y)Im', 7), ('sIn', 7), ('(y)Iz', 7), ('sInIz', 7), ('lAr', 7), ('(y)In', 7),
         ('(y)Ip', 9), ('(y)ArAk', 9), ('(y)IncA', 9), ('(y)ken', 9)]
_SWITCH = [('mAk', 1), ('mA', 1), ('DIk', 1), ('DIğ', 1), ('(y)An', 1), ('(y)AcAğ', 1)]  # verb -> noun
_PAST_PERSON = ['m', 'n', 'k', 'nIz']  # only right after DI / (y)sA: the next strip must be one of these
PAST = ('DI', '(y)sA')
REQUIRED = {'Vpast': PAST, 'Poss3': ('(s)I',)}  # pseudo-modes: the only templates allowed as the next strip
NON_FINAL = {'DIk', 'DIğ', '(y)AcAğ'}  # participles only before a further suffix (yaptığı; yaptık = yap+tı+k)
# closed-class words left whole (otherwise ise -> is+e, göre -> gör+e, ama -> am+a ...): a short stop list, the
# only word list used; segment(..., stoplist=False) switches it off
STOPWORDS = frozenset('''ama ancak artık ayrıca bile bir bu da daha de değil diye en gibi göre hatta hem hemen
her için ile ise kadar ki mi mu mü mı ne o önce sonra şu ve veya ya yine yani çünkü şey şimdi zaten sadece'''.split())
ENTRIES = ([(t, 'N', s, 'N', s) for t, s in _NOM] + [(t, 'V', s, 'V', s) for t, s in _VERB]
           + [(t, 'V', 7, 'Vpast', 7) for t in _PAST_PERSON]
           + [(t, 'N', 4, 'Poss3', 4) for t in _PRONOMINAL_N]
           + [(t, 'N', s, 'V', 1.5) for t, s in _SWITCH] + [('DIr', '*', 8, '*', 8)]
           + [('ki', 'N', 1, 'N', 4.6)])  # relative ki makes a new noun (evdekiler = ev+de+ki+ler)


def turkish_lower(s):
    """The same lowering as prepare/turkish.py (gold root_end is measured on it)."""
    return s.replace('I', 'ı').replace('İ', 'i').lower()


def _parse(template):
    """'(y)AcAk' -> [(ch, kind)] with kind 'buf' / 'link' / None."""
    out, i = [], 0
    while i < len(template):
        if template[i] == '(':
            ch = template[i + 1]
            out.append((ch, 'link' if ch in 'AI' else 'buf'))
            i += 3
        else:
            out.append((template[i], None))
            i += 1
    return out


_PARSED = [(_parse(t), t, m, s, ml, sl) for t, m, s, ml, sl in ENTRIES]


def _letters(s):
    return [c for c in s if c.isalpha()]


def realise(template, stem):
    """The suffix that `template` (archiphonemes, see the module docstring) gives after `stem`, e.g.
    realise('DA', 'kitap') == 'ta'; None if the stem has no vowel to harmonise with (digits, acronyms)."""
    r = _realise(_parse(template), stem)
    return None if r is None else ''.join(r)


def _realise(parts, stem):
    letters = _letters(stem)
    if not letters:
        return None
    vowel_final = letters[-1] in VOWELS
    prev, last_v, out = letters[-1], next((c for c in reversed(letters) if c in VOWELS), None), []
    for ch, kind in parts:
        if kind == 'buf' and not vowel_final or kind == 'link' and vowel_final:
            continue
        if ch in 'AI':
            if last_v is None:
                return None
            elif ch == 'A':
                c = 'a' if last_v in BACK else 'e'
            else:
                c = {(1, 0): 'ı', (0, 0): 'i', (1, 1): 'u', (0, 1): 'ü'}[(last_v in BACK, last_v in ROUND)]
        elif ch == 'D':
            c = 't' if prev in VOICELESS else 'd'
        elif ch == 'C':
            c = 'ç' if prev in VOICELESS else 'c'
        else:
            c = ch
        out.append(c)
        prev = c
        if c in VOWELS:
            last_v = c
    return out


def _match(parts, stem, tail, wildcard):
    """Does the template realised after `stem` equal `tail`? wildcard: any vowel choice for A / I."""
    if not wildcard:
        r = _realise(parts, stem)
        return r is not None and ''.join(r) == tail
    letters = _letters(stem)
    vowel_final = bool(letters) and letters[-1] in VOWELS
    kept = [ch for ch, kind in parts
            if not (kind == 'buf' and not vowel_final or kind == 'link' and (vowel_final or not letters))]
    if len(kept) != len(tail):
        return False
    prev = letters[-1] if letters else ''
    for ch, c in zip(kept, tail):
        ok = {'A': c in 'ae', 'I': c in 'ıiuü', 'D': c == ('t' if prev in VOICELESS else 'd'),
              'C': c == ('ç' if prev in VOICELESS else 'c')}.get(ch, c == ch)
        if not ok:
            return False
        prev = c
    return True


def _root_ok(stem):
    letters = _letters(stem)
    return len(letters) >= 2 and any(c in VOWELS for c in letters)


def _strip(word, floor, wildcard):
    """Best strip sequence of word[floor:] -> (stripped letters, [suffixes left to right])."""

    @lru_cache(maxsize=None)
    def best(end, mode, cap):
        result = (-999, ()) if mode in REQUIRED else (0, ())  # e.g. a past person suffix needs its DI / (y)sA
        if end <= floor:
            return result
        cands = []
        for parts, t, m, slot, mode_left, cap_left in _PARSED:
            if mode in REQUIRED:
                if t not in REQUIRED[mode]:
                    continue
            elif slot >= cap or (m != '*' and mode not in ('*', m)):
                continue
            if t in NON_FINAL and end == len(word):
                continue
            n_fixed = sum(1 for _, kind in parts if kind is None)
            for n in {n_fixed, n_fixed + sum(1 for _, kind in parts if kind)}:
                cut = end - n
                if n == 0 or cut < floor:
                    continue
                stem, tail = word[:cut], word[cut:end]
                if cut > floor and not _root_ok(stem) or cut == floor and floor == 0:
                    continue
                if _match(parts, stem, tail, wildcard and cut == floor):
                    cands.append((n, cut, tail, mode if m == '*' else mode_left, cap_left if m != '*' else slot))
        for n, cut, tail, mode_l, cap_l in sorted(cands, key=lambda c: -c[0]):  # longest allomorph first
            got, segs = best(cut, mode_l, cap_l)
            if got + n > result[0]:
                result = (got + n, segs + (tail,))
        return result

    return best(len(word), '*', 99)


def segment(word, stoplist=True):
    """word -> [root, suffix, ...] (Turkish-lowercased; the pieces concatenate to the lowercased word)."""
    w = turkish_lower(word)
    if not any(c.isalpha() for c in w) or stoplist and w in STOPWORDS:
        return [w]
    apo = max(w.rfind(a) for a in APOSTROPHES)
    if apo > 0:
        root, rest = w[:apo], w[apo + 1:]
        plain = root + rest
        _, segs = _strip(plain, len(root), not any(c in VOWELS for c in root))
        mid = plain[len(root):len(plain) - sum(len(s) for s in segs)]
        segs = ([mid] if mid else []) + list(segs)
        if not segs:
            return [w]
        segs[0] = w[apo] + segs[0]
        return [root] + segs
    _, segs = _strip(w, 0, False)
    return [w[:len(w) - sum(len(s) for s in segs)]] + list(segs)


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


def evaluate(data_dir):
    path = Path(data_dir) / 'gold_morphology.json'
    if not path.exists():
        sys.exit(f"{path} not found: run `python prepare/turkish.py` (a .conllu source) first")
    raw = json.loads(path.read_text(encoding='utf-8'))['words']
    words = gold_words(raw)
    inflected = [w for w in words if w['root_end'] < len(turkish_lower(w['form']))]
    print(f"{path}: {len(raw)} words; scored {len(words)} (root_end known, has a letter); "
          f"inflected {len(inflected)} (form longer than lemma); skipped {len(raw) - len(words)}")
    rows = [('vowel-harmony stripper', None),
            ('  same, without the stop list', lambda f: len(segment(f, stoplist=False)[0])),
            ('baseline: no split', baseline_no_split),
            ('baseline: split at apostrophe', baseline_apostrophe),
            ('baseline: after first vowel+consonant', baseline_first_vc)]
    print(f"{'method':40s} {'all words':>18s} {'inflected only':>18s}")
    out = {}
    for name, fn in rows:
        a, n = root_boundary_accuracy(words, fn)
        b, m = root_boundary_accuracy(inflected, fn)
        out[name] = (a, n, b, m)
        print(f"{name:40s} {100 * a:6.1f}% (n={n:5d}) {100 * b:6.1f}% (n={m:5d})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--eval', action='store_true', help='root-boundary accuracy on gold_morphology.json')
    ap.add_argument('--data', default='data/turkish_unigram')
    ap.add_argument('words', nargs='*')
    a = ap.parse_args(argv)
    if a.eval:
        evaluate(a.data)
    for w in a.words:
        print(w, '->', '+'.join(segment(w)))
    if not a.eval and not a.words:
        ap.print_help()


if __name__ == '__main__':
    main()
