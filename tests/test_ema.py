"""EMA of the weights (train.py ema_decay): kept in float32 beside the model, updated after every optimizer
step that was taken, saved as ckpt['ema'] and resumed exactly; evaluate.py and sample.py load the EMA weights
by default (checkpoint.load_checkpoint, one place) and the raw ones with use_ema=False, and say which."""
import subprocess
import sys

import pytest
import torch

import evaluate
from checkpoint import load_checkpoint
from conftest import REPO, run_train, train_env, train_losses

N, K = 6, 3  # uninterrupted run of N iterations vs K, then resumed to N
MDLM = ['--arch=mdlm', '--cond_dim=16', '--pos=rope', '--bias=False', '--ema_decay=0.9']


@pytest.fixture(scope='module')
def ema_runs(char_data, tmp_path_factory):
    root = tmp_path_factory.mktemp('ema')
    common = [f'--data_dir={char_data}', *MDLM, f'--eval_interval={K}', f'--lr_decay_iters={N}']
    run_train(common + [f'--out_dir={root / "full"}', f'--max_iters={N}'])
    run_train(common + [f'--out_dir={root / "part"}', f'--max_iters={K}'])
    run_train(common + [f'--out_dir={root / "part"}', f'--max_iters={N}', '--init_from=resume'])
    return root / 'full', root / 'part'


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_ema_resumes_exactly(ema_runs):
    full, part = (load(d / 'last.pt') for d in ema_runs)
    assert full['iter_num'] == part['iter_num'] == N
    a, b = full['ema'], part['ema']
    params = {k for k in full['model'] if k in a}
    assert a.keys() == b.keys() == params and params  # one float32 entry per trained parameter
    for k in a:
        assert a[k].dtype == torch.float32
        # the same computation in both runs (one process, same shapes), compared to a tolerance like the weights
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), f"{k} differs by {(a[k] - b[k]).abs().max():.2e}"
    # it is an average, not a copy: with decay 0.9 over 6 steps the EMA lags the trained weights
    assert any(not torch.allclose(a[k], full['model'][k]) for k in a)
    la, lb = train_losses(ema_runs[0]), train_losses(ema_runs[1])
    assert all(lb[i] == pytest.approx(la[i], abs=1e-6) for i in range(1, N + 1))


def test_no_ema_key_without_ema_decay(char_data, tmp_path):
    run_train([f'--data_dir={char_data}', '--max_iters=1', f'--out_dir={tmp_path}'])
    assert 'ema' not in load(tmp_path / 'last.pt')


def test_load_checkpoint_picks_the_ema(ema_runs):
    path = ema_runs[0] / 'last.pt'
    ckpt = load(path)
    model, ck = load_checkpoint(path)
    assert ck['weights'] == 'ema'
    sd = model.state_dict()
    for k, v in ckpt['ema'].items():
        assert torch.equal(sd[k], v)  # a copy of the stored tensors, nothing computed
    raw, ck = load_checkpoint(path, use_ema=False)
    assert ck['weights'] == 'raw'
    assert all(torch.equal(v, ckpt['model'][k]) for k, v in raw.state_dict().items())


def test_evaluate_and_sample_use_the_ema_by_default(ema_runs, char_data, capsys):
    out = str(ema_runs[0])
    res_ema = evaluate.run_eval(out, 'last.pt', split='val', max_tokens=64, batch_size=4)
    assert 'weights: EMA' in capsys.readouterr().err
    res_raw = evaluate.run_eval(out, 'last.pt', split='val', max_tokens=64, batch_size=4, use_ema=False)
    assert 'weights: raw' in capsys.readouterr().err
    assert res_ema['ema_weights'] == 1 and res_raw['ema_weights'] == 0
    assert res_ema['val_nelbo'] != res_raw['val_nelbo']  # other weights, another number
    for flag, said in (([], 'weights: EMA'), (['--use_ema=False'], 'weights: raw')):
        r = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', '--ckpt_name=last.pt', '--steps=4',
                            '--num_samples=1', '--length=8', *flag], cwd=REPO, env=train_env(), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert said in r.stderr
