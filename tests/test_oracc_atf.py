"""The ATF reader (prepare/akkadian.py) on real ORACC editions: 32 ATF files as ORACC distributes them
(the test fixtures of oracc/pyoracc), kept beside the repository, never in it. Hand-verified lines
(each raw line is written beside its expected tokens) and invariants over every file. Skipped when the
files are absent, as in a fresh clone."""
import contextlib
import io
import re

import numpy as np
import pytest

from conftest import REPO, expect, got
from atf import FLAG_MISSING, FLAG_SIGN, FLAG_STATE, FLAG_WORD_START, GAP, GAPN, is_target
import atf
from prepare import akkadian as A

ATF_DIR = REPO.parent / 'shared' / 'data' / 'oracc_atf'
pytestmark = pytest.mark.skipif(not ATF_DIR.is_dir(), reason=f'the real ORACC ATF files are not at {ATF_DIR}')

def read(name):
    return (ATF_DIR / name).read_text(encoding='utf-8')


@pytest.fixture(scope='module')
def lines():
    """{(file, line number): [(token, flag), ...]} for every line parse_atf read as transliteration,
    recorded by wrapping parse_atf_line while each file goes through parse_atf."""
    seen = {}
    orig = atf.parse_atf_line  # patched where parse_atf looks it up

    def recording(text, where=None, lang='akk'):
        out = orig(text, where=where, lang=lang)
        name, k = where.rsplit(':', 1)
        seen[(name, int(k))] = out
        return out

    atf.parse_atf_line = recording
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            for f in sorted(ATF_DIR.glob('*.atf')):
                A.parse_atf(read(f.name), name=f.name)
    finally:
        atf.parse_atf_line = orig
    return seen


# (file, line number, the raw line as it stands in the file, the tokens verified by reading it)
HAND_VERIFIED = [
    # `{KUR}` determinative lower-cased, `[MA{KI}]` restored across the determinative
    ('Esar0032.atf', 33, "1'.\ta-na {KUR}ELAM.[MA{KI}]",
     'a^ na {kur}^ ELAM MA:R {ki}:R'),
    # personal-name determinative {m}, `--` joins of a logographic name, `#` damage, {+nu} complement -> {nu}, ʾ
    ('afo.atf', 62, "11'.\tIM# {m}{d}60--DIN#-su--E gi#-nu-u₂ {m}{d}60--ŠEŠ--MU{+nu} A {m}ŠEŠ-ʾ-u₂-tu₂ qat₃ "
                    "{m}ta-ni₃-tu₂--{d}60",
     'IM^:D {m}^ {d} 60 DIN:D su E gi^:D nu u2 {m}^ {d} 60 ŠEŠ MU {nu} A^ {m}^ ŠEŠ ʾ u2 tu2 qat3^ {m}^ ta ni3 '
     'tu2 {d} 60'),
    # restoration spanning words and closing inside a logogram, half brackets, ḫ -> h, šá -> ša2,
    # the footnote mark ^3^ dropped (not the index of `a`)
    ('TPIII0012.atf', 22, "3'.\t[{m}tu-ta-am-mu LUGAL {KUR}un-qi ina a-de-e DINGIR.MEŠ GAL].MEŠ iḫ-ṭi ⸢i⸣-šiṭ "
                          "nap-šá-ti-šú ger-⸢ru⸣-a^3^",
     '{m}^:R tu:R ta:R am:R mu:R LUGAL^:R {kur}^:R un:R qi:R ina^:R a^:R de:R e:R DINGIR^:R MEŠ:R GAL^:R MEŠ '
     'ih^ ṭi i^:D šiṭ nap^ ša2 ti šu2 ger^ ru:D a'),
    # collations `*` and `?` only stripped; `[...]` one unknown-length gap
    ('TPIII0012.atf', 38, "6'.\t[...] {URU}ki-na-li-a URU MAN-ti-šú* ⸢ak*⸣-šud* UN.MEŠ a-di mar-ši-ti-šú-nu^6^",
     '[GAPN]^:M {uru}^ ki na li a URU^ MAN^ ti šu2 ak^:D šud UN^ MEŠ a^ di mar^ ši ti šu2 nu'),
    # lexical list (ORACC text without #atf: lang, so Sumerian): only the %a column; x#-[x-x] all lost
    ('5-fm-erimh-p.atf', 94, '27. GIR₂ ku₂-e# = %a x#-[x-x]',
     '[GAP]^:M [GAP]:M [GAP]:M'),
    # erasure << >>: the erased signs and their divider give nothing; `:` dividers
    ('cm_31_139.atf', 43, '9. IM.DUGUD : as-suk-ku : IM : ṭi-id : <<ṭi-id :>> DUGUD : kab-tu₂',
     'IM^ DUGUD as^ suk ku IM^ ṭi^ id DUGUD^ kab^ tu2'),
    # erased numbers, a corrected number 30!(20)
    ('bb_2_83.atf', 24, "5'. ina GIR₂.TAB ša₂ DIB <<27 KUR>> 30!(20) MUL₂.MUL₂ ŠU₂",
     'ina^ GIR2^ TAB ša2^ DIB^ 30^ MUL2^ MUL2 ŠU2^'),
    # numbers N(UNIT) keep their unit, lower-cased; a stray `/` is no sign
    ('UF_10_16.atf', 9, '1. 2(BARIG)  3(BAN₂) ZI₃ US₂ / a-na GEŠBUN',
     '2(barig)^ 3(ban2)^ ZI3^ US2^ a^ na GEŠBUN^'),
    ('bb_2_96.atf', 24, '6. ŠE.NUMUN-šu₂# 3(BARIG) PI 4 1/2 SILA₃',
     'ŠE^ NUMUN šu2:D 3(barig)^ PI^ 4^ 1/2^ SILA3^'),
    # %s shifts to Sumerian (its <gud> supplied and gud#!(GA) dropped with it), %sb back to Akkadian, whose
    # only words are erased; ?# on a phonetic complement is damage
    ('bb.atf', 68, '2. NIG₂.NA {šim}LI ta-sar#-raq KAŠ SAG# [BAL]{+qi₂?#} EN₂ %s gud#!(GA) gal <gud> mah u₂ ki '
                   '<us₂> kug-ga %sb <<UŠ KU>>',
     'NIG2^ NA {šim}^ LI ta^ sar:D raq KAŠ^ SAG^:D BAL^:R {qi2}:D EN2^'),
    # a Sumerian year name in an Old Babylonian text: nothing; the line number has a typographic prime ’
    ('BagM_27_217.atf', 14, '1’. %sux [mu ma-da] e#-mu-ut-ba#-lum', ''),
    ('UF_10_16.atf', 34, '4. %sux mu ri-im-{d}a-nu-um lugal-e', ''),
    # a bilingual (#atf: lang sux): the Sumerian line gives nothing, its `==` Akkadian line is read
    ('bb_2_6.atf', 16, '1. dim₃#-me-er# [...]', ''),
    ('bb_2_6.atf', 19, '== %sb DINGIR-MEŠ GAL#-MEŠ# [...]',
     'DINGIR^ MEŠ GAL^:D MEŠ:D [GAPN]^:M'),
    # MIN<( )>: the signs a ditto stands for, supplied by the editor (restored), MIN itself preserved
    ('bb_2_6.atf', 100, '== %sb MIN<(GU₄.GAL)> MIN<(GU₄.MAH)> ša₂ meš-re-e#-ti pu-ug-gu-lu zu-mur-šu₂ šuk-lu-lu',
     'MIN^ GU4:R GAL:R MIN^ GU4:R MAH:R ša2^ meš^ re e:D ti pu^ ug gu lu zu^ mur šu2 šuk^ lu lu'),
    # an Akkadian gloss {{%a ...}} in a Sumerian lexical entry; the shift ends with the gloss
    ('P229574.atf', 13, '1.\t{{%a ⸢ka⸣-ba-tum}} %s ur₅',
     'ka^:D ba tum'),
    # a score: the normalized composite line (%n) gives no sign, the manuscript's line does
    ('cmawro-01-01.atf', 48, '1.5′.\t%n imḫur-[ašr]ā tarmuš tasâk-ma ', ''),
    ('cmawro-01-01.atf', 51, 'A₁_obv_i_5′:\t[{ú}]⸢im-ḫu-ur⸣-[áš-r]a {ú}ta-ar-m[u-uš %n tasâk-ma]',
     '{u2}^:R im:D hu:D ur:D aš2:R ra:D {u2}^ ta ar mu:D uš:R'),
    # a multi-sign phonetic complement {+u₂-ti}: one {..} token per sign, as in the ORACC JSON
    ('afo.atf', 68, "13'.\tGIG-šu₂ u MUD EN{+u₂-ti}-šu₂ SAR-ma ina UNUG{ki} u {e₂}re-eš u₂-kin MUD {d}60 u U.MU.UN",
     'GIG^ šu2 u^ MUD^ EN^ {u2} {ti} šu2 SAR^ ma ina^ UNUG^ {ki} u^ {e2}^ re eš u2^ kin MUD^ {d}^ 60 u^ U^ MU UN'),
    # each lost sign x one [GAP], each its own word
    ('anzu.atf', 12, '54.   an-za-a-ma ta-ta-mar [x x x]',
     'an^ za a ma ta^ ta mar [GAP]^:M [GAP]^:M [GAP]^:M'),
]


@pytest.mark.parametrize('name, k, raw, spec', HAND_VERIFIED, ids=[f'{n}:{k}' for n, k, _, _ in HAND_VERIFIED])
def test_hand_verified_lines(lines, name, k, raw, spec):
    assert read(name).splitlines()[k - 1].lstrip('\ufeff') == raw  # the line this case was verified on
    signs = lines[(name, k)]
    assert got(signs) == expect(spec)
    for t, f in signs:  # the sign bit: a real sign, not a gap
        assert bool(f & FLAG_SIGN) == (t not in (GAP, GAPN))


def test_ascii_atf_reads_as_unicode(lines):
    # afo.atf line 62 typed in ASCII-ATF (sz = š, digits for subscripts, {1} the personal-name marker,
    # ' the aleph): the same tokens as the Unicode edition
    ascii_line = ("IM# {1}{d}60--DIN#-su--E gi#-nu-u2 {1}{d}60--SZESZ--MU{+nu} A {1}SZESZ-'-u2-tu2 qat3 "
                  "{1}ta-ni3-tu2--{d}60")
    assert A.parse_atf_line(ascii_line) == lines[('afo.atf', 62)]
    # s, t, h, of ASCII-ATF on a real line, TPIII0012.atf 3' (ḫ is written h in this data)
    assert A.parse_atf_line("ih,-t,i nap-sza2-ti-szu2 [{KUR}un-qi]") == A.parse_atf_line("iḫ-ṭi nap-šá-ti-šú [{KUR}un-qi]")
    assert A.normalize_sign('s,e') == 'ṣe' == A.normalize_sign('ṣe')


def test_state_lines_rulings_comments_and_links():
    # erimh P346083 opens: 1. erim huš# = %a a-na-an#-[tu] / # fierce army = battle / >> A Seg.1, 1 /
    # 2. inbir = %a ip-pi#-[ru] / 3. zag nu-sa₂-a = %a a-dam-[mu-u] / $single ruling / 4. sil₂-sil₂ = %a kit-[ru-ṣu]:
    # the English comment, the link and the ruling give nothing
    d = next(d for d in A.parse_atf(read('5-fm-erimh-p.atf')) if d['id'] == 'P346083')
    assert got(d['signs'][:14]) == expect('a^ na an:D tu:R ip^ pi:D ru:R a^ dam mu:R u:R kit^ ru:R ṣu:R')
    # Esar0032: `@column 1'` / `$ (Lacuna)` / `1'. [...] 4 ME [...] x [...] šá KUR-i`: the lacuna and the
    # line's [...] are one unknown-length gap (a word start, as the line's is)
    d = A.parse_atf(read('Esar0032.atf'))[0]
    assert got(d['signs'][:9]) == expect('[GAPN]^:M 4^ ME^ [GAPN]^:M [GAP]^:M [GAPN]^:M ša2^ KUR^ i')


def test_lemmatisation_and_translation_lines_give_nothing():
    # Senn2002: one transliteration line, its #lem: line and an @translation block ("Property of
    # Tašmētu-šarrat, palace woman of Sennacherib, king of Assyria."): the text is that line alone
    (d,) = A.parse_atf(read('Senn2002.atf'))
    assert d['id'] == 'Q004089'
    assert got(d['signs']) == expect('ša2^ {f}^ {d} taš me tum šar rat MUNUS^ E2 GAL ša2^ {m}^ {d} 30 PAP MEŠ SU '
                                     'MAN^ KUR^ aš^ šur')


# ----------------------------------------------------------------------------- every file

def _without(text, pattern_lines):
    """The ATF text without the translation blocks (@translation to @end translation or the next text)
    and without the lines matching pattern_lines."""
    out, skip = [], False
    for line in text.splitlines():
        s = line.strip().lstrip('\ufeff')
        if s.startswith('&'):
            skip = False
        if s.startswith('@translation'):
            skip = True
        if not skip and not re.match(pattern_lines, s):
            out.append(line)
        if s.startswith('@end translation'):
            skip = False
    return '\n'.join(out)


@pytest.fixture(scope='module')
def corpus():
    """{file: (text ids of its & lines, documents, what the reader printed to stderr)}."""
    out = {}
    for f in sorted(ATF_DIR.glob('*.atf')):
        text = read(f.name)
        ids = [s[1:].split('=')[0].strip() for s in (l.strip().lstrip('\ufeff') for l in text.splitlines())
               if s.startswith('&')]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            docs = A.parse_atf(text, name=f.name)
        out[f.name] = (ids, docs, err.getvalue())
    return out


# Texts with no Akkadian sign, which the project does not keep (as the ORACC JSON path drops them):
NOT_AKKADIAN = {
    'Q000260',  # 3-ob-buex-q: an OB Ura composite made of @include lines only
    'Q000040',  # 3-ob-ura2-q-l-t: OB Ura, a Sumerian list (ORACC's default language)
    'P244115',  # MEE15_54: an Ebla list, Sumerian
    'P382580',  # K_04145F: Aa, its Akkadian column is `%a [...]` on every line
    'P388210', 'P373915', 'P385904', 'P349938',  # Erimhuš fragments whose Akkadian column is all `[...]`
}


def test_every_file_every_text(corpus):
    assert len(corpus) == 32
    ids = [i for got_ids, _, _ in corpus.values() for i in got_ids]
    docs = [d for _, ds, _ in corpus.values() for d in ds]
    assert len(ids) == len(set(ids)) == 101
    assert {d['id'] for d in docs} == set(ids) - NOT_AKKADIAN and len(docs) == 93
    for name, (_, ds, err) in corpus.items():
        assert err == '', name  # no malformed word, no line of unknown form
        for d in ds:
            assert d['words'] == sum(1 for _, f in d['signs'] if f & FLAG_WORD_START)
            assert any(f & FLAG_SIGN for _, f in d['signs'])


def test_tokens_are_clean_signs(corpus):
    for name, (_, ds, _) in corpus.items():
        for d in ds:
            for t, f in d['signs']:
                if t in (GAP, GAPN):
                    assert f & FLAG_STATE == FLAG_MISSING and not f & FLAG_SIGN, (name, t)
                    continue
                assert f & FLAG_SIGN and t != '[UNK]', (name, t)
                assert not re.search(r'[\s\[\]⸢⸣˹˺<>#?!*%=&^"~$;:,]', t), (name, d['id'], t)
                assert re.fullmatch(r'\{\+?[^{}]+\}|\|[^|]+\||[^{}|()]+(\([^()]+\))?', t), (name, d['id'], t)
                assert '/' not in t or re.fullmatch(r'\d+/\d+', t), (name, t)


def test_translations_and_lemmatisation_never_enter_the_data(corpus):
    english = {'the', 'and', 'of', 'his', 'king', 'gods', 'will', 'you', 'which', 'they'}
    seen = set()
    for name, (_, ds, _) in corpus.items():
        text = read(name)
        # the same documents with every translation block, #lem:/#tr/#note line and comment removed
        with contextlib.redirect_stderr(io.StringIO()):
            assert A.parse_atf(_without(text, r'#(?!atf:|project:)'), name=name) == ds, name
        block = text[text.find('@translation'):] if '@translation' in text else ''
        seen |= english & {w.lower() for w in re.findall(r'[A-Za-z]+', block)}
        toks = {t.lower() for d in ds for t, _ in d['signs']}
        assert not english & toks, (name, english & toks)
    assert seen == english  # the translations do hold these words


_LINE = re.compile(r"^[0-9A-Za-z'′´’+\-.]*\d[0-9A-Za-z'′´’+\-.]*?\.\s+(.*)$")
_X = re.compile(r'(?:^|(?<=[\s\-.\[\]⸢⸣:}]))[xX](?=[#?!*]*(?:$|[\s\-.\[\]⸢⸣:]))')


def _words_inside_brackets(body):
    """[(word, all its letters inside [ ], none inside, damage marked)] of a line, read without the
    reader: a character-level walk over `[` and `]`."""
    out, inside = [], False
    for word in body.split():
        if re.fullmatch(r'&\d*', word):  # a column separator
            continue
        flags = []
        for c in word:
            if c in '[]':
                inside = c == '['
            elif c.isalnum():
                flags.append(inside)
        if flags:
            out.append((word, all(flags), not any(flags), bool(re.search(r'[#⸢⸣˹˺]', word))))
        elif '...' in word:  # a gap of unknown length: missing, like a lost sign
            out.append((word, True, False, False))
    return out


def test_restored_and_lost_signs_on_plain_akkadian_lines(lines, corpus):
    # Numbered lines of Akkadian texts without language shift, gloss, supplied or erased signs, ditto or
    # compound (<, (, |, %, {{), checked against a reading of the raw line that does not use the reader:
    # a word whose letters are all inside [ ] gives restored signs or gaps only; a word with none
    # inside and no damage mark gives preserved signs (gaps for x) only; a line has as many [GAP] as x.
    restored_words = preserved_words = counted = 0
    for name in corpus:
        text = read(name)
        if not re.search(r'#atf:\s*lang\s+akk', text):
            continue
        for k, line in enumerate(text.splitlines(), 1):
            m = _LINE.match(line.strip())
            if not m or (name, k) not in lines or re.search(r'[%<(|]|\{\{', m.group(1)):
                continue
            body, signs = m.group(1).strip(), lines[(name, k)]
            assert sum(t == GAP for t, _ in signs) == len(_X.findall(body)), (name, k, body)
            counted += len(_X.findall(body))
            words = _words_inside_brackets(body)
            groups = []  # the tokens of each word
            for t, f in signs:
                if f & FLAG_WORD_START or not groups:
                    groups.append([])
                groups[-1].append((t, f & FLAG_STATE))
            assert len(groups) == len(words), (name, k, body)
            for (word, lost, kept, damaged), g in zip(words, groups):
                if lost:
                    restored_words += 1
                    assert all(st in (2, 3) for _, st in g), (name, k, word, g)
                elif kept and not damaged:
                    preserved_words += 1
                    assert all(st == (3 if t in (GAP, GAPN) else 0) for t, st in g), (name, k, word, g)
    assert restored_words > 300 and preserved_words > 1500 and counted > 200  # the checks ran on real lines


def test_dataset_from_all_files(tmp_path, capsys):
    meta = A.main([f'--input={ATF_DIR}', f'--out={tmp_path / "atf"}'])
    assert meta['stats']['texts'] == 93 and meta['source'] == 'input'
    for split in ('train', 'val', 'test'):
        flags = np.fromfile(tmp_path / 'atf' / f'{split}.flags.bin', dtype=np.uint8)
        targets = is_target(flags)
        assert targets.any() and not (targets & ((flags & FLAG_STATE) >= 2)).any()  # restored/missing: never
    assert 'skipping' in capsys.readouterr().out  # the four files without Akkadian text are named
