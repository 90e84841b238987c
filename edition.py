"""
ATF editions as scholars write them: where every sign of a line sits, the conventions of the input, and
restorations written back into a line as an editor writes them (`{m}aš-šur-[x x]` -> `{m}aš-šur-[PAP-AŠ]`).
Shared by sample.py (--text, --input) and serve.py. Only text: no model here.

    line_signs(content, lang)         [Sign]: parse_atf_line's tokens, each with its characters in the line
    Spelling.of(text)                 the input's conventions: subscript / digit / accent indices, ḫ, ASCII ATF
    spell(token, spelling)            a normalized token as the input writes it (li2 -> li₂, {lu2} -> {lu₂})
    join_signs(tokens, spelling)      the signs of a restoration as one stretch of ATF ({d}AMAR-UTU)
    render(tokens, flags, spelling)   tokens as an ATF line (word spaces from the flags, determinatives attached)
    read_edition(text)                a whole ATF file -> its texts, lines, signs and gaps, every line kept
    fill_line(line, fills, spelling)  the line with each gap's restoration inside brackets
    check_brackets(text)              None, or what is unbalanced

atf.py stays the one definition of a sign: this module never reads a sign itself. To learn which characters of a
line gave which token, it replaces one stretch of the line at a time by a probe sign and asks parse_atf_line which
token changed (line_signs), so every rule of the reader (language shifts, glosses, determinatives, collapsed gaps)
holds here without being written twice.
"""
import contextlib
import io
import re
from dataclasses import dataclass, field

from atf import (_LINE_NUMBER, _SCORE_LINE, FLAG_MISSING, FLAG_RESTORED, FLAG_SIGN, FLAG_STATE, FLAG_WORD_START, GAP,
                 GAPN, parse_atf, parse_atf_line, protocol_line)  # _LINE_NUMBER, _SCORE_LINE: the line forms parse_atf reads

# ----------------------------------------------------------------------------- where each sign of a line sits

PROBE = 'ZZQZ'  # a sign no edition writes: put in place of a stretch of the line, it shows which token came from there
# Characters between signs: word spaces, the joins - . + : ; and the logogram join (ORACC's `--` shown as —).
_SEPARATORS = set('-.+:;—')
# Characters that mark a sign without being part of its value: brackets, half brackets, damage and collation marks.
_MARKS = set('[]⸢⸣˹˺<>{}#?*$')
# Stretches never probed: inline comments ($ ... $), footnote marks ^1^, language shifts %sux (a probe there would
# change the language of the rest of the line, not one token).
_SKIP = re.compile(r'\(\$.*?\$\)|\^\d+\^|%[\w/-]+')


@dataclass
class Sign:
    token: str
    flag: int
    start: int = None   # its characters in the line: content[start:end] (None: no stretch of the line gave it alone)
    end: int = None

    @property
    def word_start(self):
        return bool(self.flag & FLAG_WORD_START)


def _pieces(s):
    """(start, end) of every stretch of s that may be (part of) a sign: a run of characters up to a separator, a
    space or a mark; `...` and `…` alone; a compound |A.AN| and the (..) of a number or qualified value inside it."""
    skip = [m.span() for m in _SKIP.finditer(s)]
    out, i, n, a = [], 0, len(s), None

    def close(k):
        nonlocal a
        if a is not None and k > a:
            out.append((a, k))
        a = None

    while i < n:
        sk = next((e for b, e in skip if b == i), None)
        if sk is not None:
            close(i)
            i = sk
            continue
        c = s[i]
        if s.startswith('...', i) or c == '…':
            close(i)
            k = i + (1 if c == '…' else 3)
            out.append((i, k))
            i = k
        elif c.isspace() or c in _SEPARATORS or c in _MARKS:
            close(i)
            i += 1
        elif c == '|' and a is None:                  # a compound |A.AN| is one piece
            j = s.find('|', i + 1)
            a, i = i, (j + 1 if j > 0 and not any(x.isspace() for x in s[i:j]) else i + 1)
        elif c == '(':
            j = s.find(')', i + 1)
            if a is not None and j > 0 and not any(x.isspace() for x in s[i:j]):  # 3(diš), ba(BA), ku!(LU)
                i = j + 1
            else:                                     # ( ) around signs: [(x x)]
                close(i)
                i += 1
        elif c == ')':
            close(i)
            i += 1
        else:
            if a is None:
                a = i
            i += 1
    close(n)
    return out


def _quiet_parse(text, lang):
    with contextlib.redirect_stderr(io.StringIO()):  # the reader warns about the line once, not once per probe
        return [t for t, _ in parse_atf_line(text, lang=lang)]


def line_signs(content, lang='akk', only=None, parsed=None):
    """The tokens of one ATF line (parse_atf_line(content, lang=lang)) with the characters each came from.
    Each piece of the line (_pieces) is replaced in turn by PROBE and the line parsed again: the tokens that the
    probe sign replaced are the ones that piece gave (a piece may give part of a sign, `l[i`, or no token, `=`).
    only: a predicate on a piece's text; only those pieces are probed (e.g. the gaps), the rest keep no span.
    parsed: the line's tokens already read (to read the line once). Returns [Sign]."""
    signs = [Sign(t, f) for t, f in (parsed if parsed is not None else parse_atf_line(content, lang=lang))]
    toks = [s.token for s in signs]
    inserted = []  # pieces that gave no token of their own: `...` after `...` (one gap), notation
    for a, b in _pieces(content):
        piece = content[a:b]
        if only is not None and not only(piece):
            continue
        probed = _quiet_parse(content[:a] + PROBE + content[b:], lang)
        hit = [k for k, t in enumerate(probed) if PROBE.lower() in t.lower()]
        if len(hit) != 1:
            continue
        j, tail = hit[0], len(probed) - hit[0] - 1
        if probed[:j] != toks[:j] or len(toks) - tail < j or probed[j + 1:] != toks[len(toks) - tail:]:
            continue  # the probe changed more than its own tokens
        covered = range(j, len(toks) - tail)
        if not covered:
            inserted.append((j, a, b))
        for k in covered:
            s = signs[k]
            s.start = a if s.start is None else min(s.start, a)
            s.end = b if s.end is None else max(s.end, b)
    for j, a, b in inserted:  # `... ...` is one [GAPN]: every `...` of it belongs to that gap
        for k in (j - 1, j):
            if 0 <= k < len(signs) and signs[k].token == GAPN and content[a:b] in ('...', '…'):
                s = signs[k]
                s.start = a if s.start is None else min(s.start, a)
                s.end = b if s.end is None else max(s.end, b)
                break
    return signs


def is_gap_piece(piece):
    """A piece of a line that may be a lost sign or gap: x, X, ..., …"""
    return piece in ('x', 'X', '...', '…')


# ----------------------------------------------------------------------------- the input's own conventions

_SUB = str.maketrans('0123456789', '₀₁₂₃₄₅₆₇₈₉')
_ACCENT = {'2': dict(zip('aeiuAEIU', 'áéíúÁÉÍÚ')), '3': dict(zip('aeiuAEIU', 'àèìùÀÈÌÙ'))}
_TO_ASCII = (('š', 'sz'), ('Š', 'SZ'), ('ṣ', 's,'), ('Ṣ', 'S,'), ('ṭ', 't,'), ('Ṭ', 'T,'), ('ś', "s'"), ('Ś', "S'"),
             ('ʾ', "'"))


@dataclass(frozen=True)
class Spelling:
    """How an input writes sign values: index digits as subscripts (ša₂, ORACC's Unicode ATF), as ASCII digits
    (ša2) or, for 2 and 3, as accents (šá, šà; higher indices then as subscripts or digits); ḫ or h; š or
    ASCII-ATF sz (with s, t, s' for ṣ ṭ ś)."""
    index: str = 'subscript'   # subscript | digits
    accents: bool = False
    h_breve: bool = False
    ascii: bool = False

    @staticmethod
    def of(text):
        """The conventions of a text (a line, a whole file), read from how it writes its own signs."""
        words = ' '.join(l for l in text.splitlines() if not l.lstrip().startswith(('#', '@', '&', '$', '>')))
        subs = bool(re.search('[₀-₉]', words))
        digits = bool(re.search(r'(?<![\d(])[a-zA-Zšṣṭśḫ][0-9]+(?![0-9(/])', words))
        ascii_atf = bool(re.search(r'sz|SZ|s,|t,|S,|T,', words)) and not re.search('[šṣṭŠṢṬ]', words)
        return Spelling(index='digits' if (digits and not subs) or (ascii_atf and not subs) else 'subscript',
                        accents=bool(re.search('[áéíúàèìùÁÉÍÚÀÈÌÙ]', words)),
                        h_breve=bool(re.search('[ḫḪ]', words)), ascii=ascii_atf)


def spell(token, sp=Spelling()):
    """A normalized token (atf.normalize_sign) written in the conventions `sp`: li2 -> li₂ / li2 / lí;
    {lu2} -> {lu₂}; 2(geš2) -> 2(geš₂); |A.AN2| -> |A.AN₂|; h -> ḫ where the input writes ḫ; š -> sz in ASCII ATF.
    Numbers, x, ... and the specials stay as they are."""
    if token in (GAP, GAPN):
        return 'x' if token == GAP else '...'
    if token.startswith('[') or not token:
        return token

    def value(m):  # one value: letters then an index
        base, idx = m.group(1), m.group(2)
        if sp.accents and idx in ('2', '3'):
            k = next((i for i, c in enumerate(base) if c in _ACCENT[idx]), None)
            if k is not None:
                return base[:k] + _ACCENT[idx][base[k]] + base[k + 1:]
        return base + (idx.translate(_SUB) if sp.index == 'subscript' else idx)

    out = re.sub(r'([^\W\d_]+)(\d+)', value, token)
    if sp.h_breve:
        out = out.replace('h', 'ḫ').replace('H', 'Ḫ')
    if sp.ascii:
        for a, b in _TO_ASCII:
            out = out.replace(a, b)
    return out


def is_determinative(token):
    return token.startswith('{') and token.endswith('}')


def join_signs(tokens, sp=Spelling()):
    """The signs of one restoration as ATF: `-` between signs, none before or after a determinative
    ({d}AMAR-UTU, URU{ki})."""
    out = ''
    for k, t in enumerate(tokens):
        if k and not is_determinative(t) and not is_determinative(tokens[k - 1]):
            out += '-'
        out += spell(t, sp)
    return out


def render(tokens, flags=None, sp=Spelling()):
    """Tokens as an ATF line: a space before each word start (FLAG_WORD_START of `flags`; one word without
    them), `-` inside a word, determinatives attached: `{m}aš-šur-x x`, never `{m}-aš-šur`."""
    words = []
    for k, t in enumerate(tokens):
        if not words or (flags is not None and flags[k] & FLAG_WORD_START):
            words.append([t])
        else:
            words[-1].append(t)
    return ' '.join(join_signs(w, sp) for w in words)


# ----------------------------------------------------------------------------- brackets

_PAIRS = (('[', ']'), ('⸢', '⸣'), ('˹', '˺'), ('{', '}'), ('(', ')'), ('<', '>'))


def check_brackets(text):
    """None when every bracket of a line closes after it opens, else one sentence saying which does not."""
    for o, c in _PAIRS:
        depth = 0
        for i, ch in enumerate(text):
            if ch == o:
                depth += 1
                opened = i
            elif ch == c:
                depth -= 1
                if depth < 0:
                    return f"unbalanced brackets: the {c} at character {i + 1} closes no {o}"
        if depth > 0:
            return f"unbalanced brackets: a {o} (the last at character {opened + 1}) is never closed by {c}"
    return None


def _depths(s):
    """Depth of the square brackets [ ] before each character of s (len(s) + 1 values), starting at the depth
    the line needs so that it never closes more than it opened (a bracket opened on an earlier line)."""
    run, low = 0, 0
    for ch in s:
        run += (ch == '[') - (ch == ']')
        low = min(low, run)
    d, out = -low, [-low]
    for ch in s:
        d += (ch == '[') - (ch == ']')
        out.append(d)
    return out


# ----------------------------------------------------------------------------- gaps of a line

@dataclass
class Gap:
    """One gap of a line: `length` lost signs (x x: known length) or one gap of unknown length (length None,
    `...`), or a run of signs the editor restored inside [ ] (`truth`: its signs). start: its first token in
    the line's tokens; span: its characters in the line's content (None: not found, written in the note only)."""
    start: int
    length: int = None
    span: tuple = None
    truth: list = None

    @property
    def n_tokens(self):
        """How many tokens of the line it takes (one [GAPN] for a gap of unknown length)."""
        return self.length or 1


def line_gaps(signs, content=None, restored=False):
    """The gaps of a line's [Sign]: each run of [GAP] (known length), each [GAPN]; with restored=True also each run
    of real signs the editor restored inside [ ] (flag restored and inside square brackets of `content`)."""
    gaps, i = [], 0
    depth = _depths(content) if content is not None else None

    def lost(s):
        return (restored and s.flag & FLAG_SIGN and s.flag & FLAG_STATE == FLAG_RESTORED and s.start is not None
                and depth is not None and depth[s.start] > 0)

    def span(run):
        if any(s.start is None for s in run):
            return None
        return min(s.start for s in run), max(s.end for s in run)

    while i < len(signs):
        t = signs[i].token
        if t == GAP:
            j = i
            while j < len(signs) and signs[j].token == GAP:
                j += 1
            gaps.append(Gap(i, j - i, span(signs[i:j])))
            i = j
        elif t == GAPN:
            gaps.append(Gap(i, None, span(signs[i:i + 1])))
            i += 1
        elif lost(signs[i]):
            j = i
            while j < len(signs) and lost(signs[j]):
                j += 1
            gaps.append(Gap(i, j - i, span(signs[i:j]), truth=[s.token for s in signs[i:j]]))
            i = j
        else:
            i += 1
    return gaps


def _writes(content, fills, sp):
    """{fill index: (start, end, text)}: where each writable gap of `fills` goes and what replaces it."""
    depth = _depths(content)
    out = {}
    for n, (gap, tokens) in enumerate(fills):
        if gap.span is None or gap.truth is not None:
            continue
        a, b = gap.span
        while a > 0 and content[a - 1] in '⸢˹(':      # half brackets and the ( ) of a possible sign go with them
            a -= 1
        while b < len(content) and content[b] in '⸣˺)#?!*':
            b += 1
        seg = content[a:b]
        if any(seg.count(o) != seg.count(c) for o, c in ('⸢⸣', '˹˺', '()')) or re.search('[{}<>$]', seg):
            continue
        out[n] = (a, b, ('' if depth[a] > 0 else '[') + join_signs(tokens, sp) + ('' if depth[b] > 0 else ']'))
    return out


def fill_segments(content, fills, sp=Spelling()):
    """fill_line's result cut into pieces: [(text, gap number 1.. or None)], the restored stretches marked."""
    out, at = [], 0
    for n, (a, b, text) in sorted(_writes(content, fills, sp).items(), key=lambda kv: kv[1][0]):
        if a > at:
            out.append((content[at:a], None))
        out.append((text, n + 1))
        at = b
    if at < len(content) or not out:
        out.append((content[at:], None))
    return out


def fill_line(content, fills, sp=Spelling()):
    """content with each (gap, tokens) of `fills` written in: the gap's characters (from its first sign to its
    last, with the separators, half brackets and marks between) become the restoration, inside [ ] as an editor
    writes it: brackets already around the gap are kept (`[x x]-tum` -> `[e-li]-tum`), missing ones are added
    (`a-na x x` -> `a-na [e-li]`). Gaps without a span, with half brackets that open or close outside them, or
    inside < > or <$ $>, and runs the editor restored, are left as they are. Returns (new content, [written?])."""
    done = _writes(content, fills, sp)
    return ''.join(t for t, _ in fill_segments(content, fills, sp)), [n in done for n in range(len(fills))]


# ----------------------------------------------------------------------------- a whole ATF file

@dataclass
class Line:
    no: int                  # index of the line in the file (0-based)
    raw: str                 # the line as in the file, its line ending included
    offset: int              # where its transliteration starts in raw
    content: str             # the transliteration (raw[offset:offset + len(content)])
    lang: str
    signs: list = field(default_factory=list)
    at: int = 0              # index of its first token in its text's token stream
    gaps: list = field(default_factory=list)


@dataclass
class Text:
    id: str
    lines: list = field(default_factory=list)     # its transliteration lines (with their signs)
    tokens: list = field(default_factory=list)    # the text's token stream: its lines' tokens, one [GAPN] per lost `$` line
    flags: list = field(default_factory=list)


def _dollar_is_gap(line):
    """Does parse_atf read this `$` line as lost text (one [GAPN])? Asked of parse_atf itself."""
    with contextlib.redirect_stderr(io.StringIO()):
        docs = parse_atf('1. a\n' + line)
    return bool(docs) and len(docs[0]['signs']) > 1


def read_edition(text, restored=False, spans='gaps', name='input'):
    """An ATF file -> (raw lines, [Text]). Texts, languages and line kinds as parse_atf reads them (`&` starts a
    text, `#atf: lang`, ORACC's Sumerian default under `#project:`, translations skipped, `==` bilingual lines,
    a score's manuscript lines grouped by siglum after the text's own lines); each transliteration line keeps
    its place in the file, its characters and its tokens, and each text its token stream (the context of its
    gaps). spans: 'gaps' finds the characters of the gaps only (x, ...; and the editor's restorations with
    restored=True), 'all' of every sign. The raw lines joined give back the file exactly."""
    raws = text.splitlines(keepends=True)
    texts, cur = [], None
    state = {}

    def start(doc_id):
        nonlocal cur
        cur = Text(doc_id)
        texts.append(cur)
        state.update(lang=None, oracc=False, score=False, translation=False, main=[], wit={})

    def finish():
        if cur is None:
            return
        order = state['main'] + [x for lines in state['wit'].values() for x in lines]
        for item in order:
            if isinstance(item, Line):
                item.at = len(cur.tokens)
                cur.lines.append(item)
                cur.tokens += [s.token for s in item.signs]
                cur.flags += [s.flag for s in item.signs]
            else:   # a lost `$` line
                cur.tokens.append(GAPN)
                cur.flags.append(item)
        cur.lines.sort(key=lambda l: l.no)

    def add(no, raw, at, content):
        lang = state['lang'] or ('sux' if state['oracc'] else 'akk')
        lead = len(raw) - len(raw.lstrip())
        lead += len(raw[lead:]) - len(raw[lead:].lstrip('\ufeff'))
        offset, where = lead + at, f'{name}:{no + 1}'
        parsed = parse_atf_line(content, where=where, lang=lang)
        only = None if restored or spans == 'all' else is_gap_piece  # the editor's restorations need every span
        need = spans == 'all' or any(t in (GAP, GAPN) for t, _ in parsed) or (
            restored and any(f & FLAG_STATE == FLAG_RESTORED and f & FLAG_SIGN for _, f in parsed))
        signs = line_signs(content, lang, only=only, parsed=parsed) if need else [Sign(t, f) for t, f in parsed]
        line = Line(no, raw, offset, content, lang, signs)
        line.gaps = line_gaps(signs, content, restored)
        return line

    for no, raw in enumerate(raws):
        line = raw.strip().lstrip('\ufeff')
        if not line:
            continue
        if line.startswith('&'):
            finish()
            start(line[1:].split('=')[0].strip() or f'text{len(texts)}')
            continue
        if cur is None:
            start('text')
        if protocol_line(line, state):
            continue
        if line.startswith('$'):
            if _dollar_is_gap(line):
                state['main'].append(FLAG_MISSING)  # as parse_atf flags it
            continue
        if line.startswith('=='):
            state['main'].append(add(no, raw, 2, line[2:]))
            continue
        m = _LINE_NUMBER.match(line)
        if m:
            state['main'].append(add(no, raw, m.start(2), m.group(2)))
            continue
        m = _SCORE_LINE.match(line) if state['score'] else None
        if m:
            state['wit'].setdefault(m.group(1), []).append(add(no, raw, m.start(3), m.group(3)))
    finish()
    return raws, texts


def with_notes(raw, notes):
    """The line `raw` followed by one `#note:` line per note, with raw's own line ending (a last line without one
    gets a newline before its notes and none after, as it had none)."""
    end = raw[len(raw.rstrip('\r\n')):]
    nl = end or '\n'
    out = raw + ('' if end else nl)
    for k, n in enumerate(notes):
        out += '#note: ' + n + (nl if end or k < len(notes) - 1 else '')
    return out


def text_from_signs(doc_id, signs, words_per_line=10, sp=Spelling()):
    """A text known only as its signs [(token, flag)] (an ORACC JSON text) laid out as ATF lines of
    `words_per_line` words, numbered 1., 2., ... (raw lines 'N. ...\\n', `no` left to the writer), each sign's
    span known from the writing."""
    t = Text(doc_id)
    words = []
    for tok, flag in signs:
        if not words or flag & FLAG_WORD_START:
            words.append([])
        words[-1].append((tok, flag))
    for k in range(0, len(words), words_per_line):
        label = f'{k // words_per_line + 1}. '
        content, line_signs_ = '', []
        for w in words[k:k + words_per_line]:
            content += ' ' if content else ''
            for j, (tok, flag) in enumerate(w):
                if j and not is_determinative(tok) and not is_determinative(w[j - 1][0]):
                    content += '-'
                a = len(content)
                content += spell(tok, sp)
                line_signs_.append(Sign(tok, flag, a, len(content)))
        line = Line(-1, label + content + '\n', len(label), content, 'akk', line_signs_, at=len(t.tokens))
        line.gaps = line_gaps(line_signs_, content)
        t.lines.append(line)
        t.tokens += [s.token for s in line_signs_]
        t.flags += [s.flag for s in line_signs_]
    return t
