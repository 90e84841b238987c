"""Restoration: the beam search over gaps shared by sample.py and evaluate.py
(restoration.beam_fill / restore_gaps), the baselines and ranking metrics of evals/akkadian.py, and sample.py's
Akkadian path end to end on a tiny checkpoint. CPU, tiny models, no network."""
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_train, train_env
from evals.akkadian import masked_sign_metrics, rank_stats
from model import Encoder, ModelConfig
from restoration import beam_fill, encoder_scorer, NgramScorer, restore_gaps, UnigramScorer

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
PAD, MASK, N_SPECIAL, N_REAL = 0, 1, 2, 6        # tiny vocabulary: 2 specials + 6 real tokens
V = N_SPECIAL + N_REAL


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch='encoder', vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, d_kv=8,
                      norm='rmsnorm', mlp='geglu', pos='rope', bias=False)
    model = Encoder(cfg).eval()
    with torch.no_grad():  # larger weights: peaked, context-dependent distributions (no near-ties)
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(40)
    return model


def chain_rule_scores(score_fn, ids, positions, fillings):
    """sum_r log p(s_r | s_<r filled, the rest masked), left to right, for every filling (enumerated)."""
    fills = torch.tensor(fillings)
    x = torch.as_tensor(ids)[None].repeat(len(fillings), 1)
    total = torch.zeros(len(fillings), dtype=torch.float64)
    for r, p in enumerate(positions):
        logp = score_fn(x)[:, p].double()
        total += logp.gather(1, fills[:, r:r + 1])[:, 0]
        x[:, p] = fills[:, r]
    return total


@pytest.mark.parametrize('k', [2, 3])
def test_beam_fill_is_the_exact_joint_best(k):
    model = tiny_encoder()
    score_fn = encoder_scorer(model, banned_ids=range(N_SPECIAL))
    ids = [5, 3, 7, 2, 6] + [MASK] * k + [4, 6, 3]
    positions = list(range(5, 5 + k))
    fillings = [list(f) for f in itertools.product(range(N_SPECIAL, V), repeat=k)]   # all V_real^k
    exact = chain_rule_scores(score_fn, ids, positions, fillings)
    order = torch.argsort(exact, descending=True)
    got = beam_fill(score_fn, ids, positions, beam=N_REAL ** (k - 1), banned_ids=range(N_SPECIAL), topk=5)
    assert [g[0] for g in got] == [fillings[i] for i in order[:5]]
    assert np.allclose([g[1] for g in got], exact[order[:5]].numpy(), atol=1e-5)
    assert exact[order[0]] - exact[order[1]] > 1e-4          # the best is unique: the test can fail
    # greedy (beam 1) is a lower bound, and never proposes a special token
    greedy = beam_fill(score_fn, ids, positions, beam=1, banned_ids=range(N_SPECIAL))
    assert greedy[0][1] <= got[0][1] + 1e-9 and all(s >= N_SPECIAL for s in greedy[0][0])


def test_beam_fill_batches_beams_and_re_runs_the_scorer():
    calls = []

    def score_fn(x):
        calls.append(x.clone())
        return torch.log_softmax(torch.randn(x.shape[0], x.shape[1], V, generator=torch.Generator().manual_seed(len(calls))), -1)

    beam_fill(score_fn, [3, MASK, MASK, MASK, 4], [1, 2, 3], beam=4, banned_ids=range(N_SPECIAL))
    assert len(calls) == 3                                   # one batched call per filled position
    assert calls[0].shape[0] == 1 and calls[1].shape[0] == 4 and calls[2].shape[0] == 4
    assert (calls[1][:, 1] != MASK).all() and (calls[1][:, 2:4] == MASK).all()   # filled left to right
    assert len({tuple(r) for r in calls[2][:, 1:3].tolist()}) == 4              # distinct beams


def uniform_scorer(n_real):
    def score_fn(x):
        lp = torch.full((*x.shape, N_SPECIAL + n_real), -math.log(n_real))
        lp[..., :N_SPECIAL] = float('-inf')
        return lp
    return score_fn


def test_restore_gaps_ranks_lengths_by_normalised_score():
    ids = [2, 3, 99, 4]  # 99: the unknown-length gap token (replaced by the spliced [MASK]s)
    # uniform over 2 signs: logp = -k log 2; score -k log2 / (1+k)^a -> best k=1 for a=1, k=max for a=2
    for alpha, best in ((1.0, 1), (2.0, 6)):
        res = restore_gaps(uniform_scorer(2), ids, [(2, None)], mask_id=MASK, max_gap_len=6, beam=4, alpha=alpha,
                           topk=50, banned_ids=range(N_SPECIAL))[0]
        assert res[0][3] == best
        for signs, p, score, k in res:
            assert len(signs) == k and math.isclose(score, k * math.log(0.5) / (1 + k) ** alpha, rel_tol=1e-6)
            assert math.isclose(p, 0.5 ** k, rel_tol=1e-6)
        assert [r[2] for r in res] == sorted((r[2] for r in res), reverse=True)
        assert {r[3] for r in res} == set(range(1, 7))

    # a scorer that is sure of sign 5 only when the gap is 3 signs long (sequence length 3 + 3)
    def peaked(x):
        lp = uniform_scorer(N_REAL)(x).clone()
        if x.shape[1] == 6:
            lp[..., N_SPECIAL:] = math.log(0.002)
            lp[..., 5] = math.log(1 - 0.002 * (N_REAL - 1))
        return lp
    res = restore_gaps(peaked, ids, [(2, None)], mask_id=MASK, max_gap_len=5, beam=3, topk=3,
                       banned_ids=range(N_SPECIAL))[0]
    assert res[0][0] == [5, 5, 5] and res[0][3] == 3
    # known-length gaps: exactly that many signs; other gaps keep their tokens while one is restored
    seen = []

    def spy(x):
        seen.append(x.clone())
        return uniform_scorer(N_REAL)(x)
    out = restore_gaps(spy, [2, 90, 90, 3, 99, 4], [(1, 2), (4, None)], mask_id=MASK, max_gap_len=2, beam=2, topk=2,
                       banned_ids=range(N_SPECIAL))
    assert all(len(c[0]) == 2 and c[3] == 2 for c in out[0])
    assert seen[0][0].tolist() == [2, MASK, MASK, 3, 99, 4] and seen[-1][0, 1:3].tolist() == [90, 90]


def test_length_prior_ranks_by_joint_probability():
    """With a length model the unknown-length candidates are ranked by log P(k) + log p(signs | k): under a
    uniform scorer over 2 signs (log p = -k log 2) and a prior that favours k = 3 enough, k = 3 wins; with a flat
    prior the shortest filling wins (the normalised score would let long fillings tie)."""
    ids = [2, 3, 99, 4]
    prior = np.log(np.array([1e-300, 0.05, 0.05, 0.8, 0.05, 0.05]))
    res = restore_gaps(uniform_scorer(2), ids, [(2, None)], mask_id=MASK, max_gap_len=5, beam=4, topk=40,
                       banned_ids=range(N_SPECIAL), length_logprior=prior)[0]
    assert res[0][3] == 3
    for signs, p, score, k in res:
        assert math.isclose(score, k * math.log(0.5) + prior[k], rel_tol=1e-6)
    flat = np.log(np.full(6, 1 / 5))
    res = restore_gaps(uniform_scorer(2), ids, [(2, None)], mask_id=MASK, max_gap_len=5, beam=4, topk=40,
                       banned_ids=range(N_SPECIAL), length_logprior=flat)[0]
    assert {r[3] for r in res[:2]} == {1}


def test_gap_length_prior_counts_lost_and_restored_runs():
    from restoration import gap_length_prior
    G = 5
    ids = np.array([7, G, G, 7, G, 7, 7, G, G, 7, 7])
    flags = np.zeros(len(ids), np.uint8)
    flags[[3, 4]] = 0  # (the [GAP] runs above: lengths 2, 1, 2)
    ids = np.concatenate([ids, [8, 8, 8, 9]])
    flags = np.concatenate([flags, [8 | 2, 8 | 2, 8 | 2, 8]])  # one run of 3 editor-restored signs
    lp = gap_length_prior(ids, flags, G, max_gap_len=4)
    counts = np.array([0, 1 + 1, 1 + 2, 1 + 1, 1 + 0], float)  # add-one: runs of 1: one, of 2: two, of 3: one
    assert np.isneginf(lp[0]) and np.allclose(np.exp(lp[1:]), counts[1:] / counts.sum())


def test_product_scorer_is_the_normalised_product():
    from restoration import ProductScorer
    g = torch.Generator().manual_seed(0)
    a = torch.log_softmax(torch.randn(1, 3, V, generator=g), -1)
    b = torch.log_softmax(torch.randn(1, 3, V, generator=g), -1)
    banned = range(N_SPECIAL)
    prod = ProductScorer([lambda x: a, lambda x: b], [0.7, 1.3], banned)(torch.zeros(1, 3, dtype=torch.long))
    want = 0.7 * a + 1.3 * b
    want[..., :N_SPECIAL] = float('-inf')
    # float32 log-softmax of the same sums: agreement to rounding
    assert torch.allclose(prod, torch.log_softmax(want, -1), atol=1e-5)
    alone = ProductScorer([lambda x: a, lambda x: b], [1.0, 0.0], banned)(torch.zeros(1, 3, dtype=torch.long))
    want = a.clone()
    want[..., :N_SPECIAL] = float('-inf')
    assert torch.allclose(alone, torch.log_softmax(want, -1), atol=1e-5)


def test_fit_product_weights_keeps_the_informative_expert_and_drops_noise():
    """A scorer that knows the masked sign and one that is random noise: the fit on held-out positions gives the
    first a positive weight and the noise none, and the fitted product is at least as likely as either alone."""
    from restoration import fit_product_weights
    rng = np.random.default_rng(0)
    pieces = [(rng.integers(N_SPECIAL, V, 12), np.full(12, 8, np.uint8)) for _ in range(30)]  # 8: a preserved sign
    def oracle(x):  # knows the piece from its unmasked signs, so it knows the masked ones
        x0 = x[0].numpy()
        ids = next(i for i, _ in pieces if ((x0 == MASK) | (x0 == i)).all())
        lp = torch.full((*x.shape, V), math.log(0.02))
        lp[..., :N_SPECIAL] = float('-inf')
        lp[0, torch.arange(len(ids)), torch.from_numpy(ids)] = math.log(1 - 0.02 * (N_REAL - 1))
        return lp
    noise_g = torch.Generator().manual_seed(1)

    def noise(x):
        lp = torch.log_softmax(3 * torch.randn(*x.shape, V, generator=noise_g), -1)
        lp[..., :N_SPECIAL] = float('-inf')
        return lp
    weights, fit = fit_product_weights({'oracle': oracle, 'noise': noise}, pieces, MASK, N_SPECIAL, seed=3,
                                       grids={'oracle': (0.0, 0.5, 1.0), 'noise': (0.0, 0.5, 1.0)}, rate=0.3)
    assert weights['oracle'] > 0 and weights['noise'] == 0 and fit['restore_fit_rows'] > 0


def test_infinigram_uses_the_longest_matching_context():
    """Train text where the sign between c and d is X after 'a b' and Y after 'f b': the trigram (c _ d) cannot
    tell them apart, the infini-gram's longer context can; with no context beyond one sign a side it is the
    n-gram."""
    from restoration import InfinigramScorer
    a, b, c, d, e, f, X, Y = range(N_SPECIAL, N_SPECIAL + 8)
    Vb = N_SPECIAL + 8
    train = np.array([a, b, c, X, d, e, f, b, c, Y, d, e] * 5 + [X, Y])
    ng = NgramScorer(train, Vb, N_SPECIAL, MASK)
    inf = InfinigramScorer(train, Vb, N_SPECIAL, MASK, ngram=ng)
    x = torch.tensor([[a, b, c, MASK, d, e], [f, b, c, MASK, d, e], [PAD, PAD, c, MASK, d, PAD]])
    p_ng, p_inf = ng(x)[:, 3].exp(), inf(x)[:, 3].exp()
    assert abs(p_ng[0, X] - p_ng[0, Y]) < 1e-6                    # the n-gram sees both equally
    assert p_inf[0, X] > 0.8 and p_inf[1, Y] > 0.8                 # the long context decides
    assert torch.allclose(p_inf.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(p_inf[2], p_ng[2], atol=1e-6)            # one sign a side: the n-gram itself


def test_context_matches_and_similar_passages(tmp_path):
    """Exact matches of a gap's context in the train split, with their counts and documents; the most similar
    passage to a line copied from the train split is that line itself (cosine 1)."""
    from corpus import tokenizer_meta, VocabTokenizer
    from prepare.common import write_dataset
    from restoration import context_matches, similar_passages
    from atf import EXTRA_SPECIALS
    tok = VocabTokenizer.build([list('abcdefghxyz')], extra_specials=EXTRA_SPECIALS)
    docs = {'train': [tok.encode(list('abcxdeabcydeab')), tok.encode(list('ghghabczde'))],
            'val': [tok.encode(list('hgf'))]}
    meta = {**tokenizer_meta(tok), 'dataset': 'akkadian', 'splits': {'train': ['P1', 'P2'], 'val': ['P3']}}
    flags = {s: [np.full(len(d), 8, np.uint8) for d in ds] for s, ds in docs.items()}
    write_dataset(tmp_path, docs, meta, sep_id=tok.special_ids()['[SEP]'], aux={'flags': flags})
    n_lead = len(tok.special_ids())
    e = lambda s: tok.encode(list(s))
    m = context_matches(tmp_path, e('abc'), e('de'), [1], n_lead)
    assert m['left'] == e('abc') and m['right'] == e('de')
    assert sorted(m['fillings'], key=lambda f: f[0]) == sorted([(e('x'), 1), (e('y'), 1), (e('z'), 1)])
    assert {d for d, _, _ in m['examples']} == {'P1', 'P2'}
    assert context_matches(tmp_path, e('hhh'), e('fff'), [1, 2], n_lead) is None
    model = tiny_encoder_for(tok.vocab_size)
    best = similar_passages(model, tmp_path, e('ghghabczde'), n_lead, n=2)
    assert best[0][1] == 'P2' and best[0][0] == pytest.approx(1.0, abs=1e-5) and len(best) == 2


def test_parallels_index_and_two_stage_search(tmp_path):
    """The parallels index pools each chunk's final states exactly as a direct mean over the chunk (in its piece's
    context); the two-stage search (index, then exact windows in the best `rerank` documents) finds a passage copied
    from a train document, as the exhaustive search does; the index is cached under its key and rebuilt when the key
    changes."""
    from corpus import tokenizer_meta, VocabTokenizer
    from prepare.common import write_dataset
    from restoration import PARALLEL_CHUNK, parallels_index, similar_passages
    from atf import EXTRA_SPECIALS
    rng = np.random.default_rng(0)
    letters = list('abcdefghijklmnopqrstuvwxyz')
    tok = VocabTokenizer.build([letters], extra_specials=EXTRA_SPECIALS)
    texts = [''.join(rng.choice(letters, int(rng.integers(5, 40)))) for _ in range(20)]
    docs = {'train': [tok.encode(list(t)) for t in texts], 'val': [tok.encode(list('abc'))]}
    meta = {**tokenizer_meta(tok), 'dataset': 'akkadian', 'splits': {'train': [f'P{k}' for k in range(20)],
                                                                        'val': ['V']}}
    write_dataset(tmp_path, docs, meta, sep_id=tok.special_ids()['[SEP]'],
                  aux={'flags': {s: [np.full(len(d), 8, np.uint8) for d in ds] for s, ds in docs.items()}})
    n_lead = len(tok.special_ids())
    model = tiny_encoder_for(tok.vocab_size)
    cache = str(tmp_path / 'parallels.pt')
    vectors, owners = parallels_index(model, tmp_path, n_lead, cache=cache, key=[1])
    assert owners.max() == 19 and vectors.shape[1] == 16
    # the first chunk of a document longer than a chunk (in its first block_size piece), pooled directly
    k = next(i for i, d in enumerate(docs['train']) if len(d) > PARALLEL_CHUNK)
    x = torch.tensor(docs['train'][k][:model.cfg.block_size])[None]
    with torch.no_grad():
        h, _ = model.trunk(x)
    direct = torch.nn.functional.normalize(h[0, :PARALLEL_CHUNK].mean(0), dim=0)
    mine = vectors[owners == k].float()                                   # the chunks of that document
    assert torch.allclose(mine[(mine @ direct).argmax()], direct, atol=2e-3)  # one of them is it (float16)
    k = next(i for i, d in enumerate(docs['train']) if i > 10 and len(d) >= 18)
    query = docs['train'][k][6:18]                                        # a window at the search's stride
    exhaustive = similar_passages(model, tmp_path, query, n_lead, n=3, rerank=100)
    staged = similar_passages(model, tmp_path, query, n_lead, n=3, cache=cache, key=[1], rerank=4)
    assert exhaustive[0][1] == staged[0][1] == f'P{k}' and staged[0][0] == pytest.approx(1.0, abs=1e-5)
    assert staged[0] == exhaustive[0]
    stamp = os.stat(cache).st_mtime_ns
    parallels_index(model, tmp_path, n_lead, cache=cache, key=[1])      # same key: read, not rebuilt
    assert os.stat(cache).st_mtime_ns == stamp
    parallels_index(model, tmp_path, n_lead, cache=cache, key=[2])      # another checkpoint: rebuilt
    assert torch.load(cache, weights_only=True)['key'] == [2]


def tiny_encoder_for(vocab_size):
    torch.manual_seed(0)
    cfg = ModelConfig(arch='encoder', vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, d_kv=8,
                      norm='rmsnorm', mlp='geglu', pos='rope', bias=False)
    return Encoder(cfg).eval()


# ----------------------------------------------------------------------------- baselines and metrics

def test_ngram_is_a_distribution_over_real_signs_from_train_counts():
    rng = np.random.default_rng(0)
    SEP = 1
    train = np.concatenate([[SEP], rng.integers(N_SPECIAL, V, 300), [SEP], [2, 3, 4] * 20])
    ng = NgramScorer(train, V, N_SPECIAL, MASK)
    ok = (train[:-1] >= N_SPECIAL) & (train[1:] >= N_SPECIAL)
    assert ng.bi.sum() == ok.sum()                                   # bigrams within documents only
    assert np.array_equal(ng.counts[N_SPECIAL:], np.bincount(train, minlength=V)[N_SPECIAL:])
    x = torch.tensor([[2, MASK, 4, MASK, MASK, MASK, 7, MASK], [MASK, 3, MASK, 0, 0, 0, 0, 0]])
    lp = ng(x)
    p = lp.exp()
    masked = x == MASK
    assert torch.allclose(p[masked].sum(-1), torch.ones(int(masked.sum())), atol=1e-5)
    assert (p[..., :N_SPECIAL] == 0).all() and (p[masked][:, N_SPECIAL:] > 0).all()
    assert lp[0, 1].argmax() == 3                                    # c(2,3,4) dominates
    uni = UnigramScorer(train, V, N_SPECIAL)
    assert torch.allclose(lp[0, 4], uni(x)[0, 4])                   # no neighbour known: the unigram
    assert not torch.allclose(lp[0, 5], uni(x)[0, 5])               # the right one known (7)
    # a different train split gives a different scorer; only the train ids are ever read
    ng2 = NgramScorer(train[:100], V, N_SPECIAL, MASK)
    assert not torch.allclose(ng2(x)[0, 1], lp[0, 1])


def test_rank_stats_oracle_and_uniform():
    n, Vr = 50, 40
    true = torch.randint(0, Vr, (n,))
    oracle = torch.full((n, Vr), -20.0).scatter(1, true[:, None], 0.0)
    s = rank_stats(oracle, true)
    assert s['top1'] == s['top5'] == s['mrr'] == n
    uni = torch.zeros(n, Vr)
    s = rank_stats(uni, true)
    for k in (1, 5, 10):
        assert math.isclose(s[f'top{k}'] / n, k / Vr)
    assert math.isclose(s['mrr'] / n, sum(1 / r for r in range(1, Vr + 1)) / Vr)
    # specials (-inf) are not candidates
    uni[:, :10] = float('-inf')
    true = true.clamp(min=10)
    assert math.isclose(rank_stats(uni, true)['top1'] / n, 1 / (Vr - 10))


def test_masked_sign_metrics_oracle_and_uniform():
    from atf import FLAG_SIGN
    rng = np.random.default_rng(1)
    pieces = [(rng.integers(N_SPECIAL, V, L), np.full(L, FLAG_SIGN, np.uint8)) for L in (30, 31, 32, 33)]
    clean = {len(i): torch.from_numpy(i) for i, _ in pieces}

    def oracle(x):
        lp = torch.full((*x.shape, V), -30.0)
        return lp.scatter(2, clean[x.shape[1]].expand(x.shape[0], -1)[..., None], 0.0)
    m = masked_sign_metrics({'oracle': oracle, 'uniform': uniform_scorer(N_REAL)}, pieces, MASK, N_SPECIAL, seed=0,
                            rate=0.5)
    assert m['oracle']['n'] > 20 and m['oracle']['top1'] == 1 and m['oracle']['mrr'] == 1
    assert math.isclose(m['uniform']['top1'], 1 / N_REAL) and m['uniform']['top5'] == pytest.approx(5 / N_REAL)
    assert m['uniform']['mrr'] == pytest.approx(sum(1 / r for r in range(1, N_REAL + 1)) / N_REAL)


# ----------------------------------------------------------------------------- sample.py end to end

@pytest.fixture(scope='module')
def akk_ckpt(tmp_path_factory):
    """A tiny encoder trained for a few iterations on documents built from the fixture ATF."""
    from atf import parse_atf
    from prepare.akkadian import build_dataset
    d = tmp_path_factory.mktemp('akk')
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    body = text.split('&P100002')[0].split('\n', 1)[1]
    atf = ''.join(f'&P{k:06d} = copy {k}\n{body}' for k in range(12))
    build_dataset(parse_atf(atf), d / 'data', seed=1337, source='input')
    out = d / 'out'
    run_train(['--arch=encoder', f'--data_dir={d / "data"}', '--dataset=akkadian', f'--out_dir={out}',
               '--norm=rmsnorm', '--mlp=geglu', '--pos=rope', '--bias=False', '--doc_mask=True', '--d_kv=16',
               '--max_iters=4', '--eval_interval=2'])
    return out


def run_sample(out, *args):
    cmd = [sys.executable, 'sample.py', f'--out_dir={out}', '--beam=4', '--max_gap_len=3', '--candidates=3', *args]
    r = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_sample_restores_known_and_unknown_length_gaps(akk_ckpt):
    line = 'a-na [x x] be-li₂-ia ... LUGAL zzqq'
    r = run_sample(akk_ckpt, f'--text={line}')
    assert 'gap 1 (2 signs):' in r.stdout and 'gap 2 (unknown length, tried 1..3):' in r.stdout
    assert r.stdout.count(' p=') == 6 and 'best: a-na [' in r.stdout
    assert '[UNK]' in r.stderr and 'zzqq' in r.stderr                # one-line warning for unknown signs
    j = json.loads(run_sample(akk_ckpt, f'--text={line}', '--json').stdout)
    assert j['signs'][:4] == ['a', 'na', '[GAP]', '[GAP]'] and j['unknown_signs'] == ['zzqq']
    g1, g2 = j['gaps']
    assert g1['length'] == 2 and len(g1['candidates']) == 3
    assert all(len(c['signs']) == 2 and 0 < c['prob'] <= 1 for c in g1['candidates'])
    assert [c['prob'] for c in g1['candidates']] == sorted((c['prob'] for c in g1['candidates']), reverse=True)
    assert g2["length"] is None and all(1 <= c["length"] <= 3 and len(c["signs"]) == c["length"]
                                        for c in g2['candidates'])
    assert [c['score'] for c in g2['candidates']] == sorted((c['score'] for c in g2['candidates']), reverse=True)
    specials = {'[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '[GAP]', '[GAPN]'}
    assert not any(s in specials for g in (g1, g2) for c in g['candidates'] for s in c['signs'])
    j2 = json.loads(run_sample(akk_ckpt, f'--text={line}', '--json_output=True').stdout)
    assert j2 == j                                                    # --json is --json_output; repeatable


def test_sample_refuses_a_gap_longer_than_the_context_at_once(akk_ckpt):
    """--max_gap_len beyond the model's context is one line before any search (it used to search for a minute,
    then fail with an IndexError)."""
    cmd = [sys.executable, 'sample.py', f'--out_dir={akk_ckpt}', '--max_gap_len=100000', '--text=a-na ... be-li₂-ia']
    r = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('error:') and 'context' in r.stderr


def test_sample_parallels_answer_and_scorers(akk_ckpt):
    """--parallels prints the most similar train passages with their document ids and each gap's exact context
    matches; --answer prints where the truth ranks; the default scorer is the product fitted on val."""
    line = 'a-na x be-li₂-ia'
    j = json.loads(run_sample(akk_ckpt, f'--text={line}', '--parallels=2', '--answer=a', '--json').stdout)
    assert j['scorer'] == 'restore' and set(j['weights']) == {'model', 'ngram', 'infinigram'}
    assert len(j['parallels']) == 2 and all(p['doc'].startswith('P') and -1 <= p['cosine'] <= 1 for p in j['parallels'])
    g = j['gaps'][0]
    assert g['answer']['signs'] == ['a'] and g['answer']['rank'] >= 1
    assert 'context_matches' in g
    r = run_sample(akk_ckpt, f'--text={line}', '--parallels=2', '--answer=a', '--scorer=ngram')
    assert 'answer a: rank' in r.stdout and 'parallels (the 2 train passages' in r.stdout
    assert (akk_ckpt / 'restore.json').exists()  # the fitted weights are cached beside the checkpoint
