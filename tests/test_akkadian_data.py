"""Akkadian data layer (prepare/akkadian.py): parsing of every damage marker (ATF, ORACC JSON, word
tables, the RINAP pickle layout), the restricted unpickler, the one normalization, document splits,
targets. No network, no registry: fixtures under tests/fixtures/akkadian/ and data built here."""
import collections
import json
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from atf import (FLAG_DAMAGED, FLAG_MISSING, FLAG_OK, FLAG_RESTORED, FLAG_SIGN, FLAG_WORD_START, GAP, GAPN, is_target,
                 normalize_sign, parse_atf, parse_atf_line, parse_restoration_input)
from prepare import akkadian as A

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
OK, DMG, RES, MIS = FLAG_OK, FLAG_DAMAGED, FLAG_RESTORED, FLAG_MISSING


def state(f):
    return f & 3


def toks(signs):
    return [t for t, _ in signs]


def states(signs):
    return [state(f) for _, f in signs]


def starts(signs):
    return [bool(f & FLAG_WORD_START) for _, f in signs]


# ----------------------------------------------------------------------------- normalization

@pytest.mark.parametrize('raw, norm', [
    ('ša₂', 'ša2'), ('sza2', 'ša2'), ('šá', 'ša2'), ('ša₁', 'ša'), ('ù', 'u3'), ('lí', 'li2'), ('šám', 'šam2'),
    ('s,a', 'ṣa'), ('t,e', 'ṭe'), ('ḫu', 'hu'), ('h,u', 'hu'), ('re\'u', 'reʾu'),
    ('Lugal', 'LUGAL'), ('lugal', 'lugal'), ('KU₃', 'KU3'), ('DINGIR', 'DINGIR'), ('GANₓ', 'GANₓ'), ('šuₓ', 'šuₓ'),
    ('{D}', '{d}'), ('{KI}', '{ki}'), ('{LU₂}', '{lu2}'), ('{1}', '{m}'), ('{diš}', '{m}'), ('{MUNUS}', '{f}'),
    ('{+ni}', '{ni}'), ('3(diš)', '3'), ('1(u)', '1(u)'), ('2(geš₂)', '2(geš2)'), ('1/2', '1/2'), ('30', '30'),
    ('ba(BA)', 'ba'), ('ku!(LU)', 'ku'), ('ka#', 'ka'), ('⸢ka⸣', 'ka'), ('[ka]', 'ka'), ('lu?', 'lu'), ('iq*', 'iq'),
    ('<ina>', 'ina'), ('|A.AN|', '|A.AN|'), ('x', 'x'), ('X', 'x'), ('...', '...'), ('ni/', 'ni'), ('#', ''),
])
def test_normalize_sign(raw, norm):
    assert normalize_sign(raw) == norm
    assert normalize_sign(norm) == norm  # idempotent: normalized data can be normalized again


# ----------------------------------------------------------------------------- ATF

def test_atf_line_every_damage_marker():
    # (line, tokens, states)
    cases = [
        ('a-na LUGAL', ['a', 'na', 'LUGAL'], [OK, OK, OK]),
        ('ka# LUGAL#', ['ka', 'LUGAL'], [DMG, DMG]),                     # `#` damaged
        ('⸢ka⸣ ˹ia˺', ['ka', 'ia'], [DMG, DMG]),                          # half brackets damaged
        ('[a-na LUGAL] EN', ['a', 'na', 'LUGAL', 'EN'], [RES, RES, RES, OK]),  # [ ] spanning words: restored
        ('[k]a', ['ka'], [DMG]),                                         # partly lost: damaged
        ('x x-ia', [GAP, GAP, 'ia'], [MIS, MIS, OK]),                    # x: one lost sign each
        ('[x x] x#', [GAP, GAP, GAP], [MIS, MIS, MIS]),                  # x is missing whatever its brackets
        ('a ... b', ['a', GAPN, 'b'], [OK, MIS, OK]),                    # ... unknown length
        ('a [...] b', ['a', GAPN, 'b'], [OK, MIS, OK]),
        ('a [...] ... b', ['a', GAPN, 'b'], [OK, MIS, OK]),              # adjacent unknown gaps are one
        ('<ina> <<ša>> lu', ['ina', 'lu'], [RES, OK]),                   # supplied restored, excised dropped
        ('lu? ši!-pir* ku!(LU)', ['lu', 'ši', 'pir', 'ku'], [OK] * 4),   # ? ! * only stripped
        ('[{d}]UTU ⸢{d}⸣30', ['{d}', 'UTU', '{d}', '30'], [RES, OK, DMG, OK]),
        ('URU{ki} {1}aš-šur KUR.MEŠ', ['URU', '{ki}', '{m}', 'aš', 'šur', 'KUR', 'MEŠ'], [OK] * 7),
        ('a : b ($ erasure $) c', ['a', 'b', 'c'], [OK] * 3),            # divider, inline comment
        ('a %sux b c %sb d', ['a', 'd'], [OK] * 2),                      # only Akkadian words, as ORACC JSON
    ]
    for line, t, s in cases:
        got = parse_atf_line(line)
        assert toks(got) == t, line
        assert states(got) == s, line
        for tok, f in got:  # the sign bit says real sign vs gap
            assert bool(f & FLAG_SIGN) == (tok not in (GAP, GAPN)), line


def test_atf_word_starts():
    got = parse_atf_line('{d}AMAR.UTU [x x]-ia ... be-lí')
    assert toks(got) == ['{d}', 'AMAR', 'UTU', GAP, GAP, 'ia', GAPN, 'be', 'li2']
    assert starts(got) == [True, False, False, True, True, False, True, True, False]  # `x]-ia` is one word


def test_parse_atf_documents():
    docs = parse_atf((FIX / 'sample.atf').read_text(encoding='utf-8'))
    assert [d['id'] for d in docs] == ['P100001', 'P100002']
    d1, d2 = docs
    assert 'zz' not in toks(d1['signs'])                 # `#` comment lines skipped
    assert 'king' not in ' '.join(toks(d1['signs']))     # translations skipped
    assert toks(d1['signs'])[:6] == ['a', 'na', 'LUGAL', 'be', 'li2', 'ia']
    # line 4: [a-na] ⸢LUGAL⸣ [be]-li₂-ia
    i = 22
    assert d1['signs'][i:i + 6] == [('a', RES | 4 | 8), ('na', RES | 8), ('LUGAL', DMG | 4 | 8),
                                    ('be', RES | 4 | 8), ('li2', OK | 8), ('ia', OK | 8)]
    # reverse 1': [x x] ša₂ x# [...] ši-pir {d}AMAR.UTU ; 2': ... (two unknown gaps in a row collapse)
    rev = toks(d1['signs'])[28:]
    assert rev[:9] == [GAP, GAP, 'ša2', GAP, GAPN, 'ši', 'pir', '{d}', 'AMAR']
    assert rev[10] == GAPN and rev[11:14] == ['u2', 'ṣa', 'a']
    assert toks(d1['signs'])[-1] == GAPN                  # `$ rest of reverse broken`; the ruling gave nothing
    assert toks(d1['signs']).count(GAPN) == 3
    assert d1['words'] == sum(starts(d1['signs']))
    assert toks(d2['signs']) == ['3', 'GUN', '1(u)', 'ma', 'na', 'KU3', 'BABBAR', '{d}', 'UTU', 'li', 'ri', 'iq',
                                 '|A.AN|', 'ku', GAPN]


# ----------------------------------------------------------------------------- ORACC JSON

def _zip_fixture(tmp_path):
    path = tmp_path / 'test.zip'
    with zipfile.ZipFile(path, 'w') as z:
        for f in sorted((FIX / 'corpusjson').glob('*.json')):
            z.write(f, f'test/sub/corpusjson/{f.name}')
        z.writestr('test/sub/catalogue.json', '{"members": {}}')
    return path


def test_oracc_zip(tmp_path):
    docs = A.parse_oracc_zip(_zip_fixture(tmp_path))
    assert [d['id'] for d in docs] == ['test/sub/P000001']  # P000002 is Sumerian only: dropped
    s = docs[0]['signs']
    assert toks(s) == ['a', 'na', 'LUGAL', 'ARAD', 'ka', '{m}', 'aš', 'šur', 'ba', 'ni', 'URU', 'ŠE', '{ki}',
                       GAP, GAP, 'ia', GAPN, '{d}', 'AMAR', 'UTU', 'ša2', 'ba', GAPN]
    assert 'lugal' not in toks(s)                            # f.lang sux dropped
    assert states(s) == [RES, RES, OK, RES, DMG, OK, OK, OK, OK, DMG, OK, OK, OK,
                         MIS, MIS, OK, MIS, OK, OK, OK, OK, OK, MIS]
    assert docs[0]['words'] == 10                            # 11 Akkadian l nodes, the `:` divider has no sign
    assert s[-1] == (GAPN, FLAG_MISSING)                     # `$` line: no word start


def test_oracc_json_equals_atf_of_same_text():
    """The JSON walker and the ATF reader give the same tokens and flags for the same text."""
    doc = A.parse_corpusjson(json.loads((FIX / 'corpusjson' / 'P000001.json').read_text(encoding='utf-8')))
    atf = ("&P000001\n1. [a-na] LUGAL [ARAD]-⸢ka⸣ {1}aš-šur-ba-ni#\n"
           "2. URU.ŠE{ki} [x]-x-ia [...] {d}AMAR.UTU ša₂ ba(BA) :\n$ rest of obverse missing\n")
    assert parse_atf(atf)[0]['signs'] == doc['signs']


def test_one_sign_definition_same_text_in_both_forms():
    """tests/fixtures/akkadian/both_forms/P000003: one text written as ORACC JSON (the layout ORACC serves: mods,
    statusStart + o spans, alternation and correction groups, a compound lemma read twice, n nodes, nonx and dollar
    d nodes) and as its ATF. Both readers give exactly these tokens and flags, case by case."""
    both = FIX / 'both_forms'
    doc = A.parse_corpusjson(json.loads((both / 'P000003.json').read_text(encoding='utf-8')))
    from_atf = parse_atf((both / 'P000003.atf').read_text(encoding='utf-8'))
    assert [d['id'] for d in from_atf] == ['P000003'] and doc['id'] == 'test/sub/P000003'
    W = FLAG_WORD_START
    expected = [
        # 1. a-na\t LUGAL ERIM-MEŠ\m {lu₂~v}A—šip-⸢ri⸣ TA@v: features and allographs dropped, @v kept; mār šipri once
        ('a', OK | W), ('na', OK), ('LUGAL', OK | W), ('ERIM', OK | W), ('MEŠ', OK),
        ('{lu2}', OK | W), ('A', OK), ('šip', OK), ('ri', DMG), ('TA@v', OK | W),
        # 2. <a-[li]-⸢šu⸣> {<<d}LAMMA>>.MEŠ ⸢ar/ri⸣-mi a!(e)-de-e: supplied, excised, one alternative sign, the reading
        ('a', RES | W), ('li', RES), ('šu', RES), ('MEŠ', OK | W), ('ar/ri', DMG | W), ('mi', OK),
        ('a', OK | W), ('de', OK), ('e', OK),
        # 3. 01 1/2 3(BAN₂) {1}aš-šur {d}AMAR.UTU URU{ki}; then `$ single ruling`: nothing
        ('1', OK | W), ('1/2', OK | W), ('3(ban2)', OK | W), ('{m}', OK | W), ('aš', OK), ('šur', OK),
        ('{d}', OK | W), ('AMAR', OK), ('UTU', OK), ('URU', OK | W), ('{ki}', OK),
        # 4. liš-<$x$>-kun [x] x-ia ... ka#; then `$ (lacuna)` (JSON: state other): one gap
        ('liš', OK | W), (GAP, MIS), ('kun', OK), (GAP, MIS | W), (GAP, MIS | W), ('ia', OK), (GAPN, MIS | W),
        ('ka', DMG | W), (GAPN, MIS),
        # 1'. UD.($blank$).KAM ($traces$) {(m)}a-šur %sux lugal; then `$ rest missing`
        ('UD', OK | W), ('KAM', OK), (GAPN, MIS | W), ('{m}', OK | W), ('a', OK), ('šur', OK), (GAPN, MIS),
    ]
    S = FLAG_SIGN
    expected = [(t, f | (S if t not in (GAP, GAPN) else 0)) for t, f in expected]
    assert doc['signs'] == expected
    assert from_atf[0]['signs'] == expected
    assert doc['words'] == from_atf[0]['words'] == 23
    # the one reading the forms cannot share: ORACC JSON keeps no words of a loose `$` line (state `other`), so
    # `$ (remainder uninscribed)` is a gap there and nothing in its ATF (docs/akkadian.md: what a `$` line becomes)
    word = lambda v: {'node': 'l', 'f': {'lang': 'akk', 'gdl': [{'v': v, 'id': v}]}}
    other = {'node': 'd', 'type': 'nonx', 'strict': '0', 'state': 'other'}
    assert A.parse_corpusjson({'cdl': [word('a'), other, word('b')]})['signs'] == [('a', S | W), (GAPN, MIS), ('b', S | W)]
    assert parse_atf('&X\n1. a\n$ (remainder uninscribed)\n2. b\n')[0]['signs'] == [('a', S | W), ('b', S | W)]


@pytest.mark.parametrize('line, gap', [
    ('rest of obverse broken', True), ('(lacuna)', True), ('3 lines traces', True), ('(unplaced)', True),
    ('continued in text no. 5', True), ('single ruling', False), ('(ruling?)', False), ('reverse blank', False),
    ('(remainder uninscribed)', False), ('seal impression', False), ('ruling, rest broken', True),
    ('other', True), ('missing', True), ('ruling', False), ('blank', False), ('other impression', False)])
def test_dollar_line_is_gap(line, gap):
    """A `$` line (ATF text, or ORACC JSON `state scope`): a gap unless it names only what loses no text."""
    from atf import dollar_line_is_gap
    assert dollar_line_is_gap(line) is gap


# ----------------------------------------------------------------------------- word tables

def test_word_table_csv_and_jsonl():
    csv_docs = A.parse_word_table(FIX / 'words.csv')
    assert A.parse_word_table(FIX / 'words.jsonl') == csv_docs
    by = {d['id']: d for d in csv_docs}
    assert set(by) == {'F1', 'F2'}                            # F3 holds only a gap: dropped
    f1 = by['F1']['signs']
    # sorted by (line_num, word_idx) with 2 < 10; brackets across rows; value_raw kept where damaged
    assert toks(f1) == ['a', 'na', 'be', 'li2', 'ia', 'a', 'na', 'LUGAL', GAP, 'ša2']
    assert states(f1) == [OK, OK, OK, OK, OK, RES, RES, RES, MIS, DMG]
    assert by['F1']['source'] == 'oracc' and by['F2']['source'] == 'ebl'
    assert by['F1']['words'] == 6


# ----------------------------------------------------------------------------- restoration input

def test_restoration_input_example():
    got = parse_restoration_input('a-na [x x] be-lí-ia qí-bí-ma')
    assert toks(got) == ['a', 'na', GAP, GAP, 'be', 'li2', 'ia', 'qi2', 'bi2', 'ma']
    assert states(got) == [OK, OK, MIS, MIS, OK, OK, OK, OK, OK, OK]
    assert toks(parse_restoration_input('a-na [...] ma')) == ['a', 'na', GAPN, 'ma']
    assert toks(parse_restoration_input('a-na ... ma')) == ['a', 'na', GAPN, 'ma']


def test_restoration_input_matches_data_normalization():
    # every line of the ATF fixture, typed as restoration input, gives the tokens of the data
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    for line in text.splitlines():
        if line[:1].isdigit():
            body = line.split('. ', 1)[1]
            as_data = parse_atf(f'&X\n1. {body}\n')[0]['signs']
            assert parse_restoration_input(body) == as_data, line
    # spellings of the same signs in unicode ATF, ASCII ATF and accents meet
    a = parse_restoration_input('ša₂-a-šu₂ be-li₂-ia {LU₂}ERIN₂.MEŠ ṣa-ab-ta')
    b = parse_restoration_input('sza2-a-szu2 be-li2-ia {lu2}ERIN2.MESZ s,a-ab-ta')
    c = parse_restoration_input('šá-a-šú be-lí-ia {lú}ERÍN.MEŠ ṣa-ab-ta')
    assert toks(a) == toks(b) == toks(c)
    # and the RINAP pickle conventions ({d}-, split signs, 'KUR.') land on the same tokens
    line = [('x', '{m}-'), ('x', '{d}-'), ('x', '30-'), ('x', 'PAP.'), ('x', 'MEŠ(0)-'), ('x', 'MEŠ(1)-'),
            ('x', 'SU'), ('x', '{URU}-'), ('x', 'ni-'), ('x', 'nu-'), ('x', 'a')]
    assert parse_atf_line(A._rinap_line_to_atf(line)) == parse_restoration_input('{1}{d}30-PAP.MEŠ-SU {uru}ni-nu-a')


# ----------------------------------------------------------------------------- restricted unpickler

class _Thing:
    pass


@pytest.mark.parametrize('payload', [
    pickle.dumps(len),                                  # a builtin function
    pickle.dumps(collections.OrderedDict(a=1)),          # a class (REDUCE)
    pickle.dumps({1, 2}, protocol=2),                    # even set is a global before protocol 4
    pickle.dumps(_Thing()),                              # a user class
    pickle.dumps([1, ('a', Path('x'))], protocol=5),     # a global deep inside plain data
    b"cos\nsystem\n(S'echo pwned'\ntR.",                 # the classic protocol-0 os.system payload
    pickle.dumps(eval, protocol=4),                      # STACK_GLOBAL builtins.eval
])
def test_restricted_unpickler_refuses_any_global(payload):
    with pytest.raises(pickle.UnpicklingError, match='refused global'):
        A.restricted_loads(payload)


def test_restricted_unpickler_loads_plain_data():
    data = (
        {'a': 1}, [1.5, None, True], {'x', 'y'}, ('t', 2), 'ü' * 3, b'bytes', 10 ** 30,
    )
    for proto in (4, 5):
        assert A.restricted_loads(pickle.dumps(data, protocol=proto)) == data


def _fake_hmm(lines):
    return ({}, {}, {}, {}, [], 0, {}, {}, 0.7, 0.2, lines)


def test_rinap_pickle_lines(tmp_path):
    lines = [
        [('𒀭', '{d}-'), ('𒌓', 'UTU'), ('𒍑', 'u₂-'), ('𒊭', 'ša₂-'), ('x', 'x-'), ('𒅀', 'ia')],
        [('𒆳', 'KUR.'), ('𒈨', 'MEŠ(0)'), ('𒌍', 'MEŠ(1)'), ('𒀀', '{ID₂}(0)-'), ('𒇉', '{ID₂}(1)-'), ('𒋼', 'te')],
        [('𒌋', 'man(0)-'), ('𒌋', 'man(1)-'), ('𒉡', 'nu'), ('x', 'x'), ('𒁹', '1'), ('𒁹', '1/2'), ('𒉌', 'ni/')],
    ]
    raw = pickle.dumps(_fake_hmm(lines), protocol=4)
    got = A.load_rinap_pickle_lines(raw)
    assert toks(got[0]) == ['{d}', 'UTU', 'u2', 'ša2', GAP, 'ia']
    assert starts(got[0]) == [True, False, True, False, False, False]
    assert toks(got[1]) == ['KUR', 'MEŠ', '{id2}', 'te']              # split signs are one sign
    assert starts(got[1]) == [True, False, True, False]
    assert toks(got[2]) == ['man', 'nu', GAP, '1', '1/2', 'ni']
    assert states(got[2]) == [OK, OK, MIS, OK, OK, OK]
    # the same through a .pkl path and through a wheel holding it
    (tmp_path / 'hmm_model.pkl').write_bytes(raw)
    whl = tmp_path / 'akkadian-1.0.12-py3-none-any.whl'
    with zipfile.ZipFile(whl, 'w') as z:
        z.writestr(A.WHEEL_PICKLE, raw)
    assert A.load_rinap_pickle_lines(tmp_path / 'hmm_model.pkl') == got
    assert A.load_rinap_pickle_lines(whl) == got
    # a pickle of this layout that sneaks in a global is refused
    bad = pickle.dumps(_fake_hmm(lines + [collections.OrderedDict()]), protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        A.load_rinap_pickle_lines(bad)


def test_rinap_documents_blocks_and_duplicates():
    lines = [[(f's{i}', FLAG_SIGN | FLAG_WORD_START)] for i in range(45)]
    lines[10] = list(lines[3])                      # an exact duplicate of line 3
    lines[11] = [(GAP, FLAG_MISSING | FLAG_WORD_START)]   # no readable sign
    docs, info = A.rinap_documents(lines, block=20)
    assert info['duplicate_lines_dropped'] == 1 and info['lines_without_signs_dropped'] == 1
    assert [len(d['signs']) for d in docs] == [20, 20, 3]
    all_toks = [t for d in docs for t in toks(d['signs'])]
    assert len(all_toks) == len(set(all_toks)) == 43     # no line in two documents
    assert toks(docs[0]['signs'])[:4] == ['s0', 's1', 's2', 's3']   # consecutive lines stay together


# ----------------------------------------------------------------------------- splits, vocabulary, targets

def _tag(k):
    return 'zz' + chr(97 + k // 26) + chr(97 + k % 26)  # letters only: digits would be sign indices


def _synthetic_docs(n=40, seed=0):
    rng = random.Random(seed)
    syll = ['a', 'na', 'ša₂', 'LUGAL', 'be', 'li₂', 'ia', '{d}UTU', 'KUR', 'ma', 'ti', 'ku', 'x', '...']
    text = []
    for k in range(n):
        text.append(f'&P{k:06d} = text {k}')
        for ln in range(1, 4):
            words = []
            for _ in range(5):
                w = '-'.join(rng.choice(syll) for _ in range(rng.randint(1, 3)))
                r = rng.random()
                w = f'[{w}]' if r < 0.2 else (w + '#' if r < 0.35 else (f'⸢{w}⸣' if r < 0.45 else w))
                words.append(w)
            text.append(f'{ln}. ' + ' '.join(words) + ' ' + _tag(k))   # one sign found only in this text
    return parse_atf('\n'.join(text))


def test_build_dataset_splits_vocab_targets(tmp_path):
    docs = _synthetic_docs()
    out = tmp_path / 'akk'
    meta = A.build_dataset(docs, out, seed=1337, source='input')
    on_disk = json.loads((out / 'meta.json').read_text())
    assert on_disk['vocab_size'] == meta['vocab_size'] == len(on_disk['vocab'])
    sp = on_disk['splits']
    # split by document: disjoint, complete, 80/10/10, deterministic
    assert set(sp['train']).isdisjoint(sp['val']) and set(sp['train']).isdisjoint(sp['test'])
    assert set(sp['val']).isdisjoint(sp['test'])
    assert sorted(sp['train'] + sp['val'] + sp['test']) == sorted(d['id'] for d in docs)
    assert (len(sp['train']), len(sp['val']), len(sp['test'])) == (32, 4, 4)
    meta2 = A.build_dataset(docs[::-1], tmp_path / 'again', seed=1337, source='input')
    assert meta2['splits'] == on_disk['splits'] and meta2['vocab'] == on_disk['vocab']

    vocab = on_disk['vocab']
    stoi = {t: i for i, t in enumerate(vocab)}
    assert on_disk['gap_id'] == stoi[GAP] and on_disk['gapn_id'] == stoi[GAPN]
    assert on_disk['mask_id'] == stoi['[MASK]'] and on_disk['sep_id'] == stoi['[SEP]']
    # vocabulary from train only: the sign unique to each val/test text is [UNK]
    for k in sp['train']:
        assert _tag(int(k[1:])) in stoi
    for k in sp['val'] + sp['test']:
        assert _tag(int(k[1:])) not in stoi
    assert on_disk['unk_rate']['val'] > 0 and on_disk['split_stats']['val']['unk'] == 4 * 3

    by_id = {d['id']: d for d in docs}
    for split in ('train', 'val', 'test'):
        ids = np.fromfile(out / f'{split}.bin', dtype=np.uint16)
        fl = np.fromfile(out / f'{split}.flags.bin', dtype=np.uint8)
        assert ids.shape == fl.shape
        # the file is the split's documents in order, each behind the separator, flags aligned
        expect_ids, expect_fl = [], []
        for k in sp[split]:
            expect_ids += [stoi['[SEP]']] + [stoi.get(t, stoi['[UNK]']) for t in toks(by_id[k]['signs'])]
            expect_fl += [0] + [f for _, f in by_id[k]['signs']]
        assert ids.tolist() == expect_ids and fl.tolist() == expect_fl
        # restored and missing signs are never targets; targets are real signs; the separator is not one
        tgt = is_target(fl)
        st = fl & 3
        assert not tgt[(st == RES) | (st == MIS)].any()
        assert not tgt[ids == stoi['[SEP]']].any()
        assert not tgt[(ids == stoi[GAP]) | (ids == stoi[GAPN])].any()
        assert tgt[((st == OK) | (st == DMG)) & ((fl & FLAG_SIGN) != 0)].all()
        assert set(ids[st == MIS].tolist()) <= {stoi[GAP], stoi[GAPN]}   # missing signs are gap tokens
        if split == 'train':
            assert (st == RES).any() and (st == MIS).any() and (st == DMG).any()
            assert (ids[st == RES] >= 7).all()   # restored signs keep their value in the context
    assert on_disk['stats']['per_flag']['restored'] > 0 and on_disk['stats']['targets'] == sum(
        int(is_target([f for _, f in d['signs']]).sum()) for d in docs)


def test_is_target_truth_table():
    for f in range(16):
        expect = bool(f & FLAG_SIGN) and (f & 3) in (FLAG_OK, FLAG_DAMAGED)
        assert bool(is_target(np.array([f], np.uint8))[0]) == expect, f


# ----------------------------------------------------------------------------- command line

def test_main_input_end_to_end(tmp_path, capsys):
    z = _zip_fixture(tmp_path)
    paths = [str(FIX / 'sample.atf'), str(FIX / 'words.csv'), str(z)]
    out = tmp_path / 'out'
    A.main(['--input=' + ','.join(paths), f'--out={out}'])
    printed = capsys.readouterr().out
    assert 'source: input' in printed and 'overlap 0' in printed and '[UNK] rate' in printed
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['source'] == 'input' and meta['stats']['texts'] == 5
    assert set(meta['stats']['per_source']) == {'atf:sample', 'oracc', 'ebl', 'test'}
    assert meta['flag_bits']['word_start'] == FLAG_WORD_START
    assert {'normalization', 'licence', 'unk_rate', 'special_ids'} <= set(meta)


@pytest.mark.parametrize('make_input', [
    lambda d: d / 'missing.atf',                                                    # no such path
    lambda d: (d / 'notes.docx').write_text('x') and d / 'notes.docx',             # unknown extension
    lambda d: (d / 'empty.atf').write_text('&P1\n# only comments\n@obverse\n') and d / 'empty.atf',  # empty
])
def test_bad_input_dies_and_writes_nothing(tmp_path, make_input):
    path = make_input(tmp_path)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit):
        A.main([f'--input={path}', f'--out={out}'])
    assert not out.exists() or not any(p.is_file() for p in out.rglob('*'))


# ----------------------------------------------------------------------------- malformed ATF

@pytest.mark.parametrize('line, expect', [
    ('a-na |A.AN be-li2 qi2-bi2-ma', ['a', 'na', '[UNK]', 'be', 'li2', 'qi2', 'bi2', 'ma']),
    ('a-na {d UTU be-li2', ['a', 'na', '[UNK]', 'UTU', 'be', 'li2']),
    ('a-na URU{ki be-li2', ['a', 'na', 'URU', '[UNK]', 'be', 'li2']),   # the sign before `{` is whole
    ('a-na ba(BA be-li2', ['a', 'na', '[UNK]', 'be', 'li2']),           # the sign before `(` is part of it
    ('a-na be-|A.AN qi2-bi2-ma', ['a', 'na', 'be', '[UNK]', 'qi2', 'bi2', 'ma']),
])
def test_unclosed_bracket_ends_at_the_word_and_is_never_a_target(line, expect, capsys):
    got = parse_atf_line(line)
    assert toks(got) == expect
    assert all(' ' not in t for t in toks(got))  # never a sign swallowing the rest of the line
    bad = [f for t, f in got if t == '[UNK]']
    assert len(bad) == 1 and state(bad[0]) == MIS and not is_target(np.array(bad, np.uint8)).any()
    good = [f for t, f in got if t != '[UNK]']
    assert is_target(np.array(good, np.uint8)).all()  # the well-formed words around it are unaffected
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: ') and 'unclosed' in err[0] and line in err[0]


def test_unclosed_brackets_warn_once_per_line_with_file_and_line_number(tmp_path, capsys):
    got = parse_atf_line('|A.AN {d be (x')
    assert toks(got) == ['[UNK]', '[UNK]', 'be', '[UNK]']
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # bracket states inside the malformed word still count: `]` closes the restoration
    got = parse_atf_line('[a-na |A.AN] be')
    assert toks(got) == ['a', 'na', '[UNK]', 'be'] and states(got) == [RES, RES, MIS, OK]
    capsys.readouterr()
    f = tmp_path / 'bad.atf'
    f.write_text('&P1\n1. a-na LUGAL\n2. a-na |A.AN be-li2\n', encoding='utf-8')
    docs = A.load_inputs([str(f)])
    assert toks(docs[0]['signs']) == ['a', 'na', 'LUGAL', 'a', 'na', '[UNK]', 'be', 'li2']
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'{f}:3' in err[0]


def test_well_formed_compounds_and_determinatives_unchanged(capsys):
    assert toks(parse_atf_line('li-ri-iq |A.AN| ku')) == ['li', 'ri', 'iq', '|A.AN|', 'ku']
    assert toks(parse_atf_line('{d}UTU {1}aš-šur URU{ki} ba(BA) 1(u)')) == [
        '{d}', 'UTU', '{m}', 'aš', 'šur', 'URU', '{ki}', 'ba', '1(u)']
    assert capsys.readouterr().err == ''
