"""MDLM: the NELBO, SUBS, the time sampling, the samplers and the importance-aware options, on tiny
models on CPU."""
import itertools
import math

import numpy as np
import pytest
import torch

from conftest import read_metrics, run_train
from model import build_model, ModelConfig
from objectives import (adaptive_mask_probs, curriculum_direction, device_generator, diffusion_loss, diffusion_loss_name,
                        diffusion_noise, diffusion_noise_device, MDLM_EPS, mdlm_mask_rate, MDLM_T_MIN, nelbo)
from sampling import mdlm_sample, mdlm_semi_ar

V = 12  # 11 real tokens + [MASK] (id 11)


def tiny(seed=0, randomise_head=True, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch='mdlm', vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False,
                      pos='rope', cond_dim=16, imp_n_layer=1, imp_n_embd=16, imp_n_head=2, **kw)
    m = build_model(cfg)
    if randomise_head:  # adaLN-zero and the zero head make a fresh model uniform: give it some structure
        with torch.no_grad():
            for name, p in m.named_parameters():
                if 'adaLN' in name or name.startswith('head'):
                    p.normal_(0, 0.3)
    return m.eval()


def test_uniform_predictor_gives_log_v_minus_1():
    m = tiny(randomise_head=False)  # zero-initialised output layer: uniform over the V-1 real tokens
    x0 = torch.randint(0, V - 1, (64, 16), generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    vals = []
    for k in range(200):
        t, u = diffusion_noise(rng, 64, 16, k, 200)
        with torch.no_grad():
            vals.append(diffusion_loss(m, x0, t, u).item())
    mean, se = np.mean(vals), np.std(vals) / math.sqrt(len(vals))
    # E_t[(1/t) P(masked) log(V-1)] = (1 - eps) log(V-1): log(V-1) up to the eps = 1e-3 never-masked mass
    assert abs(mean - (1 - MDLM_EPS) * math.log(V - 1)) < 4 * se + 1e-3
    assert abs(mean - math.log(V - 1)) < 4 * se + 2e-3 * math.log(V - 1) and se < 0.02


def test_unmasked_positions_contribute_exactly_zero():
    m = tiny()
    x0 = torch.randint(0, V - 1, (4, 16), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.2, 0.5, 0.8, 1.0])
    with torch.no_grad():
        assert diffusion_loss(m, x0, t, torch.ones(4, 16)).item() == 0.0  # nothing masked: exactly 0
        u = torch.rand(4, 16, generator=torch.Generator().manual_seed(2))
        loss = diffusion_loss(m, x0, t, u)
        masked = u < mdlm_mask_rate(t)[:, None]
        assert masked.any() and (~masked).any()
        z = torch.where(masked, torch.full_like(x0, m.mask_id), x0)
        logits = m(z)
        lp = torch.log_softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
        manual = (-lp * masked / t.double()[:, None]).sum() / x0.numel()  # masked positions only
        assert torch.allclose(loss, manual, rtol=1e-5, atol=1e-7)
        # changing the clean token at an unmasked position changes nothing but its own (absent) term
        assert torch.isinf(logits[..., m.mask_id]).all() and (logits[..., m.mask_id] < 0).all()  # zero masking


def test_antithetic_estimator_matches_dense_integration():
    m = tiny(seed=3)
    T = 4
    x0 = torch.tensor([[1, 5, 2, 7]])
    # exact E over the 2^T masks of sum_masked -log p(x0 | z), for every mask pattern (the net is time-agnostic)
    pats = torch.tensor(list(itertools.product([0, 1], repeat=T)), dtype=torch.bool)
    with torch.no_grad():
        z = torch.where(pats, torch.full((len(pats), T), m.mask_id), x0.expand(len(pats), T))
        lp = torch.log_softmax(m(z).double(), -1).gather(-1, x0.expand(len(pats), T)[..., None])[..., 0]
    L = (-lp * pats).sum(1)                                       # (16,)
    k = pats.sum(1).double()
    ts = torch.linspace(MDLM_T_MIN, 1.0, 200001, dtype=torch.float64)
    p = mdlm_mask_rate(ts)[:, None]
    f = ((p ** k) * ((1 - p) ** (T - k)) * L).sum(1) / ts / T    # per-token loss at t, exact in the mask
    exact = torch.trapezoid(f, ts).item() / (1 - MDLM_T_MIN)      # E_{t ~ U[1e-3, 1]}
    rng = np.random.default_rng(0)
    B, K = 64, 40
    strat, t_strat, t_iid = [], [], []
    xb = x0.expand(B, T)
    with torch.no_grad():
        for r in range(K):
            t, u = diffusion_noise(rng, B, T, 0, 1)               # one global batch: stratified t
            strat.append(diffusion_loss(m, xb, t, u).item())
            t_strat.append(t.double().numpy())
            t_iid.append(rng.random(B) * (1 - MDLM_T_MIN) + MDLM_T_MIN)
    mean, se = np.mean(strat), np.std(strat) / math.sqrt(K)
    assert abs(mean - exact) < 4 * se + 1e-6, (mean, exact, se)
    # the low-discrepancy t reduces the variance of the t-part of the estimator: the batch mean of the exact
    # per-mask expectation f(t) (bounded, so sample variances are reliable; the full estimator's variance is
    # dominated by rare small-t masks, whose sample estimate is too noisy to compare)
    batch_mean = lambda draws: np.array([np.interp(d, ts.numpy(), f.numpy()).mean() for d in draws])
    more = [diffusion_noise(rng, B, T, 0, 1)[0].double().numpy() for _ in range(400)]
    iid_more = [rng.random(B) * (1 - MDLM_T_MIN) + MDLM_T_MIN for _ in range(400)]
    v_strat, v_iid = batch_mean(t_strat + more).var(), batch_mean(t_iid + iid_more).var()
    assert v_strat < 0.5 * v_iid, (v_strat, v_iid)


def noise_numpy(rng, B, T, stratum, n):
    return diffusion_noise(rng, B, T, stratum, n)


def noise_device(rng, B, T, stratum, n):
    """train.py's path: the same noise from a torch Generator seeded by the batch's numpy one (CPU here)."""
    return diffusion_noise_device(device_generator(rng, 'cpu'), B, T, stratum, n, 'cpu')


@pytest.mark.parametrize('noise', [noise_numpy, noise_device])
def test_stratified_t_covers_the_global_batch(noise):
    rng = np.random.default_rng(0)
    ts = np.concatenate([noise(rng, 4, 8, g, 3)[0].numpy() for g in range(3)])
    raw = (ts - MDLM_T_MIN) / (1 - MDLM_T_MIN)
    assert sorted(np.floor(raw * 12).astype(int).tolist()) == list(range(12))  # one t per stratum of 1/12


def test_ddpm_cache_equals_ddpm_and_saves_calls():
    m = tiny(seed=4)
    z = torch.full((1, 8), m.mask_id)
    a, sa = mdlm_sample(m, z, steps=64, cache=False, generator=torch.Generator().manual_seed(7))
    b, sb = mdlm_sample(m, z, steps=64, cache=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert (a != m.mask_id).all()
    assert sa['calls_saved'] == 0 and sb['calls_saved'] > 0
    assert sa['network_calls'] == sb['network_calls'] + sb['calls_saved']


@pytest.mark.parametrize('batch', [8, 32])
def test_ddpm_cache_per_row_equals_ddpm_at_batch(batch):
    """The per-sequence cache recomputes only the rows that changed; at batch 8 and 32 the tokens equal
    ddpm's for the seed (the noise is drawn for the whole batch each step; a row's output does not depend
    on the other rows, so the recomputed rows get the probabilities ddpm gets, up to float rounding of a
    smaller GEMM, far below the Gumbel-max decision margins) and far fewer rows go through the network."""
    m = tiny(seed=6)
    z = torch.full((batch, 8), m.mask_id)
    z[: batch // 2, :3] = torch.randint(0, V - 1, (batch // 2, 3), generator=torch.Generator().manual_seed(1))
    a, sa = mdlm_sample(m, z, steps=64, cache=False, generator=torch.Generator().manual_seed(3))
    b, sb = mdlm_sample(m, z, steps=64, cache=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a != m.mask_id).all() and torch.equal(a[: batch // 2, :3], z[: batch // 2, :3])
    assert sa['row_calls'] == 64 * batch and sa['rows_saved'] == 0  # no mask left at t_end for 8 tokens and 64 steps
    assert sa['row_calls'] == sb['row_calls'] + sb['rows_saved']
    # 8 tokens to fill in 64 steps: at most 8 changes per row, so at most 8 + 1 recomputations per row
    assert sb['row_calls'] <= 9 * batch and sa['row_calls'] >= 2 * sb['row_calls']
    # a row's probabilities do not depend on which rows are in the batch (to rounding: another GEMM shape)
    full = m(z)
    part = m(z[[1, 5]])
    assert torch.allclose(full[[1, 5]], part, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_ddpm_cache_equals_ddpm_on_cuda_with_device_draws():
    """On CUDA the Gumbel uniforms come from the CUDA generator (no CPU draw, no copy per step): the CPU
    RNG is untouched, and ddpm_cache still gives ddpm's samples for a seed."""
    m = tiny(seed=6).cuda()
    z = torch.full((8, 8), m.mask_id, device='cuda')
    cpu_state = torch.get_rng_state()
    g = torch.Generator(device='cuda').manual_seed(3)
    a, _ = mdlm_sample(m, z, steps=32, cache=False, generator=g)
    b, _ = mdlm_sample(m, z, steps=32, cache=True, generator=torch.Generator(device='cuda').manual_seed(3))
    assert a.is_cuda and torch.equal(a, b) and (a != m.mask_id).all()
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert not torch.equal(g.get_state(), torch.Generator(device='cuda').manual_seed(3).get_state())


def test_infilling_never_changes_known_tokens_and_semi_ar_extends():
    m = tiny(seed=5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V - 1, (3, 16), generator=g)
    known = torch.rand(3, 16, generator=g) < 0.5
    z = torch.where(known, x, torch.full_like(x, m.mask_id))
    out, _ = mdlm_sample(m, z, steps=16, cache=True, generator=g)
    assert torch.equal(out[known], x[known]) and (out != m.mask_id).all()
    long, _ = mdlm_semi_ar(m, 2, 40, steps=8, stride=8, generator=g)
    assert long.shape == (2, 40) and (long != m.mask_id).all()


def test_adaptive_masking_keeps_the_mean_rate():
    g = torch.Generator().manual_seed(0)
    rate = torch.tensor([1e-3, 0.1, 0.5, 0.9, 0.999])
    score = torch.rand(5, 64, generator=g)
    for strength in (-2.0, 0.5, 3.0):
        p = adaptive_mask_probs(rate, score, strength)
        assert torch.allclose(p.mean(1), rate.double(), rtol=1e-6, atol=1e-9)
        assert ((p > 0) & (p < 1)).all()
        c = torch.corrcoef(torch.stack([p[2], score[2].double()]))[0, 1]
        assert (c > 0.5) if strength > 0 else (c < -0.5)  # biased toward hard (strength > 0) or easy tokens
    assert torch.allclose(adaptive_mask_probs(rate, score, 0.0), rate.double()[:, None].expand(5, 64))
    assert curriculum_direction(0.1) == -1 and curriculum_direction(0.9) == 1 and abs(curriculum_direction(0.5)) < 1e-9


def test_importance_target_is_detached_and_val_stays_plain():
    kw = dict(importance=True, adaptive_masking=True, curriculum=True, adaptive_strength=2.0)
    x0 = torch.randint(0, V - 1, (4, 16), generator=torch.Generator().manual_seed(1))
    t, u = diffusion_noise(np.random.default_rng(0), 4, 16, 0, 1)
    grads = {}
    for w in (0.0, 5.0):
        m = tiny(seed=6, importance_weight=w, **kw).train()
        diffusion_loss(m, x0, t, u, progress=0.9).backward()
        grads[w] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    backbone = [n for n in grads[5.0] if not n.startswith('importance.')]
    # the estimator's loss never reaches the backbone (its target is the backbone's DETACHED loss) ...
    assert all(torch.equal(grads[0.0][n], grads[5.0][n]) for n in backbone)
    # ... and the estimator learns from it
    assert any(grads[5.0][n].abs().sum() > 0 for n in grads[5.0] if n.startswith('importance.'))
    # eval mode: the plain NELBO, whatever the options (uniform masking, no estimator term)
    m.eval()
    plain = tiny(seed=6)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith('importance.')})
    with torch.no_grad():
        a = diffusion_loss(m, x0, t, u)
        b = diffusion_loss(plain.eval(), x0, t, u)
        c = nelbo(plain, x0, t, u)[0].sum() / x0.numel()  # what evals/mdlm.py sums
    assert a.dtype == torch.float64 and torch.equal(a, b) and torch.allclose(a, c)
    assert diffusion_loss_name(m.cfg) == 'weighted_nelbo+importance_mse' and diffusion_loss_name(plain.cfg) == 'nelbo'


def test_train_mdlm_ddp_equals_accumulation(char_data, tmp_path):
    """train.py with the importance options: the weighted loss is logged under its name, val_loss is finite,
    and 2 gloo processes give what 1 process gives with 2 accumulation steps (noise and t strata are drawn
    from the batch's own generator, stratified over the global batch)."""
    common = [f'--data_dir={char_data}', '--arch=mdlm', '--pos=rope', '--bias=False', '--cond_dim=16',
              '--importance=True', '--adaptive_masking=True', '--curriculum=True', '--imp_n_layer=1',
              '--imp_n_embd=16', '--imp_n_head=2', '--max_iters=4', '--eval_interval=2',
              '--gradient_accumulation_steps=2']
    one, two = tmp_path / 'one', tmp_path / 'two'
    run_train(common + [f'--out_dir={one}'])
    r = run_train(common + [f'--out_dir={two}'], torchrun=2)
    assert '2 process(es)' in r.stdout
    a, b = read_metrics(one), read_metrics(two)
    train = [x for x in a if x.get('kind') == 'train']
    assert train and all(x['loss_name'] == 'weighted_nelbo+importance_mse' for x in train)
    assert [(x['kind'], x['iter']) for x in a] == [(x['kind'], x['iter']) for x in b]
    for x, y in zip(a, b):
        for key in ('loss', 'train_loss', 'val_loss'):
            if key in x:
                assert math.isfinite(x[key]) and y[key] == pytest.approx(x[key], abs=1e-5), (x, y)
    wa = torch.load(one / 'last.pt', weights_only=True)
    wb = torch.load(two / 'last.pt', weights_only=True)
    assert wa['model_args']['arch'] == 'mdlm' and wa['model_args']['mask_id'] >= 0
    for k, v in wa['model'].items():
        assert torch.allclose(v, wb['model'][k], atol=1e-5), k
