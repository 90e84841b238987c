"""prepare/turkish_morph.py: the lexicon-free vowel-harmony suffix stripper and its root-boundary score."""
import json

import pytest

from morphology import realise, segment, turkish_lower
from prepare import turkish_morph as tm
from prepare.turkish_morph import root_boundary_accuracy

# hand-checked segmentations (root first) where the documented algorithm is right
KNOWN = {
    'evlerden': ['ev', 'ler', 'den'],
    'kitaplarımız': ['kitap', 'lar', 'ımız'],
    'gözlükçü': ['gözlük', 'çü'],              # lIk is not stripped under CI (one derivation slot): see below
    'geliyorum': ['gel', 'iyor', 'um'],
    'okullarda': ['okul', 'lar', 'da'],
    'arabaya': ['araba', 'ya'],
    'masada': ['masa', 'da'],
    'yaptık': ['yap', 'tı', 'k'],
    'geldim': ['gel', 'di', 'm'],
    'kitapta': ['kitap', 'ta'],
    'evimizde': ['ev', 'imiz', 'de'],
    'arabasına': ['araba', 'sı', 'na'],
    'kitaplarından': ['kitap', 'lar', 'ı', 'ndan'],
    'gelmesi': ['gel', 'me', 'si'],
    'yaptığı': ['yap', 'tığ', 'ı'],
    'önemlidir': ['önem', 'li', 'dir'],
    'evdekiler': ['ev', 'de', 'ki', 'ler'],
    'okulun': ['okul', 'un'],
    'gözlerinden': ['göz', 'ler', 'i', 'nden'],
    'yolcu': ['yol', 'cu'],
}


@pytest.mark.parametrize('word', sorted(KNOWN))
def test_known_segmentations(word):
    assert segment(word) == KNOWN[word]


def test_pieces_concatenate_to_the_lowercased_word():
    for w in list(KNOWN) + ['İstanbul\'da', 'ISPARTA', 'Ankara\'dakiler', 'çocuğun', 'araba']:
        assert ''.join(segment(w)) == turkish_lower(w)


def test_turkish_lowercasing():
    assert turkish_lower('IŞIK') == 'ışık' and turkish_lower('İZMİR') == 'izmir'
    assert segment('EVLERDEN') == ['ev', 'ler', 'den']
    assert segment('KITAPTA') == ['kıtap', 'ta']  # dotless: I -> ı, as Turkish orthography demands


def test_words_without_suffixes_are_whole():
    for w in ['kitap', 'ev', 'göz', 'okul', 'çocuk', 'bir', 'gibi', 'için']:
        assert segment(w) == [w]
    assert segment('...') == ['...'] and segment('2024') == ['2024']


def test_locative_d_devoices_after_voiceless_consonants():
    # D is t after f s t k ç ş h p, else d; A follows the backness of the last stem vowel
    assert realise('DA', 'kitap') == 'ta' and realise('DA', 'ev') == 'de' and realise('DA', 'masa') == 'da'
    assert realise('DAn', 'ağaç') == 'tan' and realise('DAn', 'göz') == 'den'
    assert segment('ağaçtan') == ['ağaç', 'tan']
    # the wrong allomorph is not accepted: in *kitapda / *evte the tail is no locative; the only strip left is
    # the one-vowel (y)A / (s)I reading of the last letter
    assert segment('kitapda') == ['kitapd', 'a'] and segment('evte') == ['evt', 'e']
    assert segment('ağaçdan') == ['ağaçd', 'an']  # not DAn after ç; (y)An participle instead


def test_i_harmony_and_c():
    assert [realise('(s)I', s) for s in ('kapı', 'ev', 'okul', 'göz')] == ['sı', 'i', 'u', 'ü']
    assert realise('lIk', 'göz') == 'lük' and realise('CI', 'gözlük') == 'çü' and realise('CI', 'yol') == 'cu'
    assert realise('(y)AcAk', 'gel') == 'ecek' and realise('(y)AcAk', 'oku') == 'yacak'


def test_buffer_only_after_vowel_and_linking_vowel_only_after_consonant():
    assert realise('(y)A', 'araba') == 'ya' and realise('(y)A', 'ev') == 'e'
    assert realise('(n)In', 'araba') == 'nın' and realise('(n)In', 'okul') == 'un'
    assert realise('(I)m', 'ev') == 'im' and realise('(I)m', 'araba') == 'm'
    # the buffer y is never realised after a consonant: *evye is not ev+ye (only evy+e is left)
    assert segment('evye') == ['evy', 'e'] and segment('eve') == ['ev', 'e']
    assert segment('arabayı') == ['araba', 'yı']  # (y)A + (y)I would be two case slots


def test_remainder_keeps_two_letters_and_a_vowel():
    assert segment('de') == ['de']     # stripping DA would leave nothing
    assert segment('ile') == ['ile']   # stop list; and 'il'+'e' would be allowed by the rules alone
    assert segment('ada') == ['ad', 'a']  # not a+da: the remainder would be one letter


def test_apostrophe_fixes_the_root():
    assert segment("İstanbul'da") == ['istanbul', "'da"]
    assert segment("Ankara'dakiler") == ['ankara', "'da", 'ki', 'ler']
    assert segment("ABD'de") == ['abd', "'de"]  # no vowel in the root: any harmony accepted
    assert segment("7580'e") == ['7580', "'e"]


def test_known_limitations():
    # No lexicon: a root that ends like a suffix is cut. 'araba' (car) has no suffix, but arab+a is a valid
    # (y)A strip (consonant-final stem, back harmony), and 'kedi' (cat) reads as ke + past DI.
    assert segment('araba') == ['arab', 'a']
    assert segment('kediler') == ['ke', 'di', 'ler']
    # root-final consonant alternation is not undone: gold root 'çocuk', predicted 'çocuğ' (such words have
    # root_end None in gold_morphology.json, since the form does not start with the lemma)
    assert segment('çocuğun') == ['çocuğ', 'un']


def test_root_boundary_accuracy_on_a_tiny_gold_list():
    gold = [{'form': 'evlerden', 'root_end': 2}, {'form': 'Kitapta', 'root_end': 5},
            {'form': 'araba', 'root_end': 5},        # predicted 4: a miss
            {'form': 'çocuğun', 'root_end': None},    # skipped
            {'form': "İstanbul'a", 'root_end': 8}]
    acc, n = root_boundary_accuracy(gold)
    assert n == 4 and acc == pytest.approx(3 / 4)
    acc, n = root_boundary_accuracy(gold, tm.baseline_no_split)
    assert n == 4 and acc == pytest.approx(1 / 4)
    assert root_boundary_accuracy([]) == (0.0, 0)


def test_eval_cli_on_a_tiny_gold_file(tmp_path, capsys):
    words = [{'form': 'evlerden', 'lemma': 'ev', 'root_end': 2}, {'form': 'kitap', 'lemma': 'kitap', 'root_end': 5},
             {'form': ',', 'lemma': ',', 'root_end': 1}, {'form': 'çocuğun', 'lemma': 'çocuk', 'root_end': None}]
    (tmp_path / 'gold_morphology.json').write_text(json.dumps({'words': words}, ensure_ascii=False))
    out = tm.evaluate(tmp_path)
    a, n, b, m = out['vowel-harmony stripper']
    assert (a, n, b, m) == (1.0, 2, 1.0, 1)
    assert out['baseline: no split'] == (0.5, 2, 0.0, 1)
    assert 'inflected 1' in capsys.readouterr().out
