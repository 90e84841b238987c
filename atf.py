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
[GAPN]. docs/akkadian.md (Data) describes the conventions.
"""
import functools
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


@functools.lru_cache(maxsize=1 << 16)
def normalize_sign(s):
    r"""The one normalization of a sign value, used for ORACC JSON, ATF, word tables, the RINAP pickle,
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
    - Sign modifiers: `@v`, `@t`, `@g`, ... name another sign form and stay, lower-case, after the value
      (TA@v, the Neo-Assyrian sign of ištu, is not TA); an allograph `~v` and a palaeographic feature `\t`,
      `\m`, `\d`, ... (how this tablet's scribe shaped the sign) are dropped: `na\t` and `LU₂~v` read na, LU2.
    - Alternatives `ar/ri` (the editor cannot choose between two readings) are one sign: each reading
      normalized, joined by `/` (⸢ar/ri⸣ -> ar/ri); fractions 1/2 keep their `/`.
    - Determinatives are lower-case inside braces: {D} -> {d}, {KI} -> {ki}, {LU₂} -> {lu2};
      the personal-name marker {1} / {diš} / {m} -> {m}, the female marker {munus} / {mi2} / {f} -> {f};
      a phonetic complement is a sign written in the same small position: {+ni} -> {ni} (ORACC JSON calls
      many glosses phonetic that their ATF writes without the plus: E₂{be-tum}, za-ban{an}).
    - Numbers: a bare number loses its leading zeros (01 -> 1: ORACC reads both as 1(diš)) and stays
      (3, 30, 1/2); N(diš) -> N (diš is the plain unit sign, as the bare number); any other N(sign) keeps
      its sign: 1(u) -> 1(u), 2(geš₂) -> 2(geš2), 3(BAN₂) -> 3(ban2); `n` (a number not read) stays n.
    - A qualified value ba(BA) keeps the value: ba. `x` stays x and `...` stays ... (the parsers turn
      them into [GAP] and [GAPN])."""
    s = unicodedata.normalize('NFC', s.strip())
    s = re.sub(r'!\([^)]*\)', '', s)
    s = _MARKS.sub('', s)
    for a, b in _ASCII_ATF:
        s = s.replace(a, b)
    if '/' in s and not re.fullmatch(r'\d+/\d+(\(.*\))?', s):  # alternatives (a stray `/` leaves one reading)
        return '/'.join(p for p in (normalize_sign(q) for q in s.split('/')) if p)
    if not s:
        return ''
    if s in ('...', '…'):
        return '...'
    if s.startswith('{') and s.endswith('}'):  # determinative / phonetic complement
        inner = normalize_sign(s[1:-1].lstrip('+')).lower()
        inner = _DET_ALIASES.get(inner, inner)
        return '{' + inner + '}' if inner else ''
    if s.startswith('|'):  # compound sign, one token
        s = _FEATURE.sub('', s).translate(_SUBSCRIPT).upper()
        return re.sub(r'@([A-Z0-9]+)', lambda m: '@' + m.group(1).lower(), s)
    m = re.fullmatch(r'0*(\d+(?:/\d+)?|n)\((.+)\)', s)
    if m:  # number N(sign)
        sign = normalize_sign(m.group(2)).lower()
        return _number(m.group(1)) if sign in ('diš', '') else f'{_number(m.group(1))}({sign})'
    m = re.fullmatch(r'(.+?)\((.+)\)', s)
    if m:  # qualified value v(SIGN)
        return normalize_sign(m.group(1))
    if re.fullmatch(r'\d+(/\d+)?', s):
        return _number(s)
    if s in ('x', 'X'):
        return 'x'
    s = _FEATURE.sub('', s)
    mods = ''.join('@' + m.lower() for m in re.findall(r'@([0-9A-Za-z]+)', s))
    s = re.sub(r'@[0-9A-Za-z]+', '', s)
    if not s:
        return ''
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
    return base + idx + mods


# An allograph `~v` / `~a2` or palaeographic features `\t`, `\dm` after a sign (SAA's notation of sign shapes).
_FEATURE = re.compile(r'~[0-9a-z]+|\\[a-z]+')


def _number(s):
    """A number's digits without leading zeros (01 -> 1, 0 stays 0); fractions and `n` unchanged."""
    return s if '/' in s or s == 'n' else str(int(s))


# ----------------------------------------------------------------------------- the sign: one definition

# How an edition presents a written part of a sign (a character of ATF, a grapheme of ORACC JSON): bits of a
# `mark`. Every reader records the marks of a sign's parts and hands them to sign_token.
MARK_LOST = 1       # inside [ ]: lost on the tablet (a value there is the editor's restoration)
MARK_DAMAGED = 2    # `#`, half brackets ⸢ ⸣ / ˹ ˺: damaged but read
MARK_SUPPLIED = 4   # < > supplied (the scribe omitted it), <( )> implied by a ditto, <$ $> on an erasure
MARK_EXCISED = 8    # << >> excised: the scribe wrote it in error; not part of the text


def sign_token(raw, marks=(0,), word_start=False):
    """The one definition of a sign: (a sign as ATF writes it, the marks of its parts, starts a word) ->
    (token, flag), or None when it is no token. Every reader goes through it: ATF lines (parse_atf_line),
    ORACC JSON (parse_corpusjson), word tables, the RINAP lines, restoration input.
    - A part excised (<< >>) -> None: the sign is not part of the text.
    - The value is normalize_sign(raw); nothing left -> None.
    - `x` -> [GAP], `...` -> [GAPN], flagged missing, whatever their brackets.
    - Every part lost or supplied -> restored (the editor's sign: context, never a target).
    - Some part lost, damaged or supplied -> damaged (a sign partly inside [ ], `#`, ⸢ ⸣).
    - Otherwise preserved."""
    marks = list(marks) or [0]
    if any(m & MARK_EXCISED for m in marks):
        return None
    tok = normalize_sign(raw)
    if not tok:
        return None
    ws = FLAG_WORD_START if word_start else 0
    if tok == 'x':
        return GAP, FLAG_MISSING | ws
    if tok == '...':
        return GAPN, FLAG_MISSING | ws
    if all(m & (MARK_LOST | MARK_SUPPLIED) for m in marks):
        st = FLAG_RESTORED
    elif any(m & (MARK_LOST | MARK_DAMAGED | MARK_SUPPLIED) for m in marks):
        st = FLAG_DAMAGED
    else:
        st = FLAG_OK
    return tok, st | ws | FLAG_SIGN


# What a `$` line or an inline `($ ... $)` comment says: that text is lost, or that nothing was (loss wins:
# `$ ruling, rest broken` is a gap).
_LOSS = re.compile(r'\b(broken|missing|traces?|illegible|effaced|lost|destroyed|lacuna|breaks?|abraded)\b', re.I)
_NOTHING_LOST = re.compile(r'\b(rulings?|blank|uninscribed|space|vacat|erased|erasure|seal|impression)\b', re.I)


def dollar_line_is_gap(text):
    """Does a `$` line stand for lost text (one [GAPN]) or for nothing lost (no token)? `text` is what the
    line says (ATF `$ rest of obverse broken`, `$ (remainder uninscribed)`) or, for ORACC JSON, its state
    and scope (`missing`, `ruling`, `other`, `other impression`). A line that names a loss (broken, missing,
    traces, lacuna, illegible, effaced, ...) is a gap; one that names only a ruling, blank or uninscribed
    space, an erasure or a seal impression is nothing; any other line (ORACC JSON state `other`, whose
    words the JSON does not keep; `$ (unplaced)`; `$ continued in text no. 5`) is a gap: a false gap
    costs a context token, a false adjacency teaches the model neighbours that never stood together."""
    return bool(_LOSS.search(text)) or not _NOTHING_LOST.search(text)


def inline_comment_is_gap(text):
    """An inline comment `($ ... $)` inside a line: a gap when it says text is lost (`($obv i breaks$)`,
    `($traces$)`), else nothing (`($blank$)`, `($ruling$)`, a variant note `($var. adds -ma$)`)."""
    return bool(_LOSS.search(text)) and 'ruling' not in text.lower()


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


def _inline_comment(m):
    """An inline comment ($ ... $) -> `...` when it says text is lost, else nothing; it stays inside its word
    (`UD.($blank$).KAM` is one word UD.KAM) or between words."""
    s, e = m.string, m.span()
    inside = e[0] > 0 and not s[e[0] - 1].isspace() and e[1] < len(s) and not s[e[1]].isspace()
    gap = inline_comment_is_gap(m.group(1))
    return ('-...-' if gap else '-') if inside else (' ... ' if gap else ' ')


def _paren_determinative(text, i):
    """At text[i:] == '{(': a determinative inside the editor's ( ) — {(m)}a-šur, {(d}EN — rather than a
    scribe's note {(he-pi₂)} standing between words."""
    close = text.find('}', i)
    if close < 0:
        return False
    return text[close - 1] != ')' or (close + 1 < len(text) and not text[close + 1].isspace()
                                      and ' ' not in text[i:close])


def parse_atf_line(text, where=None, lang='akk'):
    """One line of ATF transliteration (no line number) -> [(token, flag), ...] of its Akkadian signs.
    `[ ]` mark signs lost on the tablet (a value inside is an editor's restoration), `⸢ ⸣` / `˹ ˺`
    and `#` mark damaged signs, `< >` signs supplied by the editor (restored), `<( )>` signs implied
    by a MIN or ditto (restored; an implied `...` is no loss and gives nothing), `<< >>` signs excised
    by the editor (dropped), `<$ $>` signs on an erasure (restored); `x` is a lost sign, `...` a gap of
    unknown length; ? ! * are stripped, and so are footnote marks `^1^`; `-`, `--` or `—` (logogram joins),
    `.`, `+`, `:` and `;` separate signs,
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
            marks = [m | (MARK_DAMAGED if cur_hash else 0) for m in cur_states]
            tok = sign_token(''.join(cur), marks, word_start)
            if tok is not None:
                out.append(tok)
                word_start = False
        cur, cur_states, cur_hash = [], [], False

    def add(c):
        cur.append(c)
        cur_states.append((MARK_LOST if broken else 0) | (MARK_DAMAGED if half else 0)
                          | (MARK_SUPPLIED if supplied else 0) | (MARK_EXCISED if excised else 0))

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
        elif text.startswith('{{', i) or (text.startswith('{(', i) and not _paren_determinative(text, i)):
            # a gloss {{..}} or a scribe's note {(he-pi₂)}: signs
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
                out.append(sign_token('...', (0,), word_start))  # a gap is always flagged missing
                word_start = False
            i += 1 if ch == '…' else 3
        elif ch in '-.+:;—':  # `--` (ORACC shows it as `—`) joins the logograms of a name: {m}{d}60--DIN-su--E
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
                    elif inner[k] in '()':  # {(m)}, {(d}EN: the editor's ( ) around a determinative
                        k += 1
                    else:
                        taken = mark(inner, k)
                        if not taken:
                            add(inner[k])
                        k += taken or 1
            else:  # a compound |A.AN| or the (..) of a number / qualified value stays in its sign, and ends it:
                k = i  # in₅(NIN)ne₂ and |LAM×KUR|RU are two signs each
                while k <= j:
                    taken = mark(text, k)
                    if not taken:
                        add(text[k])
                    k += taken or 1
                if ch == '(' or k > i + 1:
                    flush()
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


def protocol_line(line, state):
    """An ATF line that carries no sign of the text (parse_atf and edition.read_edition read them alike): the
    protocols that set the reader's `state` (a dict: `@translation` ... `@end translation` -> 'translation',
    `#atf: lang X` -> 'lang', `#project:` -> 'oracc', `@score` -> 'score'), every line inside a translation
    block, and the other `#` / `@` / `>>` / `||` / `//` / `=` lines. True when `line` (stripped, not empty) is one."""
    if line.startswith('@translation'):
        state['translation'] = True
        return True
    if line.startswith('@end translation'):
        state['translation'] = False
        return True
    if state['translation']:
        return True
    m = re.match(r'#atf:\s*lang\s+(\S+)', line)
    if m:
        state['lang'] = m.group(1)
        return True
    if line.startswith('#project:'):
        state['oracc'] = True
        return True
    if line.startswith('@score'):
        state['score'] = True
        return True
    return line[0] in '#@>' or line.startswith(('||', '//')) or (line[0] == '=' and not line.startswith('=='))


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
        if protocol_line(line, cur):
            continue
        if line.startswith('$'):
            if dollar_line_is_gap(line[1:]):
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


# ----------------------------------------------------------------------------- ORACC JSON (corpusjson)
# ORACC serves each text as a `cdl` tree: chunks `c`, discontinuities `d` (line starts, `$` lines, inline
# comments), lemmata `l` (one word each, its graphemes in f.gdl), and `ll` (alternative lemmatisations: the
# first is read). A grapheme carries its value (`v` syllabic, `s` logogram, `n` number with `form`, `c`
# compound, `q` qualified, `x` x / ellipsis, or `form` + `mods` for a sign with modifiers), its damage
# (`break`: missing | damaged, `ho` / `hc` half brackets) and, on the first and last grapheme of a span the
# editor marks, `statusStart` and `o`: the opening ("1") or closing bracket(s) of < >, << >>, <$ $>, ( ).
# Groups (`gg`): logo / group / ligature hold several signs, alternation `ar/ri` one sign of two readings,
# correction `a!(e)` the sign read and then the sign written.

_STATUS_MARK = {'<<': MARK_EXCISED, '>>': MARK_EXCISED, '<': MARK_SUPPLIED, '>': MARK_SUPPLIED,
                '<$': MARK_SUPPLIED, '$>': MARK_SUPPLIED, '<(': MARK_SUPPLIED, ')>': MARK_SUPPLIED,
                '(': 0, ')': 0}  # ( ): signs the editor thinks may be there; read with their own brackets
_NOT_A_SIGN = ('newline', 'disamb', 'word-absent', 'empty')  # x kinds that stand for no sign


def _json_value(g, frag=''):
    """The ATF spelling of one ORACC grapheme (normalize_sign reads it as it reads ATF), or None when it
    is no sign: punctuation `p`, a word-internal line break, an inline comment that loses nothing."""
    if 'x' in g:
        kind = g['x']
        if kind == 'ellipsis':
            return '...'
        if kind == 'dollar':  # an inline comment ($ ... $) inside the word: its text is only in the frag
            text = ' '.join(re.findall(r'\(\$(.*?)\$\)', frag or ''))
            return '...' if inline_comment_is_gap(text) else None
        return None if kind in _NOT_A_SIGN else 'x'
    if 'p' in g:
        return None
    mods = g.get('mods')
    if mods:
        base = (next((m['b'] for m in mods if 'b' in m), None) or g.get('v') or g.get('s')
                or re.sub(r'[@~\\].*', '', g.get('form', '')))
        return (base + ''.join('@' + m['m'] for m in mods if 'm' in m) + ''.join('~' + m['a'] for m in mods if 'a' in m)
                + ''.join('\\' + m['f'] for m in mods if 'f' in m))
    if 'n' in g:
        return g.get('form') or g.get('sexified') or g['n']
    if 'q' in g:
        return g['q']
    if 'c' in g:
        return g.get('form') or g['c']
    for k in ('v', 's', 'form'):
        if isinstance(g.get(k), str):
            return g[k]
    return None


def _json_damage(g):
    if g.get('break') == 'missing':
        return MARK_LOST
    if g.get('break') == 'damaged' or g.get('ho') or g.get('hc'):
        return MARK_DAMAGED
    return 0


def _gdl_leaves(nodes):
    """The graphemes (gdl nodes with an id) of a gdl tree, in order."""
    out = []
    for g in nodes:
        if isinstance(g, dict):
            if 'id' in g:
                out.append(g)
            for k in ('group', 'seq', 'qualified'):
                if isinstance(g.get(k), list):
                    out += _gdl_leaves(g[k])
    return out


def parse_corpusjson(obj, source=None, trace=None):
    r"""One ORACC corpusjson text {type: 'cdl', project, textid, cdl: [...]} -> a document {'id': project/textid,
    'source', 'signs': [(token, flag)], 'words'}, or None when it has no Akkadian sign. Every sign becomes a
    token through sign_token, exactly as the same text read from its ATF (parse_atf_line):
    - words (`l` nodes) whose f.lang is Akkadian (akk, akk-x-...; not a normalised `-949` layer); the first
      token of a word starts it; `ll` reads its first choice; the later lemmata of a compound ({lu₂}A—šip-ri,
      mār šipri: `cof-head` names the first) repeat the first one's graphemes and are not read again;
    - signs with modifiers (`form` + `mods`: TA@v, na\t, LU₂~v), numbers (`form`: 01 -> 1), determinatives
      ({d}, {1} -> {m}) as their own tokens, qualified values surₓ(SAG) -> surₓ, compounds |A.AN| whole;
    - `break` missing -> lost, damaged / `ho` / `hc` -> damaged; the spans opened and closed by `statusStart` +
      `o`: < > and <$ $> supplied (restored), << >> excised (dropped), ( ) read with their own brackets;
    - an alternation `ar/ri` is one sign `ar/ri`; a correction `a!(e)` is the sign read, `a`;
    - `$` lines (`d` nodes of type nonx) by dollar_line_is_gap on their state and scope (`other` -> [GAPN]),
      inline comments (`d` nodes of type dollar) by inline_comment_is_gap on their text.
    trace: a list, or None; when given, one record per grapheme of an Akkadian word is appended,
    {'id': grapheme id, 'raw': its ATF spelling, 'token': (token, flag) or None, 'why': None when it gave a
    token, else 'excised', 'correction' (the written sign of a corrected one), 'alternative' (a later
    reading, joined into the first), 'no sign' (punctuation, a line break), 'empty' (nothing left), 'compound'
    (the grapheme again, in a later lemma of a compound)}.
    A JSON value of another structure raises ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"the JSON is a {type(obj).__name__}, not an object")
    if not isinstance(obj.get('cdl', []), list):
        raise ValueError("its 'cdl' is not a list of nodes")
    project = str(obj.get('project', 'oracc'))
    signs = []
    status = []  # the marks of the status spans open at this point of the line

    def leaf_marks(g, inherited):
        """The marks of grapheme g, opening or closing the status span its `o` names."""
        m = inherited | _json_damage(g)
        if g.get('status') == 'excised':
            m |= MARK_EXCISED
        elif g.get('status') in ('supplied', 'implied'):
            m |= MARK_SUPPLIED
        start = g.get('statusStart')
        o = start is not None and str(g.get('o', '')).replace('[', '').replace(']', '')
        if o in _STATUS_MARK:
            kind = _STATUS_MARK[o]
            if start == '1':               # the span opens here
                status.append(kind)
            else:                          # the span (opened earlier, or on this grapheme alone) closes here
                if kind in status:
                    status.remove(kind)
            m |= kind
        for k in status:
            m |= k
        return m

    def graphemes(nodes, inherited, det, frag, out):
        """Flatten gdl nodes into out: [[raw, [marks], [ids]]], one entry per sign, in reading order."""
        for g in nodes:
            if not isinstance(g, dict):
                continue
            m = inherited | _json_damage(g)
            if 'det' in g:
                graphemes(g.get('seq', []), m, '+' if g.get('det') == 'phonetic' else '', frag, out)
                continue
            kind = g.get('gg')
            if kind in ('alternation', 'correction'):
                parts = []
                graphemes(g.get('group', []), m, det, frag, parts)
                if not parts:
                    continue
                if kind == 'alternation':  # one sign of several readings: ar/ri
                    raw = '/'.join(p[0] for p in parts if p[0] is not None) or None
                    out.append([raw, [x for p in parts for x in p[1]],
                                [x for p in parts for x in p[2]], None])
                else:                      # the sign read, then the sign(s) the scribe wrote
                    out.append(parts[0])
                    out += [[p[0], p[1], p[2], 'correction'] for p in parts[1:]]
                continue
            leaf = any(k in g for k in ('v', 's', 'n', 'c', 'q', 'x', 'p', 'mods')) or (
                'form' in g and 'group' not in g and 'seq' not in g)
            if not leaf:
                graphemes(g.get('group', g.get('seq', [])), m, det, frag, out)
                continue
            marks = leaf_marks(g, m)
            raw = _json_value(g, frag)
            if raw is not None and det is not None and raw not in ('x', '...'):
                raw = '{' + det + raw + '}'
            out.append([raw, [marks], [g.get('id')], None])

    def emit(entry, first):
        raw, marks, ids, why = entry
        tok = None
        if why is None:
            if raw is None:
                why = 'no sign'
            elif any(mk & MARK_EXCISED for mk in marks):
                why = 'excised'
            else:
                tok = sign_token(raw, marks, first)
                why = None if tok is not None else 'empty'
        if trace is not None:  # an alternation's later readings are joined into its first grapheme's token
            trace.extend({'id': gid, 'raw': raw, 'token': None if k else tok, 'why': 'alternative' if k else why}
                         for k, gid in enumerate(ids))
        return tok

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
                t = nd.get('type')
                if t == 'line-start':
                    status.clear()
                elif t == 'nonx' and nd.get('state'):
                    if dollar_line_is_gap(f"{nd['state']} {nd.get('scope', '')}"):
                        signs.append((GAPN, FLAG_MISSING))
                elif t == 'dollar' and inline_comment_is_gap(' '.join(re.findall(r'\(\$(.*?)\$\)', nd.get('frag', '')))):
                    signs.append((GAPN, FLAG_MISSING | FLAG_WORD_START))  # ($traces$) between two words
            elif kind == 'l':
                if 'cof-head' in nd:  # a later part of a compound lemma (mār šipri): the same graphemes again
                    if trace is not None:
                        trace.extend({'id': g.get('id'), 'raw': None, 'token': None, 'why': 'compound'}
                                     for g in _gdl_leaves(nd.get('f', {}).get('gdl', [])))
                    continue
                f = nd.get('f', {})
                lang = str(f.get('lang', ''))
                akk = lang.startswith('akk') and '-949' not in lang
                entries = []
                graphemes(f.get('gdl', []), 0, None, nd.get('frag', ''), entries)  # spans are followed in every word
                if not akk:
                    continue
                first = True
                for e in entries:
                    tok = emit(e, first)
                    if tok is not None:
                        signs.append(tok)
                        first = False

    try:
        walk(obj.get('cdl', []))
    except (AttributeError, TypeError, KeyError) as e:  # e.g. a string or a number where a node object belongs
        raise ValueError(f"a 'cdl' node has an unexpected structure ({e!r})") from None
    if not any(f & FLAG_SIGN for _, f in signs):
        return None
    return _finish({'id': f"{project}/{obj.get('textid', '?')}", 'source': source or project.split('/')[0],
                    'signs': _collapse_gaps(signs)})
