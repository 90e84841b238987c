"""
Cuneiform transliteration as this toolkit reads it: one token per sign, with damage flags. Shared by
prepare/akkadian.py (building the corpus from ORACC ATF/JSON) and sample.py (a line a scholar types), so both
normalize and flag signs the same way.

    parse_atf_line(text) -> [(sign, flags)]     one line of ATF transliteration
    parse_atf(text)      -> documents           a whole ATF file (protocols, surfaces, scores, language shifts)
    parse_restoration_input(text)               a line to restore (sample.py)
    normalize_sign(s)                           the sign normalization (its docstring is stored in meta.json)
    is_target(flags)                            which tokens may be training / evaluation targets

Flags (uint8, one per token): bits 0-1 state (0 preserved, 1 damaged, 2 restored by the editor, 3 missing),
bit 2 the token starts a word, bit 3 the token is a real sign. A lost sign is [GAP], a gap of unknown length
[GAPN]. The README's Akkadian section describes the conventions.
"""
import re
import sys
import unicodedata

import numpy as np

from corpus import excerpt

FLAG_OK, FLAG_DAMAGED, FLAG_RESTORED, FLAG_MISSING = 0, 1, 2, 3
FLAG_STATE = 3        # mask of the state bits
FLAG_WORD_START = 4
FLAG_SIGN = 8
STATE_NAMES = ('preserved', 'damaged', 'restored', 'missing')
GAP, GAPN = '[GAP]', '[GAPN]'
EXTRA_SPECIALS = (GAP, GAPN)


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
        print(f"warning: {where + ': ' if where else ''}unclosed {' '.join(sorted(unclosed))} in {excerpt(line.strip())}: "
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
