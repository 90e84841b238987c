"""Sparse autoencoders (sae.py) and probes (probes.py): planted dictionaries are recovered, TopK keeps exactly k
units, dead / dense latents are counted right, a probe finds a planted signal and not a shuffled one."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probes import identity_baseline, majority_baseline, probe_scores
from sae import SAE, dead_dense, density, fvu, pca_fvu, sae_loss, sae_metrics, train_sae


def planted(n=2000, d=16, m=32, active=3, seed=0):
    """x = D c: n samples of `active` atoms of a known unit-norm dictionary D (d x m), coefficients in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    D = F.normalize(torch.randn(d, m, generator=g), dim=0)
    support = torch.stack([torch.randperm(m, generator=g)[:active] for _ in range(n)])
    c = torch.zeros(n, m).scatter(1, support, torch.rand(n, active, generator=g) + 0.5)
    return c @ D.T, D, support


# ----------------------------------------------------------------------------- SAEs

def test_topk_sae_recovers_a_planted_dictionary_and_its_supports():
    x, D, support = planted()
    sae, _ = train_sae(x, 32, 'topk', k=3, steps=400, lr=3e-3, seed=0)
    cos = D.T @ sae.W_dec.detach()                      # atoms x latents, both unit norm
    best_cos, match = cos.max(1)
    assert best_cos.min() > 0.9                          # every planted atom has a latent along it
    assert len(set(match.tolist())) == 32                # ... and a latent of its own
    z = sae.encode(x)
    active = [set(torch.nonzero(r).flatten().tolist()) for r in z]
    want = [set(match[s].tolist()) for s in support]
    # the right atoms fire, not just the right directions: 86% of each sample's atoms (chance: 3 of 32)
    assert np.mean([len(a & w) / 3 for a, w in zip(active, want)]) > 0.8
    # the same data from a random dictionary of the same shape is not "recovered": the check can fail
    other = F.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(9)), dim=0)
    assert (other.T @ sae.W_dec.detach()).max(1).values.mean() < 0.8


def test_l1_sae_recovers_a_planted_dictionary_and_is_sparser_with_larger_lambda():
    x, D, _ = planted()
    l0 = []
    for lam in (0.01, 0.05):
        sae, _ = train_sae(x, 32, 'l1', l1_coeff=lam, steps=400, lr=3e-3, seed=0)
        l0.append(sae_metrics(sae, x)[0]['l0'])
    assert (D.T @ sae.W_dec.detach()).max(1).values.mean() > 0.9
    assert l0[1] < l0[0]


def test_topk_keeps_exactly_k_active_units_the_k_largest():
    torch.manual_seed(0)
    sae = SAE(8, 40, 'topk', k=5)
    x = torch.randn(64, 8)
    z = sae.encode(x)
    assert ((z > 0).sum(1) <= 5).all()                   # never more than k
    with torch.no_grad():
        sae.b_enc.fill_(100.0)                           # every pre-activation positive: exactly k survive
    a, z = sae.pre_acts(x), sae.encode(x)
    assert ((z > 0).sum(1) == 5).all()
    kept = z > 0
    assert torch.equal(torch.sort(a[kept].view(64, 5), 1).values, torch.sort(a.topk(5, 1).values, 1).values)
    assert torch.equal(z[kept], a[kept])                 # the kept values pass unchanged (ReLU of positives)
    with pytest.raises(ValueError, match='k must lie'):
        SAE(8, 4, 'topk', k=5)


def test_dead_and_dense_latents_on_a_constructed_case():
    z = torch.zeros(100, 10)
    z[:50, 3] = 1.0          # density 0.5: dense
    z[:11, 4] = 2.0          # 0.11: dense
    z[:10, 5] = 1.0          # exactly 0.1: not dense (the threshold is "more than")
    z[:1, 6] = 0.5           # 0.01
    z[:, 7] = 3.0            # 1.0: dense
    z[:5, 8] = -1.0          # never positive: dead, like 0, 1, 2 and 9
    dens = density(z)
    assert torch.allclose(dens, torch.tensor([0, 0, 0, .5, .11, .1, .01, 1, 0, 0], dtype=torch.float64))
    assert dead_dense(dens, 0.1) == (0.5, 0.3)
    # the same count through an SAE whose latents 0..5 can never fire
    torch.manual_seed(0)
    sae = SAE(4, 12, 'l1')
    with torch.no_grad():
        sae.b_enc[:6] = -1e4
        sae.b_enc[6:] = 1e4   # and the others always do
    m, dens = sae_metrics(sae, torch.randn(50, 4))
    assert m['dead'] == 0.5 and m['dense'] == 0.5 and m['l0'] == 6


def test_auxk_term_reaches_the_dead_latents_only():
    """Gao et al.'s AuxK term: latents that did not fire get a gradient through it (without it they get none),
    and the loss is unchanged when no latent is dead."""
    torch.manual_seed(0)
    sae = SAE(8, 32, 'topk', k=2)
    xb = torch.randn(16, 8)
    loss, z = sae_loss(sae, xb)
    silent = ~(z > 0).any(0)
    assert silent.sum() > 4
    loss.backward()
    assert sae.W_enc.grad[silent].abs().sum() == 0        # the main loss never reaches a latent that did not fire
    sae.zero_grad()
    aux, _ = sae_loss(sae, xb, dead=silent, aux_k=4)
    assert aux > loss                                      # the AuxK term was added ...
    aux.backward()
    got = sae.W_enc.grad.abs().sum(1) > 0
    assert got[silent].sum() >= 4                          # ... and reaches up to aux_k dead latents per token
    assert torch.equal(sae_loss(sae, xb, dead=torch.zeros(32, dtype=torch.bool))[0], loss.detach())


def test_fvu_and_the_pca_baseline():
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    assert fvu(x, x) == 0 and fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    low = torch.randn(300, 2) @ torch.randn(2, 6)        # rank 2: two components explain it all
    assert pca_fvu(low[:200], low[200:], 2) < 1e-10 and pca_fvu(low[:200], low[200:], 1) > 0.01


# ----------------------------------------------------------------------------- probes

def planted_labels(n=1200, d=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g) + 0.3 * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


def test_probe_beats_chance_on_a_planted_signal_and_not_on_shuffled_labels():
    x, y = planted_labels()
    ids = torch.arange(len(y))  # every token its own id: the identity baseline falls back to the majority
    r = probe_scores(x[:800], y[:800], x[800:], y[800:], ids[:800], ids[800:], 3, seed=0)
    chance = max(torch.bincount(y[800:]).tolist()) / 400
    assert r['probe'] > 0.85 and r['majority'] <= chance + 1e-9 and r['identity'] == r['majority']
    assert r['shuffled'] < chance + 0.08
    # labels unrelated to the states: the probe itself stays at chance
    noise = torch.randint(0, 3, (1200,), generator=torch.Generator().manual_seed(1))
    r = probe_scores(x[:800], noise[:800], x[800:], noise[800:], ids[:800], ids[800:], 3, seed=0)
    assert r['probe'] < 0.33 + 0.1


def test_majority_and_identity_baselines():
    y_tr, y_te = torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([2, 2, 1, 0])
    assert majority_baseline(y_tr, y_te) == 0.5
    ids_tr, ids_te = torch.tensor([7, 7, 7, 8, 9, 9]), torch.tensor([9, 5, 7, 8])
    # id 7 -> 1 (two of three), 8 -> 2, 9 -> 2, unseen 5 -> the majority 2: right on 9, 5 and 7
    assert identity_baseline(ids_tr, y_tr, ids_te, y_te) == 0.75
