"""bench.py / train.py --bench_iters: real steps are timed and the reported MFU follows the documented
formula (6N + 12 L H Q T FLOPs per token against the given peak); no checkpoint is written."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, TINY, run_train, train_env


def test_bench_mode_reports_tokens_per_s_and_mfu(char_data, tmp_path):
    out = tmp_path / 'b'
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--bench_iters=3', '--bench_warmup=1',
               '--peak_tflops=0.5', '--vocab_size=64'])
    res = json.loads((out / 'bench.json').read_text())
    assert res['arch'] == 'gpt' and res['device'] == 'cpu' and res['tokens_per_s'] > 0
    assert res['tokens_per_iter'] == 4 * 16  # batch_size x block_size x accumulation
    # N: parameters without position embeddings; L=1, H=2, Q=16, T=16
    from model import GPT, ModelConfig
    m = GPT(ModelConfig(arch='gpt', vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    n = m.num_params() - m.trunk.wpe.weight.numel()
    assert res['flops_per_token'] == 6 * n + 12 * 1 * 2 * 16 * 16
    assert res['mfu'] == pytest.approx(res['flops_per_token'] * res['tokens_per_s'] / 0.5e12)
    assert abs(res['step_s'] * res['tokens_per_s'] - res['tokens_per_iter']) < 1e-6 * res['tokens_per_iter']
    assert not (out / 'ckpt.pt').exists() and not (out / 'last.pt').exists()


def test_bench_py_table_and_padded_vocab_check(char_data, tmp_path):
    r = subprocess.run([sys.executable, 'bench.py', *TINY, f'--data_dir={char_data}', '--num_threads=1',
                        '--bench_iters=2', '--bench_warmup=1', '--json'],
                       cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]['tokens_per_s'] > 0 and rows[0]['mfu'] is None  # CPU, no peak given
    bad = run_train([f'--data_dir={char_data}', f'--out_dir={tmp_path / "v"}', '--vocab_size=8', '--max_iters=1'],
                    check=False)
    assert bad.returncode != 0 and 'vocab_size=8 is smaller' in bad.stderr


def test_bench_sample_rows(char_data, tmp_path):
    """--sample: causal generation gives tokens/s; mdlm runs ddpm and ddpm_cache with the same schedule, and
    the cache never calls the network more often."""
    import bench
    cfg = tmp_path / 'm.py'
    cfg.write_text(f"arch = 'mdlm'\ndata_dir = '{char_data}'\nn_layer = 1\nn_head = 2\nn_embd = 32\n"
                   "block_size = 16\ndevice = 'cpu'\n")
    opts = {'sample_steps': 40, 'sample_tokens': 5, 'sample_batches': '1,8'}
    rows = bench.sample_one([str(cfg)], opts)
    assert [(r['sampler'].split()[0], r['batch']) for r in rows] == [('ddpm', 1), ('ddpm_cache', 1), ('ddpm', 8),
                                                                      ('ddpm_cache', 8)]
    for ddpm, cache in (rows[:2], rows[2:]):
        assert ddpm['network_calls'] >= 40 and cache['network_calls'] <= ddpm['network_calls']
        assert ddpm['row_calls'] >= 40 * ddpm['batch'] and cache['row_calls'] <= ddpm['row_calls']
        assert cache['speedup'] == pytest.approx(ddpm['seconds'] / cache['seconds'])
        assert cache['same_samples'] is True
    assert 'row calls' in bench.sample_table(rows)
    (row,) = bench.sample_one([str(cfg), '--arch=gpt'], opts)
    assert row['tokens_per_s'] > 0 and 'generate 5 tokens' in row['sampler']
