"""train.py end to end, in subprocesses on a tiny generated dataset: exact resume (with dropout, so the
RNG states matter), SIGTERM saving a resumable state, DDP (2 gloo processes) == one process with the
same total accumulation, checkpoints loading with weights_only, the non-finite guard."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import model as M
from checkpoint import load_checkpoint
from conftest import REPO, TINY, read_metrics, run_train, train_env, train_losses

N, K = 8, 4  # uninterrupted run of N iterations vs K, then resumed to N


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k} differs by {(a[k] - b[k]).abs().max():.2e}"


@pytest.fixture(scope='module')
def resume_runs(char_data, tmp_path_factory):
    """One uninterrupted run of N iterations and one of K iterations resumed to N (dropout > 0)."""
    root = tmp_path_factory.mktemp('resume')
    common = [f'--data_dir={char_data}', '--dropout=0.2', f'--eval_interval={K}', f'--lr_decay_iters={N}']
    run_train(common + [f'--out_dir={root / "full"}', f'--max_iters={N}'])
    run_train(common + [f'--out_dir={root / "part"}', f'--max_iters={K}'])
    part_k = torch.load(root / 'part' / 'last.pt', map_location='cpu', weights_only=True)
    r = run_train(common + [f'--out_dir={root / "part"}', f'--max_iters={N}', '--init_from=resume'])
    return root / 'full', root / 'part', part_k, r


def test_resume_continues_exactly(resume_runs):
    full, part, part_k, _ = resume_runs
    assert part_k['iter_num'] == K and part_k['data_position'] == K
    a, b = train_losses(full), train_losses(part)
    assert sorted(a) == sorted(b) == list(range(1, N + 1))
    for it in range(1, N + 1):
        assert b[it] == pytest.approx(a[it], abs=1e-6), f"iteration {it}: {b[it]} != {a[it]}"
    # the runs really trained, and with dropout (so the restored RNG state mattered)
    assert a[N] < a[1]
    assert json.loads(json.dumps(part_k['config']))['dropout'] == 0.2
    full_ckpt = torch.load(full / 'last.pt', map_location='cpu', weights_only=True)
    part_ckpt = torch.load(part / 'last.pt', map_location='cpu', weights_only=True)
    assert full_ckpt['iter_num'] == part_ckpt['iter_num'] == N
    assert_same_weights(full_ckpt['model'], part_ckpt['model'], atol=1e-6)
    # the optimizer moments continue too
    for sa, sb in zip(full_ckpt['optimizer']['state'].values(), part_ckpt['optimizer']['state'].values()):
        assert torch.allclose(sa['exp_avg_sq'], sb['exp_avg_sq'], atol=1e-9)
    # the resumed metrics.jsonl has exactly one row per iteration: nothing logged twice
    rows = [(r['kind'], r['iter']) for r in read_metrics(part)]
    assert len(rows) == len(set(rows))
    assert [r for r in rows if r[0] == 'eval'] == [('eval', 0), ('eval', K), ('eval', N)]


def test_checkpoint_contract_and_load_checkpoint(resume_runs, char_data):
    full = resume_runs[0]
    for name in ('last.pt', 'ckpt.pt'):
        ckpt = torch.load(full / name, map_location='cpu', weights_only=True)  # no pickled code
        assert {'model', 'optimizer', 'model_args', 'config', 'iter_num', 'best_val_loss', 'rng',
                'data_position'} <= set(ckpt)
    ckpt = torch.load(full / 'last.pt', map_location='cpu', weights_only=True)
    assert ckpt['model_args']['vocab_size'] == json.loads((char_data / 'meta.json').read_text())['vocab_size']
    model, ck = load_checkpoint(full / 'last.pt')
    assert not model.training and ck['iter_num'] == N
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt['model'][k])
    # an independently built model with the same weights gives the same logits
    ref = M.build_model(M.ModelConfig(**ckpt['model_args']))
    ref.load_state_dict(ckpt['model'])
    ref.eval()
    idx = torch.randint(0, ckpt['model_args']['vocab_size'], (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la = model(idx, all_logits=True)[0]
        lb = ref(idx, all_logits=True)[0]
        assert torch.equal(la, lb)  # the same weights, shapes and kernels in one process: bitwise equal
        assert torch.equal(model(idx, all_logits=True)[0], la)  # eval mode: dropout off, repeatable
    # the metrics contract
    rows = read_metrics(full)
    evals = [r for r in rows if r['kind'] == 'eval']
    trains = [r for r in rows if r['kind'] == 'train']
    assert all({'iter', 'train_loss', 'val_loss', 'lr'} <= set(r) for r in evals)
    assert all({'iter', 'loss', 'lr', 'tokens_per_s'} <= set(r) for r in trains)
    # best val loss is the minimum over the evaluations after the start
    assert ckpt['best_val_loss'] == pytest.approx(min(r['val_loss'] for r in evals if r['iter'] > 0))
    # warm-up then cosine decay to min_lr = lr / 10 at lr_decay_iters = N
    lrs = {r['iter']: r['lr'] for r in trains}
    assert lrs[1] == pytest.approx(3e-3 / 3) and lrs[2] == pytest.approx(3e-3 * 2 / 3)
    assert lrs[N] == pytest.approx(3e-4 + 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 5 / 6)).item()) * 2.7e-3)


def test_resume_without_checkpoint_fails_cleanly(tmp_path, char_data):
    r = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "none"}', '--init_from=resume'],
                  check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith('error:') and 'last.pt' in r.stderr


def test_sigterm_saves_a_resumable_state(tmp_path, char_data):
    out = tmp_path / 'sig'
    common = [f'--data_dir={char_data}', '--eval_interval=100000', '--dropout=0.1', '--lr_decay_iters=1000']
    cmd = [sys.executable, 'train.py', *TINY, '--num_threads=1', f'--out_dir={out}', '--max_iters=1000000', *common]
    p = subprocess.Popen(cmd, cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            m = out / 'metrics.jsonl'
            if m.exists() and sum('"train"' in l for l in m.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-2000:]
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143, stderr[-2000:]  # a stopped run is not a finished one: `train && evaluate` stops
    assert 'caught SIGTERM' in stdout + stderr
    ckpt = torch.load(out / 'last.pt', map_location='cpu', weights_only=True)
    reached = max(train_losses(out))
    assert ckpt['iter_num'] == reached >= 3
    assert ckpt['data_position'] == reached  # one micro-batch per iteration
    assert not list(out.glob('.*.tmp'))  # no temp file left behind
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values())
    # it resumes exactly: the same losses as a run that was never stopped
    run_train([f'--out_dir={out}', f'--max_iters={reached + 2}', '--init_from=resume', *common])
    run_train([f'--out_dir={tmp_path / "straight"}', f'--max_iters={reached + 2}', *common])
    a, b = train_losses(tmp_path / 'straight'), train_losses(out)
    assert sorted(a) == sorted(b) == list(range(1, reached + 3))
    for it in a:
        assert b[it] == pytest.approx(a[it], abs=1e-6), f"iteration {it}: {b[it]} != {a[it]}"


def test_nonfinite_guard_stops_with_saved_state(tmp_path, char_data):
    out = tmp_path / 'nan'
    r = run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--learning_rate=1e30', '--warmup_iters=0',
                   '--max_iters=50', '--eval_interval=1000', '--max_nonfinite=3'], check=False)
    assert r.returncode == 1
    # (the message may follow tqdm's bar on the same stderr line: see the report on train.py)
    err = [l[l.index('error:'):] for l in r.stderr.splitlines() if 'error:' in l]
    assert len(err) == 1 and 'non-finite' in err[0] and 'learning_rate' in err[0]
    ckpt = torch.load(out / 'last.pt', map_location='cpu', weights_only=True)
    assert ckpt['nonfinite_total'] == 3
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values())  # the skipped steps changed nothing
    rows = [x for x in read_metrics(out) if x['kind'] == 'train']
    assert rows[-1]['nonfinite_skipped'] == 2 and ckpt['iter_num'] == len(rows)


# ----------------------------------------------------------------------------- DDP

DDP_ARCHS = {
    'gpt': [],
    'encoder': ['--arch=encoder', '--bias=False', '--norm=rmsnorm', '--mlp=geglu', '--pos=rope', '--d_kv=8',
                '--doc_mask=True'],
}


@pytest.mark.parametrize('arch', list(DDP_ARCHS))
def test_ddp_equals_single_process_accumulation(tmp_path, char_data, arch):
    common = [f'--data_dir={char_data}', '--dropout=0.0', '--max_iters=4', '--eval_interval=2',
              '--gradient_accumulation_steps=2', *DDP_ARCHS[arch]]
    one, two = tmp_path / 'one', tmp_path / 'two'
    run_train(common + [f'--out_dir={one}'])
    r = run_train(common + [f'--out_dir={two}'], torchrun=2)
    assert '2 process(es)' in r.stdout
    a, b = read_metrics(one), read_metrics(two)
    assert [(x['kind'], x['iter']) for x in a] == [(x['kind'], x['iter']) for x in b]
    for x, y in zip(a, b):
        for key in ('loss', 'train_loss', 'val_loss'):
            if key in x:
                assert y[key] == pytest.approx(x[key], abs=1e-5), f"{x['kind']} {x['iter']} {key}"
    assert_same_weights(weights(one / 'last.pt'), weights(two / 'last.pt'), atol=1e-5)
    ckpt = torch.load(two / 'last.pt', map_location='cpu', weights_only=True)
    assert len(ckpt['rng']) == 2 and ckpt['data_position'] == 8  # 4 iterations x 2 micro-batches


def test_ddp_refuses_accumulation_not_divisible(tmp_path, char_data):
    r = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path}', '--max_iters=1',
                   '--gradient_accumulation_steps=3'], torchrun=2, check=False)
    assert r.returncode != 0 and 'must be a multiple' in r.stderr


def test_compare_groups_seeds_into_mean_and_sd(capsys):
    """evaluate.py --compare: runs that differ only in seed form one arm with mean ± sample sd."""
    import evaluate
    results = {'a1': {'bpc': 1.0}, 'a2': {'bpc': 3.0}, 'b1': {'bpc': 2.0}, 'b2': {'bpc': 2.0}, 'c': {'bpc': 9.0}}
    configs = {'a1': {'seed': 1, 'attention': 'x', 'out_dir': 'a1'}, 'a2': {'seed': 2, 'attention': 'x', 'out_dir': 'a2'},
               'b1': {'seed': 1, 'attention': 'y', 'out_dir': 'b1'}, 'b2': {'seed': 2, 'attention': 'y', 'out_dir': 'b2'},
               'c': {'seed': 1, 'attention': 'z', 'out_dir': 'c'}}
    evaluate.seed_groups(list(results), results, configs, ['bpc'])
    out = capsys.readouterr().out
    assert '| a1 (n=2) | b1 (n=2) |' in out and '| bpc | 2.0000 ± 1.4142 | 2.0000 ± 0.0000 |' in out
    assert '(n=1)' not in out and 'c (n' not in out
