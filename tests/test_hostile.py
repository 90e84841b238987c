"""A hostile user's failure modes (docs/reliability.md: the table of failure modes tried). One test per case,
named test_NN_...: NN is the row of that table. Each case ends in one clear line and a non-zero exit, or
does the right thing, and nothing a user made is deleted or overwritten. CPU, tiny runs, subprocesses where the
behaviour is the command's."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_train, train_env

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
ARGS = ['--max_iters=4', '--eval_interval=2']


def run(script, *args, timeout=300, stdin=None, preexec_fn=None, cwd=REPO):
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=train_env(), capture_output=True, text=True,
                          timeout=timeout, input=stdin, preexec_fn=preexec_fn)


def one_error_line(r):
    """Failed (non-zero exit) with one line that says what to do: no traceback, a last line 'error: ...'."""
    assert r.returncode not in (0, None), r.stdout[-1000:] + r.stderr[-1000:]
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith(('error:', 'config error:')), r.stderr[-2000:]
    assert len(lines[-1]) < 800, lines[-1][:200]
    return lines[-1]


def files_of(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in Path(d).rglob('*') if p.is_file() and p.name != '.lock'}


@pytest.fixture(scope='module')
def run_dir(char_data, tmp_path_factory):
    """A finished 4-iteration gpt run."""
    out = tmp_path_factory.mktemp('hostile') / 'run'
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', *ARGS])
    return out


@pytest.fixture(scope='module')
def akk(tmp_path_factory):
    """Sign-level data from the fixture ATF and a tiny 2-layer encoder trained on it with artifacts."""
    from atf import parse_atf
    from prepare.akkadian import build_dataset
    d = tmp_path_factory.mktemp('hostile_akk')
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    body = text.split('&P100002')[0].split('\n', 1)[1]
    atf = ''.join(f'&P{k:06d} = copy {k}\n{body}' for k in range(30))
    build_dataset(parse_atf(atf), d / 'data', seed=1337, source='input')
    out = d / 'out'
    run_train(['--arch=encoder', f'--data_dir={d / "data"}', '--dataset=akkadian', f'--out_dir={out}', '--n_layer=2',
               '--norm=rmsnorm', '--mlp=geglu', '--pos=rope', '--bias=False', '--doc_mask=True', '--d_kv=16',
               '--max_iters=4', '--eval_interval=2', '--save_artifacts=True', '--artifact_layers=0,1,2'])
    return d / 'data', out


def copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('.lock'))
    return dst


# ----------------------------------------------------------------------------- 1-2: nothing a user made is deleted

def test_01_interpret_result_dir_never_replaces_a_folder_it_did_not_write(run_dir, tmp_path):
    """--result_dir pointed at a user's folder, or at the run's own out_dir, is refused before any work, and the
    folder keeps every file; a folder interpret.py wrote (its .interpret mark) may be replaced."""
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('my notes')
    run_copy = copy_run(run_dir, tmp_path / 'run')
    before = files_of(run_copy)
    for target in (mine, run_copy, tmp_path):
        line = one_error_line(run('interpret.py', f'--out_dir={run_copy}', f'--result_dir={target}'))
        assert 'result' in line and str(target) in line
    assert (mine / 'notes.txt').read_text() == 'my notes' and files_of(run_copy) == before
    from interpret import check_result_dir, RESULT_MARKER
    ours = tmp_path / 'ours'
    ours.mkdir()
    (ours / RESULT_MARKER).write_text('written by interpret.py')
    (ours / 'report.md').write_text('old report')
    check_result_dir(ours, run_copy)  # no SystemExit: its own earlier result


def test_02_two_runs_started_together_never_delete_a_finished_run(char_data, tmp_path):
    """The out_dir is looked at only under the lock: a run that finished between another run's start and its lock
    (simulated: the lock is taken just after a finished run appears) is refused, not deleted."""
    out = tmp_path / 'race'
    finished = {'last.pt': b'finished run', 'ckpt.pt': b'finished best', 'metrics.jsonl': b'{"iter": 4}\n'}
    argv = ['train.py', '--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
            '--eval_iters=2', f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=2']
    code = f"""
import runpy, sys
from pathlib import Path
import checkpoint
real = checkpoint.lock_run_dir
def lock_after_the_other_run_finished(out):
    for name, data in {finished!r}.items():   # the other run writes its files and ends here
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_bytes(data)
    return real(out)
checkpoint.lock_run_dir = lock_after_the_other_run_finished
sys.argv = {argv!r}
runpy.run_path('train.py', run_name='__main__')
"""
    r = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert 'already holds a training run' in one_error_line(r)
    assert {n: (out / n).read_bytes() for n in finished} == finished


def test_02b_overwrite_and_failed_runs_delete_only_the_toolkits_files(char_data, tmp_path):
    """--overwrite=True deletes the run's files and nothing else in the folder; a run refused in a folder the user
    made leaves that folder as it was; one refused in a folder it created leaves no folder."""
    out = tmp_path / 'users'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2'])
    r = run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2',
                   '--overwrite=True'])
    assert 'kept what is not a run file: notes.txt' in r.stdout and (out / 'notes.txt').read_text() == 'keep me'
    empty = tmp_path / 'empty_user_folder'
    empty.mkdir()
    one_error_line(run_train([f'--data_dir={tmp_path / "no_data"}', f'--out_dir={empty}'], check=False))
    assert empty.is_dir()
    one_error_line(run_train([f'--data_dir={tmp_path / "no_data"}', f'--out_dir={tmp_path / "new"}'], check=False))
    assert not (tmp_path / 'new').exists()


# ----------------------------------------------------------------------------- 3: resume keeps the run's shape

@pytest.mark.parametrize('args,keys', [
    (['--arch=encoder'], ['arch']),
    (['--block_size=32'], ['block_size']),
    (['--n_layer=2', '--n_embd=64'], ['n_layer', 'n_embd']),
    (['--mask_rate=0.5'], ['mask_rate']),
])
def test_03_resume_refuses_a_new_shape_or_objective(run_dir, char_data, tmp_path, args, keys):
    out = copy_run(run_dir, tmp_path / 'run')
    before = files_of(out)
    line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--init_from=resume',
                                     '--max_iters=6', *args], check=False))
    assert 'cannot change' in line and all(f'--{k}' in line for k in keys)
    assert files_of(out) == before


def test_03b_resume_takes_the_runs_configuration_and_what_may_change(run_dir, tmp_path):
    """Resumed without its config file, the run keeps its own shape and options (block_size 16, not train.py's
    256); max_iters and the learning rate, which may change on resume, are taken from the command line."""
    out = copy_run(run_dir, tmp_path / 'run')
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=6', '--learning_rate=1e-3',
            '--device=cpu', '--num_threads=1')
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert ck['iter_num'] == 6 and ck['config']['block_size'] == 16 and ck['config']['n_embd'] == 32
    assert ck['config']['learning_rate'] == 1e-3 and ck['config']['max_iters'] == 6


# ----------------------------------------------------------------------------- 4: no remote code

def _hf_folder_with_remote_code(path, marker):
    from hf_encoder import build_tiny
    text = path.parent / 'text.txt'
    text.write_text('a-na be-li2-ia qi2-bi2-ma\num-ma ARAD-ka-a-ma\n' * 20, encoding='utf-8')
    build_tiny(path, text_file=str(text), vocab=60, d=16, layers=1, heads=2)
    cfg = json.loads((path / 'config.json').read_text())
    cfg['auto_map'] = {'AutoConfig': 'evil.EvilConfig', 'AutoModelForMaskedLM': 'evil.EvilModel'}
    (path / 'config.json').write_text(json.dumps(cfg))
    (path / 'evil.py').write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


def test_04_remote_code_of_a_model_is_refused_and_never_runs(tmp_path, akk):
    pytest.importorskip('transformers')
    data, _ = akk
    marker = tmp_path / 'pwned'
    _hf_folder_with_remote_code(tmp_path / 'hf', marker)
    r = run_train(['--arch=hf', f'--init_from=hf:{tmp_path / "hf"}', f'--data_dir={data}', '--dataset=akkadian',
                   f'--out_dir={tmp_path / "out"}', '--max_iters=1'], check=False)
    assert 'refused' in one_error_line(r) and 'auto_map' in r.stderr
    r = run('hf_encoder.py', 'audit', f'--model={tmp_path / "hf"}', f'--data_dir={data}', stdin='y\ny\n')
    assert 'refused' in one_error_line(r)
    # a checkpoint whose stored config names custom code
    ck = {'model': {}, 'config': {'data_dir': str(data)}, 'iter_num': 0, 'best_val_loss': 0.0,
          'model_args': {'arch': 'hf', 'hf_config': json.dumps({'model_type': 'bert', 'auto_map': {'AutoConfig': 'evil.X'}}),
                         'hf_tokenizer': {}, 'sign_pieces': [[1]], 'n_lead': 1, 'mask_sign': 0, 'piece_specials': {},
                         'block_size': 8, 'vocab_size': 1}}
    (tmp_path / 'ck').mkdir()
    torch.save(ck, tmp_path / 'ck' / 'ckpt.pt')
    r = run('evaluate.py', f'--out_dir={tmp_path / "ck"}', stdin='y\ny\n')
    assert 'refused' in one_error_line(r) and 'custom code' in r.stderr
    assert not marker.exists()


def test_04b_every_transformers_load_passes_trust_remote_code_false():
    """Every from_pretrained / from_config call in the repository's code (its syntax tree: a usage snippet in a
    string, such as export.py's model card for the people who load an exported model, is not a call) passes
    trust_remote_code=False, and no call passes True."""
    import ast
    calls = 0
    for p in sorted(REPO.glob('**/*.py')):
        if 'tests' in p.parts or '.git' in p.parts or any(part.startswith('.') for part in p.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding='utf-8'))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            trc = [k.value for k in node.keywords if k.arg == 'trust_remote_code']
            assert not any(isinstance(v, ast.Constant) and v.value is True for v in trc), f"{p.name}:{node.lineno}"
            if node.func.attr in ('from_pretrained', 'from_config'):
                calls += 1
                assert trc and isinstance(trc[0], ast.Constant) and trc[0].value is False, f"{p.name}:{node.lineno}"
    assert calls >= 8


# ----------------------------------------------------------------------------- 5: the restoration cache

def test_05_restoration_cache_is_keyed_by_the_data_and_the_checkpoint(akk, tmp_path, monkeypatch, capsys):
    import restoration
    from checkpoint import data_fingerprints, load_run
    data, out = akk
    model, ckpt, _ = load_run(out)
    fp = lambda d: data_fingerprints(d)['data']
    fits = []
    real_fit = restoration.fit_product_weights
    monkeypatch.setattr(restoration, 'fit_product_weights', lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    cache = tmp_path / 'cache'
    cache.mkdir()
    key = restoration.restore_cache_key(out / 'ckpt.pt', ckpt, fp(data))
    restoration.restoration_scorers(model, data, 3, cache_dir=cache, cache_key=key, verbose=False)
    restoration.restoration_scorers(model, data, 3, cache_dir=cache, cache_key=key, verbose=False)
    assert len(fits) == 1  # reused while nothing changed
    # another checkpoint file (a later save, an --overwrite=True run) or other data: another key, fitted again
    os.utime(out / 'ckpt.pt', ns=(1, 1))
    key2 = restoration.restore_cache_key(out / 'ckpt.pt', ckpt, fp(data))
    other = copy_run(data, tmp_path / 'other_data')
    meta = json.loads((other / 'meta.json').read_text())
    meta['source'] = 'other'
    (other / 'meta.json').write_text(json.dumps(meta))
    key3 = restoration.restore_cache_key(out / 'ckpt.pt', ckpt, fp(other))
    assert len({json.dumps(k, sort_keys=True) for k in (key, key2, key3)}) == 3
    restoration.restoration_scorers(model, data, 3, cache_dir=cache, cache_key=key2, verbose=False)
    assert len(fits) == 2 and json.loads((cache / 'restore.json').read_text())['key'] == key2
    from checkpoint import RUN_FILES
    assert 'restore.json' in RUN_FILES  # --overwrite=True deletes it with the run


def test_05b_a_corrupt_restore_json_is_fitted_again(akk, tmp_path, capsys):
    import restoration
    from checkpoint import data_fingerprints, load_run
    data, out = akk
    model, ckpt, _ = load_run(out)
    key = restoration.restore_cache_key(out / 'ckpt.pt', ckpt, data_fingerprints(data)['data'])
    for bad in ('{"key": [1, 2], "weights": {"mod', '[' * 100000, '{"key": null, "weights": {"model": "x"}}'):
        (tmp_path / 'restore.json').write_text(bad)
        _, info = restoration.restoration_scorers(model, data, 3, cache_dir=tmp_path, cache_key=key, verbose=False)
        assert set(info['weights']) == set(restoration.RESTORE_EXPERTS) and 'fitting' in capsys.readouterr().out
        assert json.loads((tmp_path / 'restore.json').read_text())['key'] == key


# ----------------------------------------------------------------------------- 6-7: options checked

@pytest.mark.parametrize('args,says', [
    (['--text=a-na x x x be-li2-ia', '--answer=a-na'], 'for a gap of 3'),
    (['--text=a-na x be-li2-ia ... ma', '--answer=|a'], 'empty'),
    (['--text=a-na x be-li2-ia', '--answer=zzqq'], 'not a sign of the vocabulary'),
    (['--text=a-na ... be-li2-ia', '--answer=a-na-a-na', '--max_gap_len=3'], '1..3'),
    (['--text=a-na x be-li2-ia', '--parallels=-1'], 'parallels'),
])
def test_06_restoration_options_are_checked(akk, args, says):
    _, out = akk
    assert says in one_error_line(run('sample.py', f'--out_dir={out}', '--beam=2', '--candidates=2', *args))


@pytest.mark.parametrize('script,extra', [('evaluate.py', []), ('sample.py', ['--max_new_tokens=2']),
                                          ('interpret.py', [])])
@pytest.mark.parametrize('device', ['nonsense', 'mps', 'cuda:7'])
def test_07_a_bad_device_is_named_not_reported_as_a_corrupt_checkpoint(run_dir, script, extra, device):
    if device != 'nonsense' and ((device == 'mps' and torch.backends.mps.is_available()) or
                                 (device.startswith('cuda') and torch.cuda.device_count() > 7)):
        pytest.skip('this machine has that device')
    line = one_error_line(run(script, f'--out_dir={run_dir}', f'--device={device}', *extra))
    assert 'device' in line and 'corrupt' not in line


# ----------------------------------------------------------------------------- 8: options are never dropped

def test_08_compare_evaluates_with_every_option_given(run_dir, tmp_path):
    a, b = copy_run(run_dir, tmp_path / 'a'), copy_run(run_dir, tmp_path / 'b')
    r = run('evaluate.py', f'--compare={a},{b}', '--split=val', '--max_tokens=64', '--batch_size=2',
            f'--plot={tmp_path / "cmp.png"}')
    assert r.returncode == 0, r.stderr[-2000:]
    for d in (a, b):
        res = json.loads((d / 'eval.json').read_text())
        assert 'val_loss' in res and not any(k.startswith('test_') for k in res)  # --split=val was used
    r = run('evaluate.py', f'--compare={a},{b}', '--split=test', f'--plot={tmp_path / "cmp.png"}')
    assert 'apply only to runs evaluated now' in r.stdout  # an existing eval.json is shown, and said to be


def test_08b_bench_iters_zero_is_refused_at_once(char_data):
    t0 = time.time()
    r = run('bench.py', f'--data_dir={char_data}', '--device=cpu', '--bench_iters=0', timeout=60)
    assert 'bench_iters' in one_error_line(r) and time.time() - t0 < 60


# ----------------------------------------------------------------------------- 9-10

def test_09_an_infinite_learning_rate_is_refused_and_a_diverged_run_fails(char_data, tmp_path):
    line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "inf"}',
                                     '--learning_rate=1e999'], check=False))
    assert 'finite' in line and not (tmp_path / 'inf').exists()
    r = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "huge"}', '--learning_rate=1e30',
                   '--warmup_iters=0', *ARGS], check=False)
    assert 'learning_rate' in one_error_line(r)
    last = tmp_path / 'huge' / 'last.pt'
    if last.exists():  # whatever was saved holds finite weights only
        assert all(torch.isfinite(v).all() for v in torch.load(last, weights_only=True)['model'].values())


def test_10_a_word_table_saved_by_excel_with_a_byte_order_mark_is_read(tmp_path):
    from prepare.akkadian import parse_word_table
    plain = parse_word_table(FIX / 'words.csv')
    bom = tmp_path / 'words.csv'
    bom.write_bytes(b'\xef\xbb\xbf' + (FIX / 'words.csv').read_bytes().replace(b'\n', b'\r\n'))
    assert parse_word_table(bom) == plain and plain


# ----------------------------------------------------------------------------- 11: one line, not a traceback

@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads the caught-signal mask from /proc')
def test_11a_a_second_sigterm_stops_at_once_with_one_line_and_143(char_data, tmp_path):
    """The first SIGTERM asks for a save at the end of the step; a second (here during the long first evaluation)
    stops at once: one line, exit 143, the shell's status for SIGTERM."""
    cmd = [sys.executable, 'train.py', '--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16',
           '--batch_size=4', '--num_threads=1', f'--data_dir={char_data}', f'--out_dir={tmp_path / "run"}',
           '--eval_iters=50000', '--max_iters=4']
    p = subprocess.Popen(cmd, cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = Path(f'/proc/{p.pid}/status')
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:  # until the run catches SIGTERM (the kernel's SigCgt mask)
        caught = [l for l in status.read_text().splitlines() if l.startswith('SigCgt:')] if status.exists() else []
        if caught and int(caught[0].split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # inside the first evaluation (50,000 batches)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    r = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
    assert p.returncode == 143 and 'a second SIGTERM' in one_error_line(r)
    assert not list((tmp_path / 'run').glob('.*.tmp'))


def _file_size_limit(n):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails (EFBIG), as on a full disk
    return limit


def test_11b_a_full_disk_while_training_is_one_line(char_data, tmp_path):
    out = tmp_path / 'full'
    r = subprocess.run([sys.executable, 'train.py', '--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32',
                        '--block_size=16', '--batch_size=4', '--eval_iters=2', f'--data_dir={char_data}',
                        f'--out_dir={out}', *ARGS], cwd=REPO, env=train_env(), capture_output=True, text=True,
                       timeout=300, preexec_fn=_file_size_limit(60_000))
    assert 'could not write' in one_error_line(r)
    assert not list(out.glob('.*.tmp')) and not (out / 'ckpt.pt').exists()


def test_11c_a_full_disk_while_preparing_is_one_line(tmp_path):
    text = tmp_path / 'book.txt'
    text.write_text(('To be, or not to be, that is the question.\n' * 40 + '\n') * 60, encoding='utf-8')
    out = tmp_path / 'data'
    r = run('prepare/shakespeare.py', f'--input={text}', f'--out={out}', preexec_fn=_file_size_limit(20_000))
    assert 'size limit' in one_error_line(r) or 'could not write' in r.stderr
    assert not out.exists() and not list(tmp_path.glob('.data.*'))


def test_11d_json_nested_100k_deep_is_one_line(tmp_path):
    deep = tmp_path / 'deep.json'
    deep.write_text('{"cdl": ' + '[' * 100_000 + ']' * 100_000 + '}')
    r = run('prepare/akkadian.py', f'--input={deep}', f'--out={tmp_path / "data"}')
    assert 'nested deeper' in one_error_line(r) and not (tmp_path / 'data').exists()
    from corpus import loads_json
    with pytest.raises(ValueError):
        loads_json('[' * 300 + ']' * 300)
    assert loads_json('[' * 50 + ']' * 50)


def test_11e_a_corrupt_restore_json_does_not_stop_sample(akk, tmp_path):
    data, out = akk
    run_copy = copy_run(out, tmp_path / 'run')
    (run_copy / 'restore.json').write_text('{"key": ')
    r = run('sample.py', f'--out_dir={run_copy}', '--text=a-na x be-li2-ia', '--beam=2', '--candidates=2')
    assert r.returncode == 0 and 'fitting the restoration weights again' in r.stdout, r.stderr[-2000:]
    assert json.loads((run_copy / 'restore.json').read_text())['weights']


@pytest.mark.parametrize('change,says', [
    (lambda m: m.update(vocab_size=10 ** 12), 'vocab_size'),
    (lambda m: m.update(vocab_size='65'), 'vocab_size'),
    (lambda m: m['special_ids'].update({'[MASK]': -1}), '[MASK]'),
    (lambda m: m['special_ids'].update({'[MASK]': 70000}), '[MASK]'),
    (lambda m: m.update(tokenizer_file='../../../etc/passwd', tokenizer='hf'), 'tokenizer_file'),
    (None, 'not readable JSON'),
])
def test_11f_a_damaged_meta_json_is_one_line_before_the_run_folder(char_data, tmp_path, change, says):
    data = copy_run(char_data, tmp_path / 'data')
    if change is None:
        (data / 'meta.json').write_bytes((data / 'meta.json').read_bytes()[:50])
    else:
        meta = json.loads((data / 'meta.json').read_text())
        change(meta)
        (data / 'meta.json').write_text(json.dumps(meta))
    out = tmp_path / 'run'
    line = one_error_line(run_train([f'--data_dir={data}', f'--out_dir={out}', *ARGS], check=False))
    assert says in line and 'prepare' in line and not out.exists()


def test_11g_token_ids_beyond_the_vocabulary_are_one_line_before_the_run_folder(char_data, tmp_path):
    import numpy as np
    data = copy_run(char_data, tmp_path / 'data')
    ids = np.fromfile(data / 'val.bin', dtype=np.uint16)
    ids[5] = 9999
    ids.tofile(data / 'val.bin')
    out = tmp_path / 'run'
    line = one_error_line(run_train([f'--data_dir={data}', f'--out_dir={out}', *ARGS], check=False))
    assert '9999' in line and 'vocabulary' in line and not out.exists()


@pytest.mark.parametrize('args,says', [(['--split=nonsense'], 'split'), (['--batch_size=0'], 'batch_size'),
                                       (['--max_tokens=-1'], 'max_tokens')])
def test_11h_bad_evaluate_options_are_one_line(run_dir, args, says):
    assert says in one_error_line(run('evaluate.py', f'--out_dir={run_dir}', *args))


def test_11i_bad_audit_options_are_one_line(akk, char_data, tmp_path):
    pytest.importorskip('transformers')
    data, _ = akk
    model = tmp_path / 'hf'
    text = tmp_path / 'text.txt'
    text.write_text('a-na be-li2-ia qi2-bi2-ma\n' * 20, encoding='utf-8')
    from hf_encoder import build_tiny
    build_tiny(model, text_file=str(text), vocab=40, d=16, layers=1, heads=2)
    folder = tmp_path / 'a_folder'
    folder.mkdir()
    for args, says in ((['--split=x'], 'split'), ([f'--data_dir={char_data}'], 'sign-level'),
                       ([f'--out={folder}'], 'directory')):
        line = one_error_line(run('hf_encoder.py', 'audit', f'--model={model}', f'--data_dir={data}', *args))
        assert says in line
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize('args,says', [(['--heads=3'], 'multiple'), (['--layers=-1'], 'layers'), (['--d=0'], '--d'),
                                       (['--text_file=/nonexistent/x.txt'], 'not found')])
def test_11j_bad_tiny_model_options_are_one_line(args, says, tmp_path, akk):
    pytest.importorskip('transformers')
    data, _ = akk
    out = tmp_path / 'tiny'
    assert says in one_error_line(run('hf_encoder.py', 'tiny', f'--out={out}', f'--data_dir={data}', *args))
    assert not out.exists()


def test_11j2_tiny_never_writes_into_a_users_folder(tmp_path, akk):
    """Only a new or empty folder, or one hf_encoder.py tiny wrote (its mark), is written: a user's folder holding
    nothing but a config.json of theirs is refused and kept."""
    pytest.importorskip('transformers')
    from hf_encoder import build_tiny
    data, _ = akk
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'config.json').write_text('{"mine": 1}')
    one_error_line(run('hf_encoder.py', 'tiny', f'--out={tmp_path / "mine"}', f'--data_dir={data}'))
    assert [p.name for p in (tmp_path / 'mine').iterdir()] == ['config.json']
    assert (tmp_path / 'mine' / 'config.json').read_text() == '{"mine": 1}'
    for _ in range(2):  # its own folder is rebuilt in place
        build_tiny(tmp_path / 'tiny', data, vocab=40, d=16, layers=1, heads=2)
    assert (tmp_path / 'tiny' / 'config.json').exists() and not list(tmp_path.glob('.tiny.*'))


def test_11k_interpret_k_beyond_the_latents_is_one_line(akk, tmp_path):
    _, out = akk
    r = run('interpret.py', f'--out_dir={out}', '--expansion=2', '--k=100000', '--sae_steps=5',
            f'--result_dir={tmp_path / "res"}')
    assert '--k=100000' in one_error_line(r) and not (tmp_path / 'res').exists()


# ----------------------------------------------------------------------------- 12: resources

def test_12a_an_archive_member_beyond_the_size_limit_is_refused_unread(tmp_path):
    import download
    bomb = tmp_path / 'bomb.zip'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as z:
        with z.open('proj/corpusjson/P1.json', 'w', force_zip64=True) as f:
            chunk = b' ' * (1 << 20)
            for _ in range((download.MAX_MEMBER_BYTES >> 20) + 8):
                f.write(chunk)
    assert bomb.stat().st_size < 2 << 20
    r = run('prepare/akkadian.py', f'--input={bomb}', f'--out={tmp_path / "data"}',
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)))
    assert 'would unpack to' in one_error_line(r) and not (tmp_path / 'data').exists()


def test_12b_a_checkpoint_claiming_an_absurd_shape_fails_before_allocating(run_dir, tmp_path):
    """n_layer=10**6 in model_args: one line, within 3 GiB of address space (building it would take gigabytes);
    n_layer=50 (sane, but not the weights' shape) is found on the meta device, without building it."""
    for n_layer, says in ((10 ** 6, 'sane bound'), (50, 'do not fit')):
        out = copy_run(run_dir, tmp_path / f'run{n_layer}')
        ck = torch.load(out / 'ckpt.pt', weights_only=True)
        ck['model_args']['n_layer'] = n_layer
        torch.save(ck, out / 'ckpt.pt')
        r = run('evaluate.py', f'--out_dir={out}',
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)))
        assert says in one_error_line(r)


def test_12c_a_warning_quotes_a_short_excerpt_of_a_huge_word(capsys):
    from atf import parse_atf_line
    parse_atf_line('a-na {d' + 'x' * 500_000 + ' be-li2', where='big.atf:1')
    err = capsys.readouterr().err
    assert 'unclosed' in err and len(err) < 1000 and '500,0' in err


def test_13_stored_tokenizer_files_are_written_only_inside_their_folder(tmp_path):
    from hf_encoder import _tensors_to_files
    t = torch.frombuffer(bytearray(b'x'), dtype=torch.uint8)
    (tmp_path / 'in').mkdir()
    for name in ('../escaped.json', '/tmp/abs.json', '..', 'a/b.json'):
        with pytest.raises(SystemExit):
            _tensors_to_files({name: t}, tmp_path / 'in')
    assert not (tmp_path / 'escaped.json').exists() and list((tmp_path / 'in').iterdir()) == []
    _tensors_to_files({'tokenizer.json': t}, tmp_path / 'in')
    assert (tmp_path / 'in' / 'tokenizer.json').read_bytes() == b'x'


# ----------------------------------------------------------------------------- the general guards behind the fixes

def test_guard_every_float_option_must_be_finite():
    from configurator import apply_config, ConfigError
    for text in ('1e999', '-1e999'):
        with pytest.raises(ConfigError, match='finite'):
            apply_config({'learning_rate': 6e-4}, [f'--learning_rate={text}'])
    with pytest.raises(ConfigError, match='finite'):
        apply_config({'learning_rate': 6e-4}, [f'--learning_rate={10 ** 400}'])
    assert apply_config({'learning_rate': 6e-4}, ['--learning_rate=1e-3'])['learning_rate'] == 1e-3


@pytest.mark.parametrize('args,says', [(['--norm=nonsense'], 'norm'), (['--pos=rope2'], 'pos'), (['--d_kv=-1'], 'd_kv'),
                                       (['--arch=atlas', '--mem_chunk=0'], 'mem_chunk'), (['--seed=-1'], 'seed'),
                                       (['--n_layer=5000'], 'sane bound'), (['--curriculum_phases=a,b'], 'curriculum'),
                                       (['--out_dir= '], 'out_dir')])
def test_guard_model_options_a_model_would_silently_misread_are_one_line(char_data, tmp_path, args, says):
    """norm/pos/mlp are read with ==: an unknown value used to pick the other branch without a word."""
    out = tmp_path / 'never'
    line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={out}', *args], check=False))
    assert says in line and not out.exists()


def test_guard_one_validated_meta_loader():
    from corpus import meta_problem
    good = {'vocab_size': 3, 'tokenizer': 'vocab', 'vocab': ['a', 'b', 'c'], 'n_specials': 1,
            'special_ids': {'[PAD]': 0}, 'sep_id': 0}
    assert meta_problem(good) is None
    for bad in ([], {**good, 'vocab_size': True}, {**good, 'vocab': ['a']}, {**good, 'sep_id': 3},
                {**good, 'special_ids': {'[MASK]': '1'}}, {**good, 'aux': {'../x': 'uint8'}}, {**good, 'dtype': 'int64'},
                {**good, 'tokenizer': 'pickle'}, {**good, 'word_start': [1]},
                {**good, 'presegment': {'lexicon_file': '/etc/passwd'}}):
        assert meta_problem(bad), bad


def test_guard_machine_errors_are_one_line_in_every_script():
    import errno as E
    from corpus import environment_error
    assert 'disk is full' in environment_error(OSError(E.ENOSPC, 'No space left on device', 'x.bin'))
    assert 'disk is full' in environment_error(Exception('IO error: No space left on device (os error 28)'))
    assert 'out of memory' in environment_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert 'out of memory' in environment_error(MemoryError())
    assert environment_error(KeyError('a bug')) is None and environment_error(OSError(E.ENOENT, 'missing')) is None
    code = "import corpus; raise OSError(28, 'No space left on device', 'big.bin')"
    r = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=train_env(), capture_output=True, text=True)
    assert 'disk is full (big.bin)' in one_error_line(r)


def test_guard_error_lines_are_cut_whatever_they_quote(run_dir):
    line = one_error_line(run('sample.py', f'--out_dir={run_dir}', '--device=' + 'x' * 100_000))
    assert len(line) < 800
    line = one_error_line(run('sample.py', f'--out_dir={run_dir}', '--num_samples=' + 'y' * 100_000))
    assert len(line) < 800


@pytest.mark.parametrize('args', [['--sense_edit=t:*=0'], ['--text=the [MASK]'], ['--beam=3'], ['--answer=a']])
def test_guard_sample_refuses_an_option_its_mode_never_reads(run_dir, args):
    """A gpt checkpoint generates text: an option of another mode (sense edits, infilling, restoration) would be
    dropped without a word."""
    line = one_error_line(run('sample.py', f'--out_dir={run_dir}', *args))
    assert 'does not apply' in line or 'do(es) not apply' in line


def test_guard_evaluate_names_the_options_no_metric_reads(run_dir, tmp_path):
    out = copy_run(run_dir, tmp_path / 'run')
    r = run('evaluate.py', f'--out_dir={out}', '--n_spans=3', '--split=val')
    assert r.returncode == 0 and '--n_spans did not apply' in r.stderr, r.stderr[-2000:]


def test_guard_any_unreadable_checkpoint_is_one_line(char_data, tmp_path):
    for name, data in (('text.pt', b'not a checkpoint at all\n' * 10), ('empty.pt', b''), ('zip.pt', b'PK\x03\x04junk')):
        (tmp_path / name).write_bytes(data)
        line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "o"}',
                                         f'--init_from={tmp_path / name}'], check=False))
        assert 'corrupt' in line or 'refused' in line
