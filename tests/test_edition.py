"""ATF as scholars write it (edition.py): where every sign of a line sits, the input's own conventions, restorations
written back inside brackets as an editor writes them, whole files read with every line kept. Exact strings; no
model. The real ORACC ATF files are read when ../shared/data/oracc_atf is there (skipped otherwise)."""
from pathlib import Path

import pytest

from atf import FLAG_WORD_START, GAP, GAPN, parse_atf, parse_atf_line
from edition import (Spelling, check_brackets, fill_line, fill_segments, join_signs, line_gaps, line_signs,
                     read_edition, render, spell, text_from_signs, with_notes)

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
ATF_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'oracc_atf'
LINE = 'a-na LUGAL be-li₂-ia ARAD-ka {m}aš-šur-[x x] lu DI-mu a-na LUGAL [...] be-li₂-ia'


def spans(text, **kw):
    return [(s.token, text[s.start:s.end] if s.start is not None else None) for s in line_signs(text, **kw)]


def test_every_sign_knows_its_characters():
    got = spans('{m}aš-šur-[x x] lu [be]-li₂-ia ...')
    assert got == [('{m}', 'm'), ('aš', 'aš'), ('šur', 'šur'), (GAP, 'x'), (GAP, 'x'), ('lu', 'lu'), ('be', 'be'),
                   ('li2', 'li₂'), ('ia', 'ia'), (GAPN, '...')]
    # the tokens are parse_atf_line's, whatever the line holds: a sign partly broken, a compound, a number, a gloss
    text = 'l[i]-ik |A.AN| 3(diš) ku!(LU) {d}AMAR.UTU %sux lugal %a ša₂ {+tu-ut} = x'
    got = spans(text)
    assert [t for t, _ in got] == [t for t, _ in parse_atf_line(text)]
    assert [c for _, c in got] == ['l[i', 'ik', '|A.AN|', '3(diš)', 'ku!(LU)', 'd', 'AMAR', 'UTU', 'ša₂', 'tu', 'ut', 'x']


def test_adjacent_unknown_gaps_are_one_gap_with_all_their_characters():
    text = 'a ... [...] ša'
    sg = line_signs(text)
    assert [s.token for s in sg] == ['a', GAPN, 'ša']
    assert text[sg[1].start:sg[1].end] == '... [...'
    gaps = line_gaps(sg, text)
    assert len(gaps) == 1 and gaps[0].length is None
    assert fill_line(text, [(gaps[0], ['be', 'li2'])]) == ('a [be-li₂] ša', [True])


def test_only_the_gaps_can_be_located():
    got = spans(LINE, only=lambda piece: piece in ('x', '...'))
    assert [c for _, c in got if c] == ['x', 'x', '...']
    assert [t for t, c in got if c is None][:3] == ['a', 'na', 'LUGAL']


@pytest.mark.parametrize('text,fills,want', [
    ('{m}aš-šur-[x x] lu', [['PAP', 'AŠ']], '{m}aš-šur-[PAP-AŠ] lu'),        # the example
    ('[x x]-tum', [['e', 'li']], '[e-li]-tum'),                               # brackets already there are kept
    ('a-na x x', [['e', 'li']], 'a-na [e-li]'),                               # missing ones are added
    ('x]-ia', [['li2']], 'li₂]-ia'),                                          # a bracket opened on an earlier line
    ('[x x x x (x) e]r-ku', [['a', 'na']], '[a-na e]r-ku'),                   # (x): a possible sign goes too
    ('⸢x⸣ x ša₂', [['e', 'li2']], '[e-li₂] ša₂'),                             # half brackets around the lost signs
    ('[x] [x] ša', [['e', 'li']], '[e-li] ša'),
    ('[...] a-mat [...]', [['{d}', 'AMAR', 'UTU'], ['URU', '{ki}']], '[{d}AMAR-UTU] a-mat [URU{ki}]'),
    ('a-na LUGAL [...] be-li₂-ia', [['be', 'li2']], 'a-na LUGAL [be-li₂] be-li₂-ia'),
    ('a-na LUGAL [...] be-li2-ia', [['be', 'li2']], 'a-na LUGAL [be-li2] be-li2-ia'),  # the input's digits
    ('[...] šá KUR-i', [['ša2', 'KU3']], '[šá-KÙ] šá KUR-i'),                 # the input's accents
    ('a-na [...] sza2', [['ša2', 'šu']], 'a-na [sza2-szu] sza2'),             # ASCII ATF
    ('ḫa-ad-[...]', [['hu', 'u']], 'ḫa-ad-[ḫu-u]'),                           # ḫ where the input writes ḫ
    ('[p]a-an <$x$>', [['a']], '[p]a-an <$[a]$>'),
])
def test_restorations_are_written_as_an_editor_writes_them(text, fills, want):
    gaps = line_gaps(line_signs(text), text)
    assert len(gaps) == len(fills)
    out, done = fill_line(text, list(zip(gaps, fills)), Spelling.of(text))
    assert out == want and all(done)
    segs = fill_segments(text, list(zip(gaps, fills)), Spelling.of(text))
    assert ''.join(t for t, _ in segs) == want and sorted({n for _, n in segs if n}) == list(range(1, len(fills) + 1))


def test_gaps_the_writer_cannot_place_stay_as_they_are():
    text = 'a-na ($obv i breaks$) ša'  # a gap said by an inline comment has no sign of its own
    gaps = line_gaps(line_signs(text), text)
    assert [(g.length, g.span) for g in gaps] == [(None, None)]
    assert fill_line(text, [(gaps[0], ['a'])]) == (text, [False])


def test_rendering_keeps_determinatives_hyphens_and_spaces():
    toks = parse_atf_line('{m}aš-šur-[x x] {d}AMAR.UTU URU{ki} be-li₂-ia')
    assert render([t for t, _ in toks], [f for _, f in toks], Spelling()) == '{m}aš-šur-x x {d}AMAR-UTU URU{ki} be-li₂-ia'
    assert join_signs(['{d}', 'AMAR', 'UTU']) == '{d}AMAR-UTU' and join_signs(['a', '{ki}', 'ma']) == 'a{ki}ma'
    assert render(['a', 'na', 'LUGAL'], [FLAG_WORD_START, 0, FLAG_WORD_START]) == 'a-na LUGAL'


def test_spelling_conventions():
    assert Spelling.of(LINE) == Spelling()
    assert Spelling.of('a-na be-li2-ia') == Spelling(index='digits')
    assert Spelling.of('šá qí-bí-ma') == Spelling(accents=True)
    assert Spelling.of('a-na sza2 s,e-er') == Spelling(index='digits', ascii=True)
    assert spell('li2') == 'li₂' and spell('li2', Spelling(index='digits')) == 'li2'
    assert spell('li2', Spelling(accents=True)) == 'lí' and spell('u3', Spelling(accents=True)) == 'ù'
    assert spell('tu4', Spelling(accents=True)) == 'tu₄'                  # accents stop at 3
    assert spell('{lu2}') == '{lu₂}' and spell('2(geš2)') == '2(geš₂)' and spell('30') == '30'
    assert spell('|A.AN2|') == '|A.AN₂|' and spell(GAP) == 'x' and spell(GAPN) == '...'
    assert spell('šu2', Spelling(index='digits', ascii=True)) == 'szu2'


def test_bracket_check_says_which_bracket():
    assert check_brackets(LINE) is None
    assert check_brackets('a-na [x x be-li₂') == 'unbalanced brackets: a [ (the last at character 6) is never closed by ]'
    assert check_brackets('a-na x] be') == 'unbalanced brackets: the ] at character 7 closes no ['
    assert 'never closed by }' in check_brackets('{d AMAR')


def test_notes_keep_the_line_ending():
    assert with_notes('1. a [b]\r\n', ['n1', 'n2']) == '1. a [b]\r\n#note: n1\r\n#note: n2\r\n'
    assert with_notes('1. a [b]', ['n1']) == '1. a [b]\n#note: n1'     # a last line without an ending keeps none


def test_read_edition_keeps_every_line_and_finds_the_gaps():
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    raws, texts = read_edition(text)
    assert ''.join(raws) == text
    assert [t.id for t in texts] == ['P100001', 'P100002']
    t = texts[0]
    # the token stream is parse_atf's (a lost `$` line is one [GAPN]), line by line
    assert t.tokens == [s for s, _ in parse_atf(text)[0]['signs']]
    gapped = [(l.no + 1, [(l.content[g.span[0]:g.span[1]], g.length) for g in l.gaps]) for l in t.lines if l.gaps]
    assert gapped == [(11, [('x x', 2), ('x', 1), ('...', None)]), (12, [('...', None)])]
    l11 = next(l for l in t.lines if l.no == 10)
    assert l11.raw[:l11.offset] == "1'. " and l11.content == "[x x] ša₂ x# [...] ši-pir {d}AMAR.UTU"
    assert texts[1].lines[-1].gaps[0].length is None                  # `...` at the end of P100002's line 2


def test_read_edition_of_scores_bilinguals_and_languages():
    text = ('&X1 = a score\n#atf: lang akk\n@score\n1. %n šarru\nA_1: a-na [x] be\nB_1: a-na LUGAL x\n'
            'A_2: ša₂ [...]\n&X2 = bilingual\n#project: cams\n1. dim₃-me-er x\n== %sb DINGIR-MEŠ [x]\n')
    raws, texts = read_edition(text)
    assert ''.join(raws) == text
    a, b = texts
    assert [t for t in a.tokens] == [s for s, _ in parse_atf(text)[0]['signs']]   # witnesses grouped, as parse_atf
    assert [(l.no, len(l.signs)) for l in a.lines] == [(3, 0), (4, 4), (5, 4), (6, 2)]  # %n: no sign
    assert [(l.no, len(l.gaps)) for l in b.lines] == [(9, 0), (10, 1)]            # the Sumerian x is no Akkadian gap


def test_restored_runs_are_gaps_with_a_truth():
    text = '[e-li]-tum <ina> [x]'
    gaps = line_gaps(line_signs(text), text, restored=True)
    assert [(g.start, g.length, g.truth) for g in gaps] == [(0, 2, ['e', 'li']), (4, 1, None)]  # <ina> is no loss
    assert fill_line(text, [(gaps[0], ['a', 'b']), (gaps[1], ['ma'])]) == ('[e-li]-tum <ina> [ma]', [False, True])


def test_a_text_known_by_its_signs_is_laid_out_as_lines():
    signs = parse_atf_line('{m}aš-šur-x x lu ... ša₂')
    t = text_from_signs('rinap/Q1', signs, words_per_line=2)
    assert [l.raw for l in t.lines] == ['1. {m}aš-šur-x x\n', '2. lu ...\n', '3. ša₂\n']
    assert [(l.content[g.span[0]:g.span[1]], g.length) for l in t.lines for g in l.gaps] == [('x x', 2), ('...', None)]
    assert t.tokens == [s for s, _ in signs]


@pytest.mark.skipif(not ATF_DIR.is_dir(), reason='real ORACC ATF folder (../shared/data/oracc_atf) not present')
def test_real_atf_every_gap_is_found_and_writable():
    """Every file read back exactly; every gap of every Akkadian line located, and written, except those an inline
    comment ($ ... $) says are lost (they have no characters of their own: the note carries them)."""
    files = sorted(ATF_DIR.glob('*.atf'))
    assert len(files) >= 30
    n = unplaced = 0
    for f in files:
        text = f.read_text(encoding='utf-8')
        raws, texts = read_edition(text)
        assert ''.join(raws) == text, f
        for t in texts:
            for l in t.lines:
                n += len(l.gaps)
                out, done = fill_line(l.content, [(g, ['a'] * (g.length or 1)) for g in l.gaps])
                for g, ok in zip(l.gaps, done):
                    if not ok:
                        assert g.span is None and '($' in l.content, (f.name, l.content)
                        unplaced += 1
                assert [t_ for t_, _ in parse_atf_line(out, lang=l.lang)].count(GAP) == \
                    sum((g.length or 0) for g, ok in zip(l.gaps, done) if not ok)
    assert n > 1000 and unplaced < 20
