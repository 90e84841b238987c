"""Lexicon-refined segmenter, Morfessor, root-boundary scoring and the MorphBPE-style tokenizer
(prepare/turkish_morph.py, prepare/turkish.py --tokenizer=morph_bpe|morph_unigram). Tiny fixtures, no network."""

import pytest

import morphology
from corpus import load_tokenizer, MorphTokenizer
from morphology import Lexicon, MARKER, presegment, segment
from prepare import turkish_morph as tm
from prepare.common import load_lexicon
from prepare.turkish_morph import root_boundary_accuracy

FIXTURE_LEXICON = {'araba', 'kedi', 'ev', 'kitap', 'çocuk', 'burun', 'hak', 'gel', 'oku', 'okul', 'göz', 'yol'}

TEXT = ("Evlerden geldim. Kitaplarımızı okuyorum, arabası yolda.\n"
        "Kediler evde; çocuğun kitabı İstanbul'da kaldı. Gözlerinden 2024'te arabaya bindiler!\n")
TEXTS = [TEXT, "Evde kitap okudum. Arabalar ve kediler yolda.", "Çocuklar okula geldiler, kitaplarını okudular."]


# ----------------------------------------------------------------------------- lexicon refinement

def test_lexicon_fixes_roots_that_end_like_a_suffix():
    assert segment('araba') == ['arab', 'a'] and segment('kediler') == ['ke', 'di', 'ler']  # known failures
    assert segment('araba', lexicon=FIXTURE_LEXICON) == ['araba']
    assert segment('kedi', lexicon=FIXTURE_LEXICON) == ['kedi']
    assert segment('kediler', lexicon=FIXTURE_LEXICON) == ['kedi', 'ler']
    assert segment('arabaya', lexicon=FIXTURE_LEXICON) == ['araba', 'ya']


def test_lexicon_keeps_the_harmony_segmentation_when_it_agrees_or_knows_nothing():
    for w in ['evlerden', 'kitaplarımız', 'geliyorum', 'okullarda', "İstanbul'da", 'masada', 'yaptık']:
        assert segment(w, lexicon=FIXTURE_LEXICON) == segment(w)
    assert segment('evler', lexicon=FIXTURE_LEXICON | {'evle'}) == ['ev', 'ler']  # ties: the harmony choice


def test_lexicon_root_final_alternations():
    lex = Lexicon(FIXTURE_LEXICON)
    assert lex.match('kitap') == 2 and lex.match('kitab') == 1 and lex.match('çocuğ') == 1
    assert lex.match('burn') == 1 and lex.match('hakk') == 1 and lex.match('xyz') == 0
    assert segment('kitabı', lexicon=lex)[0] == 'kitab'
    assert segment('burnu', lexicon=lex) == ['burn', 'u']


def test_load_lexicon_from_a_zemberek_style_csv(tmp_path):
    rows = ['araba_Noun\taraba\taraba\tNoun\tNone\taraba\t0\tnull\t',
            'gelmek_Verb\tgelmek\tgel\tVerb\tNone\tgel\t0\tnull\t Aorist_I',
            'Ke_Noun_Abbrv\tke\tke\tNoun\tAbbrv\tke\t0\tnull\t',
            'Arab_Noun_Prop\tArab\tarab\tNoun\tProp\tarab\t0\tnull\t']
    p = tmp_path / 'lexicon.csv'
    p.write_text('\n'.join(rows), encoding='utf-8')
    lex = load_lexicon(path=p)
    assert lex.roots == {'araba', 'gel'}  # proper nouns and abbreviations are left out


# ----------------------------------------------------------------------------- scoring

def test_root_boundary_accuracy_of_segmenters_on_a_hand_example():
    gold = [{'form': 'araba', 'root_end': 5}, {'form': 'kediler', 'root_end': 4},
            {'form': 'evlerden', 'root_end': 2}, {'form': 'çocuğun', 'root_end': None}]
    assert root_boundary_accuracy(gold) == (pytest.approx(1 / 3), 3)
    acc, n = root_boundary_accuracy(gold, lambda f: len(segment(f, lexicon=FIXTURE_LEXICON)[0]))
    assert (acc, n) == (1.0, 3)


def test_turkmorfbench_root_end_from_stem_and_gold_form():
    assert tm.tmb_root_end('ev', 'evlerden') == 2
    assert tm.tmb_root_end('Kırık', "Kırık'a") == 5
    assert tm.tmb_root_end('benlenmek', 'benlenirim') == 6  # infinitive: -mAk dropped
    assert tm.tmb_root_end('kitap', 'kitabı') == 5           # voicing
    assert tm.tmb_root_end('nakil', 'nakli') == 4            # vowel drop
    assert tm.tmb_root_end('mas', 'massı', doubling=True) == 4  # doubling, where the item says so
    assert tm.tmb_root_end('el', 'eller') == 2
    assert tm.tmb_root_end('su', 'xyz') is None


def test_presegment_marks_boundaries_and_removing_them_gives_the_text_back():
    s = presegment(TEXT, segment)
    assert s.replace(MARKER, '') == TEXT
    assert f'Ev{MARKER}ler{MARKER}den' in s and f"İstanbul{MARKER}'da" in s
    assert presegment(s, segment) == s  # markers already present are not doubled


def test_morfessor_segmenter_trains_on_a_tiny_word_list():
    counts = morphology.word_counts(TEXTS * 3)
    model = morphology.train_morfessor(counts, max_types=50)
    for w in ['evlerden', 'kediler', "İstanbul'da", '2024']:
        pieces = morphology.morfessor_segment(model, w)
        assert ''.join(pieces) == morphology.turkish_lower(w)
    assert morphology.morfessor_segment(model, "İstanbul'da")[-1] == "'da"


# ----------------------------------------------------------------------------- the morph tokenizer

def _words_and_boundaries(text, seg):
    """(start, end, set of in-word boundary offsets) per word, from the segmenter."""
    out = []
    for m in morphology._WORD.finditer(text):
        pieces, k, cuts = seg(m.group()), m.start(), set()
        for p in pieces[:-1]:
            k += len(p)
            cuts.add(k)
        out.append((m.start(), m.end(), cuts))
    return out


@pytest.mark.parametrize('model', ['bpe', 'unigram'])
@pytest.mark.parametrize('segmenter', ['harmony', 'lexicon'])
def test_pieces_never_cross_morpheme_boundaries(tmp_path, model, segmenter):
    seg = morphology.make_segmenter(segmenter, lexicon=Lexicon(FIXTURE_LEXICON))
    tok = MorphTokenizer.train(TEXTS * 5, 300, model, segmenter, seg, path=tmp_path / 'tokenizer.json')
    ids, offs = tok.encode_offsets(TEXT)
    assert ids == tok.encode(TEXT)
    starts = {a for a, b in offs} | {b for a, b in offs}
    for ws, we, cuts in _words_and_boundaries(TEXT, seg):
        assert cuts <= starts, (TEXT[ws:we], cuts)  # every morpheme boundary is a token boundary
        for a, b in offs:
            assert not any(a < c < b for c in cuts)  # and no piece straddles one
    # decode(encode(text)) == text, and no piece contains the marker
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert all(MARKER not in (tok.tok.id_to_token(i) or '') for i in range(tok.vocab_size))


@pytest.mark.parametrize('model', ['bpe', 'unigram'])
def test_marker_counts_zero_bytes(tmp_path, model):
    tok = MorphTokenizer.train(TEXTS * 5, 300, model, 'harmony', segment, path=tmp_path / 'tokenizer.json')
    tb = tok.token_bytes()
    ids = tok.encode(TEXT)
    # unigram: the Metaspace piece at the very start carries a '▁' for a space that is not in the text
    lead = 1 if model == 'unigram' and tok.tok.id_to_token(ids[0]).startswith('▁') else 0
    assert sum(tb[i] for i in ids) - lead == len(TEXT.encode('utf-8'))
    assert len(presegment(TEXT, segment).encode('utf-8')) > len(TEXT.encode('utf-8'))  # the marker is 3 bytes


def test_prepare_turkish_morph_dataset(tmp_path):
    """prepare/turkish.py --tokenizer=morph_bpe on a tiny --input: tables, meta and reload."""
    from prepare import turkish
    from corpus import load_meta
    src = tmp_path / 'src'
    src.mkdir()
    for k in range(6):
        (src / f'd{k}.txt').write_text(TEXTS[k % 3] + ' ' + TEXT, encoding='utf-8')
    out = tmp_path / 'out'
    turkish.main([f'--input={src}', '--tokenizer=morph_bpe', '--segmenter=harmony', '--vocab_size=300',
                  f'--out={out}'])
    meta = load_meta(out)
    assert meta['presegment']['segmenter'] == 'harmony' and meta['tokenizer'] == 'hf'
    tok = load_tokenizer(out)
    assert isinstance(tok, MorphTokenizer)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    pieces = [tok.tok.id_to_token(i) for i in ids]
    ws, tc = meta['word_start'], meta['token_class']
    # 'Evlerden' at the text start: Ev (no Ġ: first word, as in plain bpe) + ler + den: suffixes, not word starts
    assert pieces[:3] == ['Ev', 'ler', 'den'] and [ws[i] for i in ids[1:3]] == [0, 0] and tc[ids[1]] == 1
    # a piece that starts at a morpheme boundary inside a word never counts as a word start; a piece that
    # starts with the space always does (word index for attention='agglutinative' stays right)
    _, offs = tok.encode_offsets(TEXT)
    cuts = set().union(*(c for _, _, c in _words_and_boundaries(TEXT, segment)))
    at_cut = [i for i, (a, b) in zip(ids, offs) if a in cuts]
    after_space = [i for i, (a, b) in zip(ids, offs) if TEXT[a] == ' ']  # byte-level: 'Ġ' carries the space
    assert len(at_cut) > 10 and all(ws[i] == 0 for i in at_cut)
    assert after_space and all(ws[i] == 1 for i in after_space)
