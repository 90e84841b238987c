"""prepare/literature.py: per-language datasets under two tokenizers, the enbpe tokenizer trained on
English train text only, the balanced one on equal bytes per language, document splits, the word tables /
word spans used for masked-word accuracy, the tokenizer study numbers, and one-line errors that leave
nothing behind. Fixture texts are written by the tests; nothing touches the network or a registry."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip('tokenizers')
os.environ.setdefault('RAYON_NUM_THREADS', '1')

from corpus import HFTokenizer, word_spans
from prepare import literature as L

PARAS = {
    'en': ["The king is dead, and the queen doth weep upon the tower.",
           "My lord, I pray thee speak: what news from Denmark's court?",
           "Good night, sweet prince, and flights of angels sing thee to thy rest."],
    'fr': ["Le jeune homme arriva à Meung un lundi d'avril, et l'été était déjà chaud.",
           "« Mon cher ami, » dit Athos, « la reine a été trahie par le cardinal. »",
           "Ils traversèrent la forêt où les châteaux dormaient sous la lune."],
    'es': ["Señor, la niña del cántaro llegó a la corte con su hermano.",
           "¿Qué dirá el rey cuando sepa que el alcalde no cumplió?",
           "En la aldea la música sonaba y el corazón del galán ardía."],
}
N_DOCS = 10


def marker(lang, k):
    """A word unique to one document: it is a single token of a tokenizer only if that tokenizer saw it."""
    return 'qz' + lang + ''.join('bcdfghjklmnpstvw'[(k * 5 + j * 3) % 16] for j in range(6))


def write_corpus(root, lang, n=N_DOCS, reps=(6, 3)):
    d = root / lang
    d.mkdir(parents=True)
    for k in range(n):
        body = [PARAS[lang][(k + j) % 3] for j in range(reps[0])]
        body += [' '.join([marker(lang, k)] * 10) for _ in range(reps[1])]
        (d / f'{lang}{k:02d}.txt').write_text('\n\n'.join(body) + '\n', encoding='utf-8')
    return d


def run(tmp, extra=()):
    argv = ['--out_root', str(tmp / 'out'), '--raw', str(tmp / 'raw'), '--vocab_size', '380']
    for lang in L.LANGS:
        argv += [f'--input_{lang}', str(tmp / 'in' / lang)]
    return L.main(argv + list(extra))


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('literature')
    for lang in L.LANGS:
        write_corpus(tmp / 'in', lang)
    run(tmp)
    return tmp / 'out'


def meta(out, lang, name):
    return json.loads((out / f'literature_{lang}_{name}' / 'meta.json').read_text(encoding='utf-8'))


def single_token(tok, word):
    return len(tok.encode(' ' + word)) == 1


# ----------------------------------------------------------------------------- datasets

def test_every_language_has_both_tokenizers_with_the_same_size(prepared):
    sizes = set()
    for lang in L.LANGS:
        for name in L.TOKENIZERS:
            d = prepared / f'literature_{lang}_{name}'
            assert {'train.bin', 'val.bin', 'test.bin', 'meta.json', 'tokenizer.json'} <= {p.name for p in d.iterdir()}
            m = meta(prepared, lang, name)
            assert m['lang'] == lang and m['tokenizer_name'] == name and m['source'] == 'input'
            assert len(m['word_start']) == len(m['word_piece']) == m['vocab_size']
            sizes.add(m['vocab_size'])
            # bins hold the documents of their split, each after the separator
            for split in ('train', 'val', 'test'):
                arr = np.fromfile(d / f'{split}.bin', dtype=np.uint16)
                assert arr.size == m['counts'][split]['tokens']
                assert int((arr == m['sep_id']).sum()) == len(m['documents'][split])
    assert sizes == {380}
    # each tokenizer was trained once: the same file in every directory that uses it
    for name in L.TOKENIZERS:
        files = {(prepared / f'literature_{l}_{name}' / 'tokenizer.json').read_bytes() for l in L.LANGS}
        assert len(files) == 1
    assert not [p for p in prepared.iterdir() if p.name.startswith('.')]  # no staging left


def test_splits_by_document_disjoint_complete_and_in_the_bins(prepared):
    for lang in L.LANGS:
        m = meta(prepared, lang, 'enbpe')
        s = {k: set(v) for k, v in m['documents'].items()}
        assert not (s['train'] & s['val']) and not (s['train'] & s['test']) and not (s['val'] & s['test'])
        assert set().union(*s.values()) == {f'{lang}{k:02d}' for k in range(N_DOCS)}
        assert all(s.values())
        assert m['documents'] == meta(prepared, lang, 'balanced')['documents']
        tok = HFTokenizer.load(prepared / f'literature_{lang}_balanced' / 'tokenizer.json')
        train_text = tok.decode(np.fromfile(prepared / f'literature_{lang}_balanced' / 'train.bin', dtype=np.uint16))
        for doc in s['val'] | s['test']:
            assert marker(lang, int(doc[2:])) not in train_text
        for doc in s['train']:
            assert marker(lang, int(doc[2:])) in train_text


def test_enbpe_saw_english_train_text_only_and_balanced_saw_all_languages(prepared, tmp_path_factory):
    en = HFTokenizer.load(prepared / 'literature_en_enbpe' / 'tokenizer.json')
    bal = HFTokenizer.load(prepared / 'literature_en_balanced' / 'tokenizer.json')
    en_train = set(meta(prepared, 'en', 'enbpe')['documents']['train'])
    # every multi-byte piece of enbpe is a substring of the English train text
    src = prepared.parent / 'in' / 'en'
    en_bytes = b'\n'.join((src / f'{d}.txt').read_bytes() for d in sorted(en_train))
    for b in L.piece_bytes(en):
        if b is not None and len(b) > 1:
            assert b in en_bytes, b
    # English train markers are whole pieces of enbpe; val/test markers of any language are not
    for lang in L.LANGS:
        m = meta(prepared, lang, 'enbpe')
        for split, docs in m['documents'].items():
            for doc in docs:
                w = marker(lang, int(doc[2:]))
                assert single_token(en, w) == (lang == 'en' and split == 'train'), (lang, split, w)
                if split != 'train':
                    assert not single_token(bal, w)
    # the balanced tokenizer learnt French and Spanish train words; enbpe never merged an accented byte
    for lang in ('fr', 'es'):
        train = meta(prepared, lang, 'balanced')['documents']['train']
        assert any(single_token(bal, marker(lang, int(d[2:]))) for d in train)
    assert all(b is None or len(b) == 1 or max(b) < 0x80 for b in L.piece_bytes(en))
    assert any(b is not None and len(b) > 1 and max(b) >= 0x80 for b in L.piece_bytes(bal))
    m = meta(prepared, 'fr', 'enbpe')
    assert m['tokenizer_langs'] == ['en'] and m['tokenizer_train_bytes'] == {'en': meta(prepared, 'en', 'enbpe')['bytes']['train']}


def test_balanced_tokenizer_used_equal_bytes(prepared):
    m = meta(prepared, 'es', 'balanced')
    train = {l: meta(prepared, l, 'balanced')['bytes']['train'] for l in L.LANGS}
    used = m['balanced_bytes']
    assert set(used) == set(L.LANGS) and m['tokenizer_train_bytes'] == used
    assert min(train.values()) - 3 <= min(used.values()) <= max(used.values()) <= min(train.values())
    assert len(set(train.values())) > 1  # the languages differ, so the cut is real


def test_balanced_bytes_cap_and_take_bytes_never_splits_a_character(tmp_path):
    texts, used = L.take_bytes(['aé', 'éé'], 4)  # a(1) é(2) | é(2) would cross 4 -> 'aé' + nothing
    assert texts == ['aé'] and used == 3
    texts, used = L.take_bytes(['aé', 'éé'], 5)
    assert texts == ['aé', 'é'] and used == 5
    for lang in L.LANGS:
        write_corpus(tmp_path / 'in', lang, n=5, reps=(3, 1))
    run(tmp_path, ['--balanced_bytes', '500', '--vocab_size', '300'])
    used = meta(tmp_path / 'out', 'fr', 'balanced')['balanced_bytes']
    assert all(497 <= v <= 500 for v in used.values()), used


# ----------------------------------------------------------------------------- word tables and spans

def test_word_spans_hand_example():
    #        0:' The' 1:' king' 2:"'s" 3:',' 4:'\n' 5:'cr' 6:'own' 7:'-' 8:'x' 9:[SEP] 10:' a'
    ws = [1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1]
    wp = [1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    ids = list(range(11))
    assert word_spans(ids, ws, wp) == [(0, 1), (1, 3), (5, 7), (8, 9), (10, 11)]
    assert word_spans([], ws, wp) == []


def test_word_tables_and_spans_on_real_tokenizations():
    text = ("Hamlet's cousin l'été est chaud. Señor niño naïve. peut-être\nmots sur lignes « citation » " * 30)
    tok = HFTokenizer.train([text], 320)
    pb = L.piece_bytes(tok)
    ids = tok.encode(text)
    assert b''.join(pb[i] for i in ids) == text.encode('utf-8')  # the byte alphabet is inverted exactly
    ws, wp = L.word_tables(tok)
    for i, s in tok.special_ids().items():
        assert ws[s] == 1 and wp[s] == 0
    sp = tok.tok.token_to_id
    byte_of = {v: k for k, v in L.byte_decoder().items()}
    assert ws[sp(byte_of[ord(' ')])] == 1 and wp[sp(byte_of[ord(' ')])] == 0
    assert ws[sp(byte_of[ord('\n')])] == 1 and wp[sp(byte_of[ord('\n')])] == 0
    assert wp[sp(byte_of[0xC3])] == 1 and wp[sp(byte_of[0xA9])] == 1  # bytes of a cut letter
    assert wp[sp(byte_of[ord("'")])] == 1 and wp[sp(byte_of[ord(',')])] == 0 and wp[sp(byte_of[ord('-')])] == 0

    def words(s):
        ids = tok.encode(s)
        return [tok.decode(ids[a:b]).strip() for a, b in word_spans(ids, ws, wp)]  # a lone ' ' piece is not part of the word

    assert words(" l'été") == ["l'été"]
    assert words(" Hamlet's cousin,") == ["Hamlet's", 'cousin']
    assert words("mots\nsur\nlignes") == ['mots', 'sur', 'lignes']
    assert words(" peut-être") == ['peut', 'être']
    assert words(" « citation »") == ['citation']
    assert words(" Señor niño naïve.") == ['Señor', 'niño', 'naïve']


def test_word_piece_rejects_non_letters():
    assert L._is_wordish(b' abc') and L._is_wordish("d’été".encode()) and L._is_wordish(b'\xa9t')
    assert not L._is_wordish(b' ') and not L._is_wordish(b'') and not L._is_wordish(b'  a')
    assert not L._is_wordish(' «'.encode()) and not L._is_wordish(b'a1') and not L._is_wordish('\u00a0'.encode())


# ----------------------------------------------------------------------------- tokenizer study

def test_tokenizer_stats_exact_on_a_hand_example():
    tok = HFTokenizer.train(['the cat sat ' * 50], 300)
    assert tok.encode('the cat sat') == [tok.tok.token_to_id(p) for p in ('the', 'Ġcat', 'Ġsat')]
    s = L.tokenizer_stats(tok, 'the cat sat')
    assert s['fertility'] == 1.0 and s['tokens_per_char'] == 3 / 11
    assert s['byte_fallback_rate'] == 0.0 and s['unk_rate'] == 0.0
    # an unseen 'é' is two byte pieces, neither a complete UTF-8 sequence: 'é' -> 2, ' é' -> ' ' + 2
    s = L.tokenizer_stats(tok, 'é é')
    assert s['tokens'] == 5 and s['byte_fallback_rate'] == 4 / 5 and s['fertility'] == 5 / 2
    assert s['tokens_per_char'] == 5 / 3
    # a list of documents is encoded document by document
    assert L.tokenizer_stats(tok, ['the cat', ' sat'])['tokens'] == 3


def test_study_table_and_meta_stats(prepared, capsys):
    rows = L.main(['--study', '--out_root', str(prepared)])
    out = capsys.readouterr().out
    assert out.count('\n| ') == 6 and '| fr | balanced |' in out
    saved = json.loads((prepared / 'literature_study.json').read_text())
    assert saved.keys() == rows.keys() and len(rows) == 6
    for key, r in rows.items():
        assert r['unk_rate'] == 0.0 and r['tokens_per_char'] > 0 and r['fertility'] > 0
        assert r == {'lang': r['lang'], 'tokenizer': r['tokenizer'], **meta(prepared, r['lang'], r['tokenizer'])['tokenizer_stats']}
    # the English-only tokenizer cuts accented characters in French / Spanish; the balanced one less so
    assert rows['fr_enbpe']['byte_fallback_rate'] > 0
    assert rows['fr_enbpe']['fertility'] > rows['fr_balanced']['fertility']
    assert rows['es_enbpe']['fertility'] > rows['es_balanced']['fertility']


# ----------------------------------------------------------------------------- errors

def no_output(out):
    return not out.exists() or not [p for p in out.iterdir() if 'literature_' in p.name and p.name != 'literature_raw']


@pytest.mark.parametrize('case', ['missing', 'empty', 'too_few', 'no_en', 'input_without_dir'])
def test_bad_input_one_line_and_nothing_written(tmp_path, capsys, case):
    for lang in L.LANGS:
        write_corpus(tmp_path / 'in', lang, n=4, reps=(2, 1))
    extra = []
    if case == 'missing':
        extra = ['--input_fr', str(tmp_path / 'nope')]
    elif case == 'empty':
        (tmp_path / 'empty').mkdir()
        extra = ['--input_es', str(tmp_path / 'empty')]
    elif case == 'too_few':
        for p in sorted((tmp_path / 'in' / 'es').iterdir())[:2]:
            p.write_text('  \n', encoding='utf-8')
    elif case == 'no_en':
        extra = ['--langs', 'fr,es']
    elif case == 'input_without_dir':
        extra = ['--langs', 'en,fr', '--source', 'input', '--input_fr', '']
    with pytest.raises(SystemExit) as e:
        run(tmp_path, extra)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    assert no_output(tmp_path / 'out')


def test_failure_while_writing_leaves_no_partial_directory(tmp_path, monkeypatch):
    for lang in L.LANGS:
        write_corpus(tmp_path / 'in', lang, n=4, reps=(2, 1))

    def boom(*a, **k):
        raise RuntimeError('disk full')

    monkeypatch.setattr(L, 'write_dataset', boom)
    with pytest.raises(RuntimeError):
        run(tmp_path, ['--vocab_size', '300'])
    assert no_output(tmp_path / 'out') and not [p for p in (tmp_path / 'out').iterdir() if p.name.startswith('.')]


def test_cut_book_by_chapter_headings_and_gutenberg_strip():
    body = '\n'.join(f'CHAPITRE {k}\n\nTexte du chapitre {k}.\n' for k in range(1, 7))
    text = f'Title: X\nAuthor: Alexandre Dumas\nLanguage: French\n*** START OF THE BOOK ***\n{body}\n*** END OF THE BOOK ***\nlicence'
    assert L.gutenberg_field(text, 'Author') == 'Alexandre Dumas'
    docs = L.cut_book(L.strip_gutenberg(text), L.ONLINE_BOOKS['fr']['heading'], 'pg1')
    assert len(docs) == 6 and docs['pg1:002'].startswith('CHAPITRE 3') and 'licence' not in ''.join(docs.values())
    long = '\n\n'.join(['mot ' * 100] * 200)  # no headings: ~CHUNK_CHARS pieces at paragraph boundaries
    docs = L.cut_book(long, L.ONLINE_BOOKS['fr']['heading'], 'b')
    assert len(docs) == 4 and all(t.strip() for t in docs.values())


# ----------------------------------------------------------------------------- evals/literature.py masked word accuracy

class _TableModel(torch.nn.Module):
    """A fake causal model whose greedy prediction at each position is looked up from the window (the oracle),
    optionally spoiled at the positions where `spoil(target)` holds."""

    def __init__(self, table, vocab, spoil=None):
        super().__init__()
        self.table, self.vocab, self.spoil = table, vocab, spoil

    def forward(self, x, all_logits=True):
        y = torch.stack([self.table[tuple(r.tolist())] for r in x])
        pred = y.clone()
        if self.spoil is not None:
            bad = self.spoil(x, y)
            pred[bad] = (y[bad] + 1) % self.vocab
        return torch.nn.functional.one_hot(pred, self.vocab).float() * 10, None


def test_masked_word_accuracy_counts_whole_words(prepared):
    from evals.literature import literature_metrics
    d = prepared / 'literature_fr_enbpe'
    m = json.loads((d / 'meta.json').read_text(encoding='utf-8'))
    data = np.fromfile(d / 'val.bin', dtype=np.uint16).astype(np.int64)
    T = 16
    table, single, multi = {}, 0, 0
    for s in range(0, len(data) - T - 1 + 1, T):
        w = data[s:s + T + 1]
        table[tuple(w[:-1].tolist())] = torch.from_numpy(w[1:].copy())
        for a, b in word_spans(w.tolist(), m['word_start'], m['word_piece']):
            if a >= 1:
                single, multi = single + (b - a == 1), multi + (b - a > 1)
    ckpt = {'model_args': {'block_size': T, 'window': 0}}
    oracle = literature_metrics(_TableModel(table, m['vocab_size']), ckpt, d, ['val'])
    assert oracle['val_masked_word_acc'] == 1.0 and oracle['val_masked_words'] == single + multi > 0
    ws, wp = torch.tensor(m['word_start']).bool(), torch.tensor(m['word_piece']).bool()
    # wrong exactly where the target continues a word (a word piece without a start, after a word piece):
    # then only the single-token words stay right
    spoilt = literature_metrics(_TableModel(table, m['vocab_size'], lambda x, y: ~ws[y] & wp[y] & wp[x]), ckpt, d,
                                ['val'])
    assert multi > 0 and abs(spoilt['val_masked_word_acc'] - single / (single + multi)) < 1e-12
