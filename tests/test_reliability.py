"""Nothing lost, nothing silent (docs/reliability.md): a finished run is never overwritten by accident, one
out_dir holds one live run, a checkpoint is only used with the data it was trained on, truncated or unsafe
checkpoints and half-written metrics are handled with one line, and bad options fail before anything is
written. Fault injection on tiny runs, CPU, subprocesses."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoint import lock_run_dir, read_metrics, save_atomic
from conftest import REPO, make_documents, run_train, train_env, write_char_dataset

ARGS = ['--max_iters=4', '--eval_interval=2']


def run(script, *args, timeout=300):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=train_env(), capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(r):
    """The run failed with one line that says what to do, and no traceback."""
    assert r.returncode != 0, r.stdout[-1000:]
    assert 'Traceback' not in r.stderr, r.stderr[-2000:]
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith(('error:', 'config error:')), r.stderr[-2000:]
    return lines[-1]


@pytest.fixture(scope='module')
def run_dir(char_data, tmp_path_factory):
    """A finished 4-iteration run with its eval.json."""
    out = tmp_path_factory.mktemp('rel') / 'run'
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', *ARGS])
    r = run('evaluate.py', f'--out_dir={out}', '--device=cpu')
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def snapshot(out):
    return {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file() and p.name != '.lock'}


@pytest.fixture(scope='module')
def other_data(tmp_path_factory):
    """Data with the same character tokenizer as char_data but other documents, and data with another tokenizer."""
    root = tmp_path_factory.mktemp('other')
    docs = make_documents()
    same_tok = {k: v + 'the king is not my lord.\n' for k, v in docs.items()}  # longer texts of the same characters
    write_char_dataset(root / 'same_tok', same_tok)
    write_char_dataset(root / 'other_tok', {k: v.upper() for k, v in docs.items()})
    return root / 'same_tok', root / 'other_tok'


# ----------------------------------------------------------------------------- a finished run stays as it is

def test_second_run_into_a_finished_out_dir_refuses_and_touches_nothing(run_dir, char_data):
    before = snapshot(run_dir)
    r = run_train([f'--data_dir={char_data}', f'--out_dir={run_dir}', *ARGS], check=False)
    line = one_error_line(r)
    assert '--init_from=resume' in line and '--overwrite=True' in line
    assert snapshot(run_dir) == before


def test_overwrite_starts_over(char_data, tmp_path):
    out = tmp_path / 'run'
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=3'])
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2', '--overwrite=True'])
    assert torch.load(out / 'last.pt', weights_only=True)['iter_num'] == 2
    assert max(r['iter'] for r in read_metrics(out / 'metrics.jsonl')) == 2  # the old rows are gone


def test_a_locked_out_dir_refuses_a_second_run(char_data, tmp_path):
    out = tmp_path / 'busy'
    lock = lock_run_dir(out)  # as a live training run holds it
    try:
        r = run_train([f'--data_dir={char_data}', f'--out_dir={out}', *ARGS], check=False)
        assert 'in use by another training run' in one_error_line(r) and str(os.getpid()) in r.stderr
        assert sorted(p.name for p in out.iterdir()) == ['.lock']  # it wrote nothing
    finally:
        lock.close()
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', *ARGS])  # the lock went with its holder


def test_temp_files_are_unique_and_stale_ones_are_removed(tmp_path, char_data):
    out = tmp_path / 'tmp'
    out.mkdir()
    stale = out / '.last.pt.abc123.tmp'  # what a writer killed mid-save leaves
    stale.write_bytes(b'partial')
    save_atomic({'a': torch.zeros(2)}, out / 'x.pt')
    assert torch.load(out / 'x.pt', weights_only=True)['a'].shape == (2,) and not list(out.glob('.x.pt*'))
    (out / 'x.pt').unlink()
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', *ARGS])
    assert not stale.exists() and not list(out.glob('.*.tmp'))


# ----------------------------------------------------------------------------- a checkpoint and its data

def test_evaluate_and_sample_refuse_other_data(run_dir, other_data):
    same_tok, other_tok = other_data
    before = snapshot(run_dir)
    line = one_error_line(run('evaluate.py', f'--out_dir={run_dir}', f'--data_dir={same_tok}'))
    assert 'not the data' in line and '--allow_other_data=True' in line
    line = one_error_line(run('sample.py', f'--out_dir={run_dir}', f'--data_dir={same_tok}', '--max_new_tokens=5'))
    assert 'not the data' in line
    # another tokenizer is refused even when other data is allowed: its ids would mean other characters
    line = one_error_line(run('evaluate.py', f'--out_dir={run_dir}', f'--data_dir={other_tok}', '--allow_other_data=True'))
    assert 'another tokenizer' in line
    assert snapshot(run_dir) == before
    # allowed, with the same tokenizer: the result goes beside eval.json, not over it
    r = run('evaluate.py', f'--out_dir={run_dir}', f'--data_dir={same_tok}', '--allow_other_data=True')
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(run_dir)['eval.json'] == before['eval.json']
    assert 'val_loss' in json.loads((run_dir / 'eval_same_tok.json').read_text())
    (run_dir / 'eval_same_tok.json').unlink()


def test_resume_refuses_changed_data(run_dir, other_data, tmp_path):
    import shutil
    out = tmp_path / 'copy'
    shutil.copytree(run_dir, out)
    r = run_train([f'--data_dir={other_data[0]}', f'--out_dir={out}', '--max_iters=6', '--init_from=resume'], check=False)
    assert 'not the data' in one_error_line(r)


# ----------------------------------------------------------------------------- damaged files

def test_truncated_checkpoint_is_one_line(run_dir, tmp_path, char_data):
    import shutil
    out = tmp_path / 'trunc'
    shutil.copytree(run_dir, out)
    data = (out / 'ckpt.pt').read_bytes()
    (out / 'ckpt.pt').write_bytes(data[:len(data) // 2])
    line = one_error_line(run('evaluate.py', f'--out_dir={out}'))
    assert 'truncated or corrupt' in line
    (out / 'last.pt').write_bytes(data[:100])
    assert 'truncated or corrupt' in one_error_line(run_train([f'--out_dir={out}', '--init_from=resume',
                                                               f'--data_dir={char_data}', '--max_iters=8'], check=False))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_unsafe_checkpoint_is_refused_and_never_executed(run_dir, tmp_path):
    import shutil
    out = tmp_path / 'evil'
    shutil.copytree(run_dir, out)
    marker = tmp_path / 'pwned'
    _Exploit.marker = marker
    ck = torch.load(out / 'ckpt.pt', weights_only=True)
    ck['config']['payload'] = _Exploit()
    with open(out / 'ckpt.pt', 'wb') as f:
        torch.save(ck, f, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    for r in (run('evaluate.py', f'--out_dir={out}'), run('sample.py', f'--out_dir={out}', '--max_new_tokens=3')):
        line = one_error_line(r)
        assert 'refused: not a checkpoint of this toolkit, or untrusted' in line
        assert 'weights_only=False' not in r.stderr
    assert not marker.exists()


def test_half_written_metrics_line_does_not_stop_resume_or_evaluate(run_dir, tmp_path, char_data):
    import shutil
    out = tmp_path / 'half'
    shutil.copytree(run_dir, out)
    with open(out / 'metrics.jsonl', 'a') as f:
        f.write('{"kind": "train", "iter": 5, "lo')  # a writer killed mid-line
    r = run('evaluate.py', f'--out_dir={out}')
    assert r.returncode == 0 and 'skipped its last line' in r.stderr, r.stderr[-2000:]
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=2', '--init_from=resume'])
    rows = read_metrics(out / 'metrics.jsonl')
    assert [r['iter'] for r in rows if r['kind'] == 'train'] == list(range(1, 7))
    # a bad line that is not the last is an error with its line number, not a traceback
    (out / 'bad.jsonl').write_text('{"iter": 1}\nnot json\n{"iter": 2}\n')
    with pytest.raises(SystemExit):
        read_metrics(out / 'bad.jsonl')


# ----------------------------------------------------------------------------- bad options: one line, nothing written

@pytest.mark.parametrize('args,says', [
    (['--arch=nonexistent'], 'unknown arch'),
    (['--batch_size=0'], 'batch_size'),
    (['--block_size=0'], 'block_size'),
    (['--learning_rate=-1'], 'learning_rate'),
    (['--dtype=float8'], 'unknown dtype'),
    (['--device=tpu'], 'unknown device'),
    (['--n_embd=100', '--n_head=6'], 'not a multiple of n_head'),
    (['--max_iters=0'], 'nothing to train'),
])
def test_bad_training_options_fail_with_one_line_before_writing(args, says, tmp_path, char_data):
    out = tmp_path / 'never'
    line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={out}', *args], check=False))
    assert says in line and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_device_cuda_without_cuda_is_one_line(tmp_path, char_data):
    line = one_error_line(run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "x"}', '--device=cuda'],
                                    check=False))
    assert '--device=cpu' in line


@pytest.mark.parametrize('args,says', [
    (['--num_samples=0'], 'num_samples'),
    (['--candidates=0'], 'candidates'),
    (['--beam=0'], 'beam'),
    (['--max_gap_len=0'], 'max_gap_len'),
    (['--start=FILE:/nonexistent/prompt.txt'], 'not found'),
])
def test_bad_sampling_options_fail_with_one_line(args, says, run_dir):
    assert says in one_error_line(run('sample.py', f'--out_dir={run_dir}', *args))


def test_float16_on_cpu_warns(tmp_path, char_data):
    r = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "f16"}', '--max_iters=1', '--dtype=float16'])
    assert 'float16 on a CPU' in r.stderr


def test_logs_get_plain_progress_lines_not_a_bar(tmp_path, char_data):
    """Captured output is not a terminal: periodic plain lines on stdout, no bar redraws (carriage returns)."""
    r = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "log"}', *ARGS])
    assert '\r' not in r.stdout + r.stderr
    assert [l.split(':')[0] for l in r.stdout.splitlines() if l.startswith('iter ') and 'tok/s' in l] == \
        [f'iter {i}/4' for i in range(1, 5)]


def test_bench_exits_nonzero_when_its_run_fails(char_data):
    r = run('bench.py', f'--data_dir={char_data}', '--device=cpu', '--n_embd=100', '--n_head=6', '--bench_iters=1',
            '--bench_warmup=1')
    assert r.returncode == 1 and 'failed' in r.stderr
