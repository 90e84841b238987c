"""prepare/common.py and prepare/shakespeare.py: document splits, tokenizers, the uint16 writer (refusing
oversized vocabularies without leaving partial files), the batch loader, the --input path."""
import json
import random

import numpy as np
import pytest
import torch

from conftest import make_documents, write_char_dataset
from corpus import BatchLoader, CharTokenizer, VocabTokenizer
import corpus
import objectives
from prepare import common as C
from prepare.common import split_by_document, to_uint16, write_dataset


# ----------------------------------------------------------------------------- splits

def test_split_by_document_deterministic_disjoint_complete_order_free():
    ids = [f'P{i:04d}' for i in range(200)]
    a = split_by_document(ids)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    b = split_by_document(shuffled + ids[:10])  # order and duplicates do not matter
    assert a == b
    assert set(a) == {'train', 'val', 'test'}
    sets = [set(v) for v in a.values()]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(ids)
    assert [len(v) for v in a.values()] == [160, 20, 20]
    assert split_by_document(ids, seed=1) != a  # the seed picks the assignment
    # integer ids and their string forms do not collide into one document
    assert sum(len(v) for v in split_by_document(list(range(10))).values()) == 10


def test_split_gives_every_split_a_document():
    s = split_by_document(['a', 'b', 'c', 'd'])
    assert all(len(v) >= 1 for v in s.values()) and sum(len(v) for v in s.values()) == 4
    with pytest.raises(SystemExit):
        split_by_document(['a', 'b'])


def test_check_disjoint_catches_overlap():
    with pytest.raises(AssertionError, match='share'):
        C.check_disjoint({'train': [1, 2], 'val': [2]})
    with pytest.raises(AssertionError, match='lost'):
        C.check_disjoint({'train': [1], 'val': [2]}, total=3)


# ----------------------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trip_and_specials():
    text = "To be, or not to be: that is the question.\nÆ ü"
    tok = CharTokenizer.build([text])
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    sp = tok.special_ids()
    assert sp == {'[UNK]': 0, '[SEP]': 1, '[MASK]': 2} and tok.vocab_size == len(set(text)) + 3
    assert tok.encode('~')[0] == sp['[UNK]']  # unseen characters
    assert tok.decode([sp['[SEP]']] + ids) == text  # specials decode to nothing
    assert tok.token_bytes()[tok.stoi['Æ']] == 2 and tok.token_bytes()[0] == 0
    # rebuilt from its meta.json
    meta = corpus.tokenizer_meta(tok)
    rebuilt = CharTokenizer([c for c in meta['vocab'] if c not in meta['specials']], specials=meta['specials'])
    assert rebuilt.itos == tok.itos


def test_vocab_tokenizer_round_trip_and_order():
    docs = [['a-na', 'LUGAL', 'be-li2'], ['LUGAL', 'a-na', 'LUGAL']]
    tok = VocabTokenizer.build(docs, extra_specials=['<gap>'])
    assert tok.itos[:6] == corpus.SPECIALS + ['<gap>']
    assert tok.itos[6:] == ['LUGAL', 'a-na', 'be-li2']  # by frequency, then alphabetically
    for d in docs:
        assert tok.decode(tok.encode(d)).split() == d
    assert tok.encode('a-na unknown') == [tok.stoi['a-na'], tok.stoi['[UNK]']]
    assert tok.special_ids()['[MASK]'] == 4 and tok.n_specials == 6


@pytest.mark.parametrize('kind', ['bpe', 'unigram'])
def test_hf_tokenizer_trains_and_round_trips(tmp_path, kind):
    pytest.importorskip('tokenizers')
    docs = make_documents(n_docs=10)
    texts = list(docs.values())
    tok = C.make_tokenizer(kind, texts, vocab_size=300, out_dir=tmp_path)
    assert (tmp_path / 'tokenizer.json').exists()
    assert tok.vocab_size <= 300
    sample = texts[0]
    ids = tok.encode(sample)
    assert len(ids) < len(sample)  # it merged something
    if kind == 'bpe':
        assert tok.decode(ids) == sample
        assert tok.decode(tok.encode('zebra ünïcode')) == 'zebra ünïcode'  # byte-level: nothing is unknown
    else:
        assert tok.decode(ids).split() == sample.split()
    sp = tok.special_ids()
    assert {'[UNK]', '[SEP]', '[MASK]'} <= set(sp)
    assert sp['[SEP]'] not in ids
    # rebuilt from meta.json + tokenizer.json
    (tmp_path / 'meta.json').write_text(json.dumps(corpus.tokenizer_meta(tok)))
    again = corpus.load_tokenizer(tmp_path)
    assert again.encode(sample) == ids


def test_oversized_subword_vocab_refused(tmp_path):
    pytest.importorskip('tokenizers')
    with pytest.raises(SystemExit):
        corpus.HFTokenizer.train(['abc'], 70000)


# ----------------------------------------------------------------------------- writer

def test_write_dataset_layout(tmp_path):
    splits = {'train': [[5, 6, 7], [8]], 'val': [[9, 9]], 'test': [[7]]}
    flags = {'train': [[1, 2, 3], [0]], 'val': [[1, 1]], 'test': [[3]]}
    meta = write_dataset(tmp_path, splits, {'vocab_size': 10, 'tokenizer': 'x'}, sep_id=1, aux={'flags': flags})
    assert np.fromfile(tmp_path / 'train.bin', dtype=np.uint16).tolist() == [1, 5, 6, 7, 1, 8]
    assert np.fromfile(tmp_path / 'train.flags.bin', dtype=np.uint8).tolist() == [0, 1, 2, 3, 0, 0]
    assert np.fromfile(tmp_path / 'val.bin', dtype=np.uint16).tolist() == [1, 9, 9]
    on_disk = json.loads((tmp_path / 'meta.json').read_text())
    assert on_disk == meta
    assert on_disk['sep_id'] == 1 and on_disk['counts']['train'] == {'tokens': 6, 'documents': 2}
    assert on_disk['aux'] == {'flags': 'uint8'}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['meta.json', 'train.bin', 'val.bin', 'test.bin', 'train.flags.bin', 'val.flags.bin', 'test.flags.bin'])


def test_largest_uint16_vocab_is_accepted(tmp_path):
    write_dataset(tmp_path, {'train': [[65535, 0]]}, {'vocab_size': 65536}, sep_id=3)
    assert np.fromfile(tmp_path / 'train.bin', dtype=np.uint16).tolist() == [3, 65535, 0]


@pytest.mark.parametrize('case', ['vocab_size', 'token_id', 'token_id_late_split', 'aux_mismatch'])
def test_oversized_vocab_refused_without_partial_files(tmp_path, capsys, case):
    out = tmp_path / 'data'
    meta = {'vocab_size': 100}
    splits = {'train': [[1, 2, 3]], 'val': [[4]], 'test': [[5]]}
    aux = None
    if case == 'vocab_size':
        meta = {'vocab_size': 70000}
    elif case == 'token_id':
        splits['train'] = [[1, 70000]]
    elif case == 'token_id_late_split':  # train and val are already staged when test fails
        splits['test'] = [[70000]]
    else:
        aux = {'flags': {'train': [[0, 0]], 'val': [[0]], 'test': [[0]]}}
    with pytest.raises((SystemExit, ValueError)) as e:
        write_dataset(out, splits, meta, sep_id=0, aux=aux)
    if case != 'aux_mismatch':
        assert isinstance(e.value, SystemExit) and e.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ('70000' in err[0]) and 'uint16' in err[0]
    assert list(out.iterdir()) == [], f"partial output left behind: {list(out.iterdir())}"


def test_to_uint16():
    assert to_uint16([0, 65535]).dtype == np.uint16
    for bad in ([70000], [-1], [65536]):
        with pytest.raises(SystemExit):
            to_uint16(bad)


def test_write_dataset_replaces_previous_output_only_when_complete(tmp_path):
    write_dataset(tmp_path, {'train': [[1, 2]]}, {'vocab_size': 10}, sep_id=0)
    before = (tmp_path / 'train.bin').read_bytes()
    with pytest.raises(SystemExit):
        write_dataset(tmp_path, {'train': [[1, 2, 3]], 'val': [[70000]]}, {'vocab_size': 10}, sep_id=0)
    assert (tmp_path / 'train.bin').read_bytes() == before  # the old dataset is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ['meta.json', 'train.bin']


# ----------------------------------------------------------------------------- batch loader

def test_batch_loader_pure_function_of_seed_split_index(char_data):
    a = BatchLoader(char_data, block_size=16, batch_size=4, seed=5)
    b = BatchLoader(char_data, block_size=16, batch_size=4, seed=5)
    order = [('train', 3, 0), ('val', 0, 1), ('train', 0, 0), ('train', 3, 1), ('test', 2, 0)]
    got_a = {k: a.get(*k) for k in order}
    got_b = {k: b.get(*k) for k in reversed(order)}  # any call order
    for k in order:
        assert torch.equal(got_a[k]['x'], got_b[k]['x']) and torch.equal(got_a[k]['doc'], got_b[k]['doc'])
        assert got_a[k]['rng'].random() == got_b[k]['rng'].random()  # the objective's noise too
    assert not torch.equal(got_a[('train', 3, 0)]['x'], got_a[('train', 0, 0)]['x'])  # index matters
    assert not torch.equal(got_a[('train', 3, 0)]['x'], got_a[('train', 3, 1)]['x'])  # stream matters
    c = BatchLoader(char_data, block_size=16, batch_size=4, seed=6)
    assert not torch.equal(c.get('train', 3)['x'], got_a[('train', 3, 0)]['x'])  # seed matters
    assert a.splits() == ['train', 'val', 'test']


def test_batch_loader_targets_and_document_ids(char_data):
    meta = corpus.load_meta(char_data)
    sep = meta['sep_id']
    loader = BatchLoader(char_data, block_size=32, batch_size=64, seed=0)
    b = loader.get('train', 0)
    x, y, doc = b['x'], b['y'], b['doc']
    assert x.shape == y.shape == doc.shape == (64, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    data = np.fromfile(char_data / 'train.bin', dtype=np.uint16)
    windows = np.lib.stride_tricks.sliding_window_view(data.astype(np.int64), 33)
    for row in range(64):  # each row is a window of the file, y the same window one token later
        hit = (windows == np.concatenate([x[row].numpy(), y[row, -1:].numpy()])).all(1)
        assert hit.any()
    d = torch.diff(doc, dim=1)
    assert torch.equal(d == 1, x[:, 1:] == sep) and d.min() >= 0 and d.max() <= 1
    assert torch.equal(doc[:, 0], (x[:, 0] == sep).long())
    assert (x == sep).any()  # the check above is not vacuous


def test_batch_loader_doc_aligned_starts_at_separators(char_data):
    sep = corpus.load_meta(char_data)['sep_id']
    loader = BatchLoader(char_data, block_size=16, batch_size=16, seed=0, doc_aligned=True)
    x = loader.get('train', 1)['x']
    assert (x[:, 0] == sep).all()


def test_batch_loader_refuses_short_split(tmp_path):
    write_dataset(tmp_path, {'train': [[2] * 100], 'val': [[2] * 5]}, {'vocab_size': 10}, sep_id=0)
    with pytest.raises(SystemExit):
        BatchLoader(tmp_path, block_size=16, batch_size=2)


def test_maskable_positions_excludes_specials_and_flags(char_data):
    meta = corpus.load_meta(char_data)
    x = torch.tensor([[0, 1, 2, 3, 4, 5]])
    ok = objectives.maskable_positions({'x': x}, meta)
    assert ok.tolist() == [[False, False, False, True, True, True]]
    flags = torch.tensor([[0, 0, 0, 1, 2, 3]])
    ok = objectives.maskable_positions({'x': x, 'flags': flags}, meta)
    assert ok.tolist() == [[False, False, False, True, False, False]]


def test_load_meta_missing_says_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit):
        corpus.load_meta(tmp_path)
    assert 'prepare' in capsys.readouterr().err


# ----------------------------------------------------------------------------- shakespeare --input

def test_shakespeare_input_file(tmp_path, monkeypatch):
    from prepare import shakespeare
    docs = make_documents(n_docs=8, words_per_doc=200)
    text = '\n'.join(docs.values())
    src = tmp_path / 'plays.txt'
    src.write_text(text)
    monkeypatch.chdir(tmp_path)
    shakespeare.main(['--input', str(src), '--out', 'data/sh'])
    out = tmp_path / 'data' / 'sh'
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['source'].startswith('input') and meta['tokenizer'] == 'char'
    assert not (tmp_path / 'data' / 'shakespeare_raw').exists()  # nothing fetched
    names = meta['documents']
    assert sum(len(v) for v in names.values()) == 40  # 40 chunks at line boundaries
    assert not set(names['train']) & set(names['val']) and not set(names['train']) & set(names['test'])
    tok = corpus.load_tokenizer(out)
    sep = meta['sep_id']
    decoded = {}
    for split in ('train', 'val', 'test'):
        arr = np.fromfile(out / f'{split}.bin', dtype=np.uint16)
        assert arr[0] == sep and (arr == sep).sum() == len(names[split]) == meta['counts'][split]['documents']
        pieces = np.split(arr, np.flatnonzero(arr == sep))[1:]
        for name, piece in zip(names[split], pieces):  # documents are written in the order listed
            decoded[name] = tok.decode(piece[1:].tolist())
    # the chunks are contiguous runs of lines: in name order they rebuild the (cleaned) input exactly
    assert '\n'.join(decoded[k] for k in sorted(decoded)) == shakespeare.clean(text)


def test_shakespeare_input_directory(tmp_path, monkeypatch):
    from prepare import shakespeare
    plays = tmp_path / 'plays'
    plays.mkdir()
    for name, t in make_documents(n_docs=5).items():
        (plays / f'{name}.txt').write_text(t)
    monkeypatch.chdir(tmp_path)
    shakespeare.main(['--input', str(plays), '--out', 'out_dir'])
    meta = json.loads((tmp_path / 'out_dir' / 'meta.json').read_text())
    assert sorted(sum(meta['documents'].values(), [])) == [f'doc{i:02d}' for i in range(5)]
    with pytest.raises(SystemExit):
        shakespeare.main(['--input', str(tmp_path / 'missing.txt'), '--out', 'x'])


@pytest.mark.parametrize('kind', ['bpe', 'unigram'])
def test_hf_token_bytes_sum_to_the_text_bytes(kind, tmp_path):
    """Bits per byte divide by the bytes the tokens stand for: summed over an encoding they must equal
    the UTF-8 length of the text exactly (spaces and multi-byte characters included)."""
    from corpus import HFTokenizer
    texts = ['Çok güzel bir gün, değil mi? Evet, çok güzel.', 'naïve café déjà vu — ünlü şarkılar'] * 50
    tok = HFTokenizer.train(texts, 300, model=kind)
    nb = tok.token_bytes()
    for t in texts[:2]:
        ids = tok.encode(t)
        assert tok.decode(ids) == t
        # unigram (Metaspace) prepends a word-start marker to the first word: one byte per document
        prefix = kind == 'unigram' and tok.tok.id_to_token(ids[0]).startswith('\u2581')
        assert sum(nb[i] for i in ids) == len(t.encode('utf-8')) + prefix
