"""prepare/openwebtext.py on small local samples in the OpenWebText layouts (a directory of .txt files, a
.jsonl with a "text" field), with the trained-BPE tokenizer (tiktoken's GPT-2 files are not reachable here):
disjoint document splits, every document once, resumption after an interruption that re-tokenizes only the
missing shards and gives the same bytes, the one-line message offline, and config/mdlm_owt.py starting on CPU."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, make_documents, train_env
import prepare.openwebtext as owt


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp('owt')
    docs = make_documents(n_docs=40, words_per_doc=60, seed=3)
    d = root / 'txt'
    (d / 'urlsf_subset00').mkdir(parents=True)
    for name, text in docs.items():
        (d / 'urlsf_subset00' / f'{name}.txt').write_text(text)
    (root / 'owt.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in docs.values()))
    return root, docs


ARGS = ['--tokenizer=bpe', '--vocab_size=300', '--val_fraction=0.1', '--shard_docs=8']


def test_txt_directory_and_resume(sample, tmp_path, monkeypatch):
    root, docs = sample
    owt.main([f'--input={root / "txt"}', *ARGS, f'--out={tmp_path / "full"}'])
    meta = json.loads((tmp_path / 'full' / 'meta.json').read_text())
    assert meta['special_ids']['[MASK]'] is not None and meta['dataset'] == 'openwebtext'
    assert meta['counts']['train']['documents'] + meta['counts']['val']['documents'] == len(docs)
    assert meta['counts']['val']['documents'] == 4
    train = np.fromfile(tmp_path / 'full' / 'train.bin', dtype=np.uint16)
    val = np.fromfile(tmp_path / 'full' / 'val.bin', dtype=np.uint16)
    assert len(train) == meta['counts']['train']['tokens'] and (train == meta['sep_id']).sum() == 36
    assert (val == meta['sep_id']).sum() == 4 and train.max() < meta['vocab_size']
    # an interruption after two shards: nothing is swapped in, and the rerun writes only the rest
    real, calls = owt.write_shard, []

    def flaky(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(a[2:4])
        return real(*a, **k)
    monkeypatch.setattr(owt, 'write_shard', flaky)
    with pytest.raises(KeyboardInterrupt):
        owt.main([f'--input={root / "txt"}', *ARGS, f'--out={tmp_path / "part"}'])
    assert not (tmp_path / 'part' / 'meta.json').exists()
    done = list(calls)
    calls.clear()
    monkeypatch.setattr(owt, 'write_shard', lambda *a, **k: (calls.append(a[2:4]), real(*a, **k)))
    owt.main([f'--input={root / "txt"}', *ARGS, f'--out={tmp_path / "part"}'])
    assert not set(done) & set(calls) and len(done) + len(calls) == 6  # 36 train / 8 + 4 val / 8 shards
    for name in ('train.bin', 'val.bin', 'tokenizer.json'):
        assert (tmp_path / 'part' / name).read_bytes() == (tmp_path / 'full' / name).read_bytes()


def test_jsonl_layout(sample, tmp_path):
    root, docs = sample
    owt.main([f'--input={root / "owt.jsonl"}', *ARGS, f'--out={tmp_path / "j"}'])
    meta = json.loads((tmp_path / 'j' / 'meta.json').read_text())
    assert sum(c['documents'] for c in meta['counts'].values()) == len(docs)


def test_offline_says_so_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, 'prepare/openwebtext.py', f'--out={tmp_path / "o"}'], cwd=REPO,
                       env=train_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and 'OpenWebText cannot be reached' in lines[0] and '--input=' in lines[0]
    assert not (tmp_path / 'o' / 'meta.json').exists()


def test_mdlm_owt_config_starts_on_cpu(sample, tmp_path):
    root, _ = sample
    owt.main([f'--input={root / "txt"}', *ARGS, f'--out={tmp_path / "data"}'])
    tiny = ['--device=cpu', '--dtype=float32', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=32',
            '--cond_dim=16', '--block_size=16', '--batch_size=2', '--gradient_accumulation_steps=1', '--vocab_size=0',
            '--max_iters=3', '--eval_interval=3', '--eval_iters=1', '--log_interval=1', '--warmup_iters=1',
            '--num_threads=1']
    r = subprocess.run([sys.executable, 'train.py', 'config/mdlm.py', 'config/mdlm_owt.py',
                        f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "run"}', *tiny], cwd=REPO,
                       env=train_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import torch
    ck = torch.load(tmp_path / 'run' / 'last.pt', map_location='cpu', weights_only=True)
    assert ck['iter_num'] == 3 and 'ema' in ck and ck['config']['ema_decay'] == 0.9999
    assert ck['config']['learning_rate'] == ck['config']['min_lr'] == 3e-4
