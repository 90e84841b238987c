"""Does each objective learn? A short train.py run per objective on a synthetic corpus whose entropies are
known, checked against what the data allows (never against a number copied from a run).

The corpus: token x_t copies a fixed permutation of x_{t-2} with probability P, else it is uniform over the
A letters. Its unigram entropy is ln A (checked on the data), and its entropy rate is exactly
H = -(q ln q + (A - 1) r ln r), q = P + (1 - P)/A, r = (1 - P)/A: every model must look two tokens away
(attention, not the token's own embedding) to get below ln A. A model that only learns the token frequencies
stays at the unigram plateau; the checks ask each objective to close at least half of the gap between the two
within 200 steps:
- gpt (next token): val loss is a cross-entropy, bounded below by H;
- mdlm (diffusion): val loss is the NELBO, an upper bound on -log p(x) per token, so also >= H;
- encoder (masked LM): each masked token is predicted from both sides, which can only help (loss <= H possible).
The runs use each family's CPU config (its architecture, norm, positions, objective settings) with the
sizes, data and step count overridden, so a change to a family's training path that stops it learning
fails here in about a minute."""
import json
import math
import random

import numpy as np
import pytest

from conftest import read_metrics, run_train

A = 'abcdefghijklmnop'   # 16 letters
P = 0.9                  # probability that x_t = perm[x_{t-2}]


def entropy_rate():
    q, r = P + (1 - P) / len(A), (1 - P) / len(A)
    return -(q * math.log(q) + (len(A) - 1) * r * math.log(r))


@pytest.fixture(scope='module')
def skip2_data(tmp_path_factory):
    """A char dataset of the skip-2 copy process (train/val/test by document) and its unigram entropy on val."""
    from corpus import CharTokenizer, tokenizer_meta
    from prepare.common import split_by_document, write_dataset
    rng = random.Random(0)
    perm = list(A)
    rng.shuffle(perm)
    nxt = dict(zip(A, perm))
    docs = {}
    for d in range(80):
        s = [rng.choice(A), rng.choice(A)]
        while len(s) < 400:
            s.append(nxt[s[-2]] if rng.random() < P else rng.choice(A))
        docs[f'd{d:03d}'] = ''.join(s)
    out = tmp_path_factory.mktemp('skip2')
    splits = split_by_document(list(docs))
    tok = CharTokenizer.build([docs[d] for d in splits['train']])
    ids = {s: [tok.encode(docs[d]) for d in names] for s, names in splits.items()}
    meta = {**tokenizer_meta(tok), 'dataset': 'skip2', 'source': 'generated', 'licence': 'test data'}
    write_dataset(out, ids, meta, sep_id=tok.special_ids()['[SEP]'])
    counts = np.bincount(np.concatenate([np.asarray(x) for x in ids['val']]))
    p = counts[counts > 0] / counts.sum()
    return out, float(-(p * np.log(p)).sum())


# Sizes shared by every run: 2 layers of width 64, 16 x 64 tokens per step, one process, one thread.
SMALL = ['--n_layer=2', '--n_head=2', '--n_embd=64', '--d_ff=0', '--d_kv=0', '--block_size=64', '--batch_size=16',
         '--gradient_accumulation_steps=1', '--warmup_iters=20', '--learning_rate=3e-3', '--min_lr=3e-4',
         '--eval_iters=8', '--log_interval=50', '--dropout=0.0', '--ema_decay=0.0']


@pytest.mark.parametrize('config, iters', [('config/gpt_wikitext_cpu.py', 200),
                                           ('config/train_akkadian_cpu.py', 200),
                                           ('config/mdlm_cpu.py', 200)])
def test_objective_learns_beyond_unigram(skip2_data, tmp_path, config, iters):
    data, h_unigram = skip2_data
    h_rate = entropy_rate()
    assert abs(h_unigram - math.log(len(A))) < 0.02       # the corpus is what the docstring says
    assert h_unigram - h_rate > 2.0                       # and the two entropies are far apart
    out = tmp_path / 'run'
    # the config file first, then the overrides (TINY's defaults from conftest come before it: the config wins
    # over them, these win over the config)
    run_train([config, f'--data_dir={data}', f'--out_dir={out}', f'--max_iters={iters}', f'--eval_interval={iters}',
               *SMALL], timeout=600)
    final = [r for r in read_metrics(out) if r.get('kind') == 'eval' and r['iter'] == iters][0]['val_loss']
    # at least half of the gap between the unigram entropy and the entropy rate closed
    bound = h_rate + 0.5 * (h_unigram - h_rate)
    assert final < bound, (f"{config}: val loss {final:.3f} after {iters} steps, not below {bound:.3f} "
                           f"(unigram entropy {h_unigram:.3f}, entropy rate {h_rate:.3f}): the model is not learning "
                           f"from context")
