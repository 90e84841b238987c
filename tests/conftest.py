"""Shared fixtures: a tiny generated character corpus written with prepare.common.write_dataset, and a
helper that runs train.py in a subprocess (CPU, one thread) and reads back what it wrote."""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The machine has 2 cores shared with other jobs: one intra-op thread avoids oversubscription, which
# makes tiny models ~100x slower than single-threaded.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from atf import FLAG_STATE, FLAG_WORD_START  # noqa: E402  (after the repository is on the path)

# the expected signs of a line, written compactly (tests/test_oracc_atf.py, tests/test_oracc_json.py)
STATE = {'': 0, 'D': 1, 'R': 2, 'M': 3}


def expect(spec):
    """'a^ na {kur}^ ELAM MA:R [GAP]^:M' -> [(token, state, starts a word)]: `^` a word start,
    `:D` damaged, `:R` restored, `:M` missing; no suffix: preserved."""
    out = []
    for item in spec.split():
        m = re.fullmatch(r'(.+?)(\^?)(?::([DRM]))?', item)
        out.append((m.group(1), STATE[m.group(3) or ''], m.group(2) == '^'))
    return out


def got(signs):
    return [(t, f & FLAG_STATE, bool(f & FLAG_WORD_START)) for t, f in signs]

WORDS = ['the', 'king', 'queen', 'lord', 'speak', 'thou', 'art', 'my', 'good', 'night', 'sword', 'crown',
         'love', 'death', 'and', 'of', 'to', 'a', 'is', 'not']


def make_documents(n_docs=30, words_per_doc=70, seed=0):
    """{doc name: text}: short pseudo-English documents, deterministic."""
    rng = random.Random(seed)
    docs = {}
    for d in range(n_docs):
        lines, line = [], []
        for _ in range(words_per_doc):
            line.append(rng.choice(WORDS))
            if len(line) == 8:
                lines.append(' '.join(line).capitalize() + '.')
                line = []
        lines.append(' '.join(line) + '.')
        docs[f'doc{d:02d}'] = '\n'.join(lines) + '\n'
    return docs


def write_char_dataset(out_dir, docs):
    from corpus import CharTokenizer, tokenizer_meta
    from prepare.common import split_by_document, write_dataset
    splits = split_by_document(list(docs))
    tok = CharTokenizer.build([docs[d] for d in splits['train']])
    ids = {s: [tok.encode(docs[d]) for d in names] for s, names in splits.items()}
    meta = {**tokenizer_meta(tok), 'dataset': 'tiny', 'source': 'generated', 'licence': 'test data'}
    write_dataset(out_dir, ids, meta, sep_id=tok.special_ids()['[SEP]'])
    return tok


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    """A prepared char-level dataset directory (train/val/test.bin + meta.json) of 30 documents."""
    d = tmp_path_factory.mktemp('char_data')
    write_char_dataset(d, make_documents())
    return d


# Tiny model + loop settings shared by every train.py subprocess.
TINY = ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
        '--warmup_iters=2', '--learning_rate=3e-3', '--eval_iters=2', '--log_interval=1', '--compile=False',
        '--dtype=float32']


def train_env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('RANK', None)
    return env


def run_train(args, torchrun=0, timeout=300, check=True):
    """Run train.py (or torchrun with `torchrun` processes) from the repository root."""
    cmd = [sys.executable]
    if torchrun:
        cmd += ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun}']
    cmd += ['train.py', *TINY, '--num_threads=1', *args]
    r = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def read_metrics(out_dir):
    return [json.loads(l) for l in (Path(out_dir) / 'metrics.jsonl').read_text().splitlines() if l.strip()]


def train_losses(out_dir):
    """{iter: loss} of the training rows of metrics.jsonl."""
    return {r['iter']: r['loss'] for r in read_metrics(out_dir) if r.get('kind') == 'train'}
