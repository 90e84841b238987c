"""The ORACC JSON reader (atf.parse_corpusjson) on real corpusjson: five ORACC projects as ORACC serves them
(rinap, riao, ribo, suhu and a sample of saao), kept beside the repository, never in it. Hand-verified words
(each with its ATF `frag` as it stands in the file and the tokens read from it, checked by hand against the ATF
conventions of docs/akkadian.md), `$` lines, and invariants over every text: no grapheme of an
Akkadian word is lost without a reason, editor-supplied and restored signs are never targets. Skipped when the
files are absent, as in a fresh clone. The same text written by hand in both forms is in test_akkadian_data.py."""
import json
import re
import zipfile

import numpy as np
import pytest

from conftest import REPO, expect, got
from atf import FLAG_SIGN, FLAG_STATE, GAP, GAPN, is_target, parse_corpusjson

JSON_DIR = REPO.parent / 'shared' / 'data' / 'oracc_json'
pytestmark = pytest.mark.skipif(not JSON_DIR.is_dir(), reason=f'the real ORACC JSON files are not at {JSON_DIR}')

@pytest.fixture(scope='module')
def texts():
    """{text id: the parsed JSON object} of every corpusjson file of the five zips; None for an unreadable one."""
    out = {}
    for z in sorted(JSON_DIR.glob('*.zip')):
        with zipfile.ZipFile(z) as zf:
            for name in zf.namelist():
                if '/corpusjson/' in name and name.endswith('.json'):
                    try:
                        out[name.rsplit('/', 1)[1][:-5]] = json.loads(zf.read(name).decode('utf-8'))
                    except ValueError:
                        out[name.rsplit('/', 1)[1][:-5]] = None
    return out


def words(obj):
    """The lemma (`l`) nodes of a text in reading order, as the reader walks them (first choice of an `ll`)."""
    out = []

    def walk(nodes):
        for nd in nodes:
            if isinstance(nd, dict):
                if nd.get('node') == 'c':
                    walk(nd.get('cdl', []))
                elif nd.get('node') == 'll':
                    walk(nd.get('choices', [])[:1])
                elif nd.get('node') == 'l':
                    out.append(nd)
    walk(obj.get('cdl', []))
    return out


def leaves(nodes, out):
    """Every grapheme of a gdl tree that carries an id (what ORACC counts as a written sign), in order."""
    for g in nodes:
        if isinstance(g, dict):
            if 'id' in g:
                out.append(g)
            for k in ('group', 'seq', 'qualified'):
                if isinstance(g.get(k), list):
                    leaves(g[k], out)
    return out


def akkadian(nd):
    lang = str(nd.get('f', {}).get('lang', ''))
    return lang.startswith('akk') and '-949' not in lang and 'cof-head' not in nd


@pytest.fixture(scope='module')
def parsed(texts):
    """{text id: (document, trace)} of parse_corpusjson on every readable text."""
    out = {}
    for tid, obj in texts.items():
        if obj is not None:
            trace = []
            out[tid] = (parse_corpusjson(obj, trace=trace), trace)
    return out


def word_tokens(trace, ref):
    """The (token, flag) list the reader gave for the word whose ref is `ref` (its graphemes' ids start with it)."""
    return [r['token'] for r in trace if r['id'] and r['id'].startswith(ref + '.') and r['token']]


# (text id, the word's ref, its ATF as the file's `frag` shows it, the tokens verified by reading that ATF)
HAND_VERIFIED = [
    # a sign with a palaeographic feature `\t` (SAA): form + mods, no `v`; the old reader dropped `na`
    ('P224485', 'P224485.2.3', 'a-na\\t', 'a^ na'),
    # `\m` on a logogram: ERIM-MEŠ\m was read ERIM
    ('P224485', 'P224485.5.7', 'ERIM-MEŠ\\m', 'ERIM^ MEŠ'),
    # an allograph LU₂~v (the frag shows {lu₂v}) as determinative, `—` joining a logographic compound, ⸢ri⸣
    ('P224485', 'P224485.4.4', '{lu₂v}A—šip-⸢ri⸣', '{lu2}^ A šip ri:D'),
    # the sign modifier @v names the Neo-Assyrian sign of ištu and stays; \m is dropped
    ('P224485', 'P224485.14.3', 'TA@v\\m', 'TA@v^'),
    ('P224485', 'P224485.38.1', '⸢TA@v⸣', 'TA@v^:D'),
    # two features on one sign, `\dm`
    ('P313417', 'P313417.5.1', '⸢ša\\m⸣', 'ša^:D'),
    # supplied ‹ › around a restoration and a half bracket: every sign restored, none a target
    ('Q005618', 'Q005618.20.1', '<a-[li]-⸢šu>', 'a^:R li:R šu:R'),
    ('Q004473', 'Q004473.44.3', 'ak-<ta>-šad', 'ak^ ta:R šad'),
    ('Q004472', 'Q004472.34.4', '<u₂-še-ṣa-a>', 'u2^:R še:R ṣa:R a:R'),
    # excised << >> across a determinative and a logogram: only MEŠ is read
    ('Q003517', 'Q003517.52.2', '{<<d}LAMMA>>.MEŠ', 'MEŠ^'),
    ('Q004473', 'Q004473.84.3', 'šal-la-su-<<šu₂>>-nu', 'šal^ la su nu'),
    ('Q004616', 'Q004616.43.2', '{m}{<<m>>}MAN-aš-šur', '{m}^ MAN aš šur'),
    # alternatives are one sign
    ('Q005787', 'Q005787.8.1', '⸢ar/ri⸣-mi-⸢šu⸣-ma', 'ar/ri^:D mi šu:D ma'),
    ('Q005759', 'Q005759.3.5', 'MA/KU', 'MA/KU^'),
    # a correction a!(e): the sign read, not the sign written (the frag loses the `!`)
    ('X900016', 'X900016.186.4', 'a(e-)de-e', 'a^ de e'),
    # <$ $>: a sign on an erasure, in the context but not a target; an x there is a lost sign
    ('X900016', 'X900016.307.3', 'liš-<$x$>-kun', 'liš^ [GAP]:M kun'),
    ('P314339', 'P314339.12.4', '<$su$>-ur-ha', 'su^:R ur ha'),
    # numbers: 01 is 1 (ORACC reads both as 1(diš)), fractions and N(sign) stay
    ('P224485', 'P224485.19.7', '01', '1^'),
    ('P224485', 'P224485.24.3', '01-en', '1^ en'),
    ('Q005745', 'Q005745.7.5', '1/2', '1/2^'),
    ('Q006285', 'Q006285.2.5', '3(BAN₂)', '3(ban2)^'),
    # a determinative after its word, a qualified value, a compound, a ligature
    ('Q005278', 'Q005278.5.1', 'ga-surₓ(SAG){ki}', 'ga^ surₓ {ki}'),
    ('Q003373', 'Q003373.20.3', '|LAM×KUR|⸢RU⸣{ki}', '|LAM×KUR|^ RU:D {ki}'),
    ('Q004484', 'Q004484.118.8', 'I₃+GIŠ.MEŠ', 'I3^ GIŠ MEŠ'),
    # ( ) around a lost sign, a number in half brackets
    ('Q005792', 'Q005792.33.1', '[(x)]+16', '[GAP]^:M 16:D'),
    # a determinative in the editor's ( ), inside a break opened in the word before
    ('Q005895', 'Q005895.1.2', '{(m)}a-šur]-⸢da⸣-a-an', '{m}^:R a:R šur:R da:D a an'),
    # an inline comment inside a word: ($blank$) loses nothing, UD.KAM stays one word
    ('Q005793', 'Q005793.36.2', 'UD.($blank$).KAM', 'UD^ KAM'),
    ('Q005709', 'Q005709.5.1', '[...]-ti-($erasure?$)-ma', '[GAPN]^:M ti ma'),
    # half brackets opened in one word and closed in the next
    ('Q004618', 'Q004618.3.3', '{m}a-ra⸣-[me', '{m}^:D a:D ra:D me:R'),
]


def test_hand_verified_words_are_read_as_a_scholar_reads_the_atf(texts, parsed):
    assert len(HAND_VERIFIED) >= 20
    for tid, ref, frag, spec in HAND_VERIFIED:
        nd = next(w for w in words(texts[tid]) if w.get('ref') == ref and 'cof-head' not in w)
        assert nd.get('frag') == frag, (tid, ref, nd.get('frag'))  # the word is the one written beside it
        assert got(word_tokens(parsed[tid][1], ref)) == expect(spec), (tid, frag)


def test_a_compound_lemma_is_read_once(texts):
    """{lu₂~v}A—šip-ri (mār šipri) is two lemmata over the same graphemes: the second (`cof-head`) is not read again."""
    obj = texts['P224485']
    both = [w for w in words(obj) if w.get('ref') == 'P224485.4.4']
    assert len(both) == 2 and 'cof-head' in both[1]
    doc = parse_corpusjson(obj)
    toks = [t for t, _ in doc['signs']]
    k = next(i for i in range(len(toks)) if toks[i:i + 4] == ['{lu2}', 'A', 'šip', 'ri'])
    assert toks[k + 4:k + 8] != ['{lu2}', 'A', 'šip', 'ri']


def _between(texts, tid, before, dollar_ref, after):
    """The tokens of the word `before`, the `$` node `dollar_ref` and the word `after`, read together."""
    nodes = {}

    def walk(ns):
        for nd in ns:
            if isinstance(nd, dict):
                if nd.get('node') == 'c':
                    walk(nd.get('cdl', []))
                elif nd.get('node') in ('l', 'd'):
                    nodes.setdefault(nd.get('ref'), nd)
    walk(texts[tid]['cdl'])
    return got(parse_corpusjson({'cdl': [nodes[before], nodes[dollar_ref], nodes[after]]})['signs'])


@pytest.mark.parametrize('tid, before, dollar_ref, after, spec', [
    # $ ruling: nothing between the lines
    ('P335343', 'P335343.30.3', 'P335343.31', 'P335343.32.1', 'i^ laq:D qi:R {iti}^ GUD'),
    # a loose `$` line (state other: the JSON keeps no words of it): one [GAPN], no false neighbours
    ('P313458', 'P313458.24.4', 'P313458.25', 'P313458.26.1', 'si^ mu nu [GAPN]:M a^ na'),
    # $ rest missing / traces / illegible: one [GAPN]
    ('Q003701', 'Q003701.258.2', 'Q003701.259', 'Q003701.260.1', '[GAP]^:M [GAPN]:M U2^:D [GAPN]:M'),
    ('Q004621', 'Q004621.216.9', 'Q004621.217', 'Q004621.218.1', 'KUR^ ud [GAPN]:M [GAP]^:M'),
    # blank lines: nothing
    ('Q003262', 'Q003262.167.1', 'Q003262.168', 'Q003262.169.1',
     'hi^ is sa a te ši na {uru}^ aš šur KUR su GUR'),
    # an inline ($______$) between words (a blank space): nothing
    ('P335343', 'P335343.29.4', 'P335343.30.1', 'P335343.30.2', 'DUG4^:D DUG4:D ma:R la^'),
])
def test_dollar_lines(texts, tid, before, dollar_ref, after, spec):
    assert _between(texts, tid, before, dollar_ref, after) == expect(spec)


def test_every_grapheme_of_an_akkadian_word_is_accounted_for(texts, parsed):
    """Invariant over all texts: each grapheme (gdl node with an id) of an Akkadian word gives a token, or is
    deliberately not read: excised, a later reading of an alternation (joined into the first), punctuation or a
    line break, an inline comment that loses nothing. Nothing is dropped silently, nothing read twice."""
    n_graphemes = n_tokens = n_mods = 0
    reasons = {}
    for tid, (_, trace) in parsed.items():
        obj = texts[tid]
        by_id = {}
        for r in trace:
            if r['id'] is not None and r['why'] != 'compound':  # (a compound lemma's later parts repeat the ids)
                assert r['id'] not in by_id, (tid, r)  # read once
                by_id[r['id']] = r
        for nd in words(obj):
            if not akkadian(nd):
                continue
            for g in leaves(nd.get('f', {}).get('gdl', []), []):
                r = by_id.get(g['id'])
                assert r is not None, (tid, nd.get('frag'), g)
                n_graphemes += 1
                if r['token'] is not None:
                    n_tokens += 1
                    n_mods += 'mods' in g
                else:
                    assert r['why'] in ('excised', 'alternative', 'no sign'), (tid, nd.get('frag'), r)
                    reasons[r['why']] = reasons.get(r['why'], 0) + 1
                    if r['why'] == 'no sign':  # punctuation, a word-internal line break, an inline comment
                        assert 'p' in g or g.get('x') in ('newline', 'dollar'), (tid, g)
    assert n_graphemes > 400_000 and n_tokens + sum(reasons.values()) == n_graphemes
    assert n_mods >= 300  # every sign with modifiers of the saao sample is read
    assert reasons.get('excised', 0) > 20 and reasons.get('alternative', 0) > 50


def test_restored_and_supplied_signs_are_never_targets(texts, parsed):
    """Invariant over all texts: a grapheme inside [ ] (break missing) is never a target, nor any sign of a word
    the editor supplied whole (`<...>`), nor a gap; every target is a real sign."""
    n_lost = n_supplied = 0
    for tid, (doc, trace) in parsed.items():
        obj = texts[tid]
        if doc is None:
            continue
        flags = np.array([f for _, f in doc['signs']])
        toks = [t for t, _ in doc['signs']]
        tgt = is_target(flags)
        assert all(((f & FLAG_SIGN) != 0) and t not in (GAP, GAPN) for t, f, k in zip(toks, flags, tgt) if k)
        by_id = {r['id']: r for r in trace if r['id'] and r['why'] != 'compound'}
        for nd in words(obj):
            if not akkadian(nd):
                continue
            whole = re.fullmatch(r'<[^<$(].*>', nd.get('frag') or '') and '>' not in nd['frag'][:-1]
            for g in leaves(nd.get('f', {}).get('gdl', []), []):
                tok = by_id[g['id']]['token']
                if tok is None:
                    continue
                target = bool(tok[1] & FLAG_SIGN) and (tok[1] & FLAG_STATE) <= 1  # is_target of one flag
                if g.get('break') == 'missing':
                    n_lost += 1
                    assert not target, (tid, nd.get('frag'), tok)
                if whole:
                    n_supplied += 1
                    assert not target, (tid, nd.get('frag'), tok)
    assert n_lost > 50_000 and n_supplied > 100
