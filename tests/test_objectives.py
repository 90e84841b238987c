"""objectives.py: each random law has two implementations, numpy draws (evaluate.py's fixed seeds) and device draws
(train.py, here on the CPU generator), and they must be the same law. Every pair is checked here the same way: the
statistics of each implementation against the law's exact values, and the two implementations against each other,
within 5 standard errors; then the Objective train.py uses (its batches follow the same laws and stay a pure
function of the batch's generator, its loss is the model's or objectives.diffusion_loss) and the single NELBO."""
import math

import numpy as np
import pytest
import torch

from corpus import FLAG_MAX_TARGET_STATE, FLAG_STATE_MASK
from model import build_model, ModelConfig
from objectives import (device_generator, diffusion_inputs, diffusion_loss, diffusion_noise, diffusion_noise_device,
                        maskable_positions, maskable_positions_device, mask_token,
                        mdlm_mask_rate, MDLM_T_MIN, mlm_batch, mlm_mask, mlm_mask_device, n_lead_specials, nelbo,
                        Objective, special_ids_tensor)

META = {'special_ids': {'[PAD]': 0, '[UNK]': 1, '[SEP]': 2, '[MASK]': 3}, 'vocab_size': 200}
MASK, V, LOW = 3, 200, 4


def within(a, b, p, n, k=5.0):
    """|a - b| is within k standard errors of a proportion p estimated from n draws."""
    return abs(a - b) <= k * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


# ----------------------------------------------------------------------------- masked LM: mlm_mask ~ mlm_mask_device

def mlm_numpy(x, maskable, rate, replace, seed):
    return mlm_mask(x.numpy(), np.random.default_rng(seed), rate.numpy() if torch.is_tensor(rate) else rate, MASK, V,
                    maskable.numpy(), replace=replace, rand_low=LOW)


def mlm_device(x, maskable, rate, replace, seed):
    return mlm_mask_device(x, device_generator(np.random.default_rng(seed), 'cpu'), rate, MASK, V, maskable,
                           replace=replace, rand_low=LOW)


def mlm_stats(impl, rate, replace, B=96, T=256):
    """What a law of BERT's corruption fixes, measured on one draw: the share of maskable positions chosen (per rate
    group of sequences), and of the chosen: [MASK], a random token (other than the original), kept."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(LOW, V, (B, T), generator=g)
    maskable = torch.rand(B, T, generator=g) < 0.7
    inputs, targets = impl(x, maskable, rate, replace, seed=11)
    chosen = targets != -1
    assert not (chosen & ~maskable).any() and torch.equal(targets[chosen], x[chosen])
    assert torch.equal(inputs[~chosen], x[~chosen])  # a position that is not a target is never corrupted
    rates = rate if torch.is_tensor(rate) else torch.full((B,), float(rate), dtype=torch.float64)
    groups = {float(r): ((rates == r)[:, None] & maskable) for r in rates.unique()}
    ins, orig = inputs[chosen], x[chosen]
    rand = (ins != MASK) & (ins != orig)
    assert ins[rand].min() >= LOW and ins[rand].max() < V
    return ({r: (chosen[m].float().mean().item(), int(m.sum())) for r, m in groups.items()},
            ((ins == MASK).float().mean().item(), rand.float().mean().item(), (ins == orig).float().mean().item(),
             int(chosen.sum())))


@pytest.mark.parametrize('rate, replace', [
    (0.15, (0.8, 0.1, 0.1)),                                            # BERT
    (torch.tensor([0.0, 0.3, 0.75] * 32, dtype=torch.float64), (0.8, 0.1, 0.1)),  # a rate per sequence (Aeneas)
    (0.5, (0.5, 0.25, 0.25)),
])
def test_mlm_numpy_and_device_draws_are_one_law(rate, replace):
    p_same = replace[1] / (V - LOW)  # a random replacement draws the original token again
    expected_fracs = (replace[0], replace[1] - p_same, replace[2] + p_same)
    results = [mlm_stats(impl, rate, replace) for impl in (mlm_numpy, mlm_device)]
    for chosen, (fracs_and_n) in results:
        for r, (share, n) in chosen.items():
            assert within(share, r, r, n), (r, share)
        for f, e in zip(fracs_and_n[:3], expected_fracs):
            assert within(f, e, e, fracs_and_n[3]), (f, e)
    (c_np, f_np), (c_dev, f_dev) = results
    for r in c_np:  # the two implementations against each other: two samples, so sqrt(2) standard errors
        assert within(c_np[r][0], c_dev[r][0], r, c_np[r][1] / 2), (r, c_np[r], c_dev[r])
    for a, b, e in zip(f_np[:3], f_dev[:3], expected_fracs):
        assert within(a, b, e, min(f_np[3], f_dev[3]) / 2), (a, b, e)


def test_maskable_positions_numpy_equals_device():
    """The targets' law starts from the maskable positions: the same set on both paths (specials and flagged-out
    signs never chosen)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 12, (6, 40), generator=g)
    flags = torch.randint(0, 8, (6, 40), generator=g)
    a = maskable_positions({'x': x, 'flags': flags}, META)
    b = maskable_positions_device(x, flags, special_ids_tensor(META, 'cpu'))
    assert np.array_equal(a, b.numpy())
    assert torch.equal(b, (x >= LOW) & ((flags & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE))
    assert n_lead_specials(META) == LOW and not b[x < LOW].any()


# ----------------------------------------------------------------------------- diffusion: diffusion_noise ~ diffusion_noise_device

def noise(impl, rng, B, T, stratum, n):
    if impl == 'numpy':
        return diffusion_noise(rng, B, T, stratum, n)
    return diffusion_noise_device(device_generator(rng, 'cpu'), B, T, stratum, n, 'cpu')


@pytest.mark.parametrize('impl', ['numpy', 'device'])
def test_diffusion_noise_law(impl):
    """t: sequence b of micro-batch s owns stratum s B + b of the global batch (within it, uniform), so over many
    draws t is uniform on [T_MIN, 1]; u: float32 uniforms on [0, 1); a position is masked with probability
    (1 - eps) t."""
    rng = np.random.default_rng(0)
    B, T, n = 4, 64, 3
    ts, us = [], []
    for r in range(300):
        for s in range(n):
            t, u = noise(impl, rng, B, T, s, n)
            assert t.dtype == torch.float32 and u.dtype == torch.float32 and t.shape == (B,) and u.shape == (B, T)
            raw = (t.double() - MDLM_T_MIN) / (1 - MDLM_T_MIN) * n * B
            assert torch.equal(torch.floor(raw + 1e-6).clamp(max=n * B - 1).long(), s * B + torch.arange(B))
            ts.append(t)
            us.append(u)
    t, u = torch.cat(ts).double(), torch.cat(us).double()
    # the t of one stratum is uniform inside it: the mean of the fractional positions is 1/2
    frac = ((t - MDLM_T_MIN) / (1 - MDLM_T_MIN) * n * B) % 1
    assert abs(frac.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / len(frac))
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / u.numel()) and 0 <= u.min() and u.max() < 1
    assert abs(u.var().item() - 1 / 12) < 0.002
    # masks: E[masked | t] = (1 - eps) t, summed over all sequences as standardised deviations
    x0 = torch.zeros(len(t), T, dtype=torch.long)
    _, masked, sigma = diffusion_inputs(x0, t.float(), u.float(), mask_id=9)
    rate = mdlm_mask_rate(t.float()).double()
    z = (masked.double().sum(1) - T * rate) / torch.sqrt(T * rate * (1 - rate)).clamp(min=1e-9)
    assert abs(z.mean().item()) < 5 / math.sqrt(len(z))
    assert torch.allclose(sigma.double(), -torch.log1p(-rate), rtol=1e-6)


def test_diffusion_noise_numpy_and_device_agree():
    """The two implementations against each other: the t and u of many draws have the same distribution (the
    largest gap between their empirical CDFs under the two-sample Kolmogorov-Smirnov bound at p = 1e-4)."""
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    ta, tb, ua, ub = [], [], [], []
    for r in range(400):
        a, b = noise('numpy', rng_a, 8, 16, r % 2, 2), noise('device', rng_b, 8, 16, r % 2, 2)
        ta.append(a[0])
        tb.append(b[0])
        ua.append(a[1][:, 0])
        ub.append(b[1][:, 0])
    for xa, xb in ((torch.cat(ta), torch.cat(tb)), (torch.cat(ua), torch.cat(ub))):
        grid = torch.sort(torch.cat([xa, xb])).values
        cdf = lambda s: torch.searchsorted(torch.sort(s).values, grid, right=True).double() / len(s)
        d = (cdf(xa) - cdf(xb)).abs().max().item()
        bound = math.sqrt(-math.log(1e-4 / 2) * (len(xa) + len(xb)) / (2 * len(xa) * len(xb)))
        assert d < bound, (d, bound)


# ----------------------------------------------------------------------------- the Objective train.py uses

def loader_batch(seed, B=8, T=32, flags=True):
    """A batch as corpus.BatchLoader.get gives it: x, y, the batch's own numpy Generator, flags, doc."""
    rng = np.random.default_rng([seed, 0, 0, 5])
    x = torch.from_numpy(rng.integers(0, 12, (B, T + 1)))
    b = {'x': x[:, :-1], 'y': x[:, 1:], 'rng': np.random.default_rng([seed, 0, 0, 7]),
         'doc': torch.zeros(B, T, dtype=torch.long)}
    if flags:
        b['flags'] = torch.from_numpy(rng.integers(0, 8, (B, T)))
    return b


def encoder():
    torch.manual_seed(0)
    return build_model(ModelConfig(arch='encoder', vocab_size=12, block_size=32, n_layer=1, n_head=2, n_embd=16,
                                   bias=False, norm='rmsnorm', mlp='geglu', pos='rope'))


def mdlm(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch='mdlm', vocab_size=13, mask_id=12, block_size=32, n_layer=1, n_head=2,
                                   n_embd=16, cond_dim=8, bias=False, pos='rope', imp_n_layer=1, imp_n_embd=8,
                                   imp_n_head=2, **kw))


@pytest.mark.parametrize('span_mean', [0.0, 3.0])
def test_objective_mlm_batch_is_pure_and_follows_the_law(span_mean):
    """Objective.batch (train.py's path: device draws; spans on the CPU) is a pure function of the batch's generator,
    chooses only maskable positions, and chooses them at the rate of the numpy path (mlm_batch) on the same data."""
    meta = {**META, 'vocab_size': 12}
    obj = Objective('mlm', encoder(), meta, 'cpu', doc_mask=True, mask_rate=0.4, span_mean=span_mean)
    a, b, c = obj.batch(loader_batch(1)), obj.batch(loader_batch(1)), obj.batch(loader_batch(2))
    assert all(torch.equal(p, q) for p, q in zip(a[:3], b[:3])) and not torch.equal(a[1], c[1])
    assert a[2] is not None and a[3] == {}
    shares, shares_np = [], []
    for seed in range(60):
        bt = loader_batch(seed)
        maskable = torch.from_numpy(maskable_positions(bt, meta))
        _, y, _, _ = obj.batch(bt)
        _, y_np = mlm_batch(loader_batch(seed), np.random.default_rng(seed), meta, 0.4, span_mean=span_mean)
        for yy, out in ((y, shares), (y_np, shares_np)):
            assert not ((yy != -1) & ~maskable).any()
            out.append(((yy != -1).sum().item(), maskable.sum().item()))
    for out in (shares, shares_np):
        chosen, n = map(sum, zip(*out))
        assert within(chosen / n, 0.4, 0.4, n, k=6), chosen / n  # spans: the budget is rounded per sequence


def test_objective_diffusion_batch_and_loss():
    """Objective.batch draws t stratified over the step's micro-batches (stratum of n_strata) and u, as
    diffusion_noise_device; forward is objectives.diffusion_loss: the plain NELBO in eval mode, the training loss in
    train mode; the model itself returns logits only."""
    m = mdlm()
    obj = Objective('diffusion', m, {**META, 'vocab_size': 12}, 'cpu')
    x, y, doc, noise = obj.batch(loader_batch(3), stratum=1, n_strata=2, progress=0.25)
    assert doc is None and noise['progress'] == 0.25
    raw = (noise['t'].double() - MDLM_T_MIN) / (1 - MDLM_T_MIN) * 16
    assert ((raw >= 8 - 1e-6) & (raw < 16)).all()  # the second half of the global batch's strata
    out = m(x)
    assert torch.is_tensor(out) and out.shape == (8, 32, 13) and torch.isinf(out[..., 12]).all()
    obj.eval()
    with torch.no_grad():
        plain = obj(x, y, doc, **noise)
        assert plain.dtype == torch.float64
        assert torch.equal(plain, nelbo(m, x, noise['t'], noise['u'])[0].sum() / x.numel())
    obj.train()
    torch.manual_seed(5)
    a = obj(x, y, doc, **noise)
    torch.manual_seed(5)
    assert torch.equal(a, diffusion_loss(m, x, noise['t'], noise['u'], progress=0.25)) and a.requires_grad
    assert obj.loss_name is None
    assert Objective('diffusion', mdlm(importance=True, adaptive_masking=True), META, 'cpu').loss_name == \
        'weighted_nelbo+importance_mse'


def test_one_nelbo_in_eval_and_training():
    """With uniform masks the training loss (float32 terms) and the eval loss (float64 terms) are the same NELBO to
    float32 rounding; the importance options change only the training loss."""
    m = mdlm(importance=True, adaptive_masking=True, curriculum=True)
    x0 = torch.randint(0, 12, (4, 32), generator=torch.Generator().manual_seed(0))
    t, u = diffusion_noise(np.random.default_rng(0), 4, 32, 0, 1)
    with torch.no_grad():
        terms64, nll, masked = nelbo(m, x0, t, u)
        terms32, _, _ = nelbo(m, x0, t, u, dtype=torch.float32)
    assert terms64.dtype == torch.float64 and terms32.dtype == torch.float32
    assert torch.allclose(terms64, terms32.double(), rtol=1e-6, atol=0)
    assert (terms64[~masked] == 0).all() and (terms64[masked] > 0).all()
    m.eval()
    with torch.no_grad():
        assert torch.equal(diffusion_loss(m, x0, t, u), terms64.sum() / x0.numel())
    m.train()
    assert not torch.allclose(diffusion_loss(m, x0, t, u).double(), terms64.sum() / x0.numel())


def test_mask_token_follows_the_objective():
    assert mask_token('mlm', META, 'd') == 3 and mask_token('diffusion', META, 'd') == 3
    assert mask_token('diffusion', {'vocab_size': 50257}, 'd') == 50257  # GPT-2 BPE: one added
    assert mask_token('causal', META, 'd') is None
    with pytest.raises(SystemExit):
        mask_token('mlm', {'vocab_size': 10}, 'data/x')
