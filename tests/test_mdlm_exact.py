"""Exact checks of MDLM's equations on a model small enough to enumerate every sequence, mask and order
(V real tokens + [MASK], T positions). They would fail if the NELBO's weight, the mask schedule or the
sampler's transition were wrong.

The identity (absorbing diffusion = any-order autoregression; Ou et al. 2024, "Your absorbing discrete
diffusion secretly models the conditional distributions of clean data", and Kitouni et al. 2024): write
c(S) = sum_{i in S} -log p(x^i | x with the positions S masked), p the network's own (time-independent)
conditionals. MDLM's continuous-time NELBO (Sahoo et al. 2024, eq. 10-11) with the log-linear schedule
alpha_t = 1 - m(t), m(t) = (1 - eps) t, masks each position independently with probability m(t) and weights
by -alpha'_t / (1 - alpha_t) = 1/t:
    L = int_0^1 (1/t) sum_S m^{|S|} (1 - m)^{T-|S|} c(S) dt = sum_S c(S) int_0^{1-eps} m^{k-1} (1-m)^{T-k} dm,
k = |S| (substituting m = (1 - eps) t, dt / t = dm / m). With eps = 0 the integral is the Beta function
B(k, T-k+1) = (k-1)! (T-k)! / T!, which is exactly the probability that, in a uniformly random order sigma,
position i is predicted with the set S \\ {i} still to come, for each of the k positions i of S. Hence
    L(eps = 0) = E_sigma sum_j -log p(x^{sigma_j} | x_{sigma_<j} unmasked, the rest masked)  (AO-AR loss),
and the code's eps = MDLM_EPS leaves out exactly the tail sum_S c(S) int_{1-eps}^1 m^{k-1} (1-m)^{T-k} dm.
The integrands are polynomials of degree T - 1 in t, so Gauss-Legendre quadrature with 8 nodes is exact."""
import itertools
import math

import numpy as np
import pytest
import torch

from model import build_model, ModelConfig
from objectives import diffusion_loss, diffusion_noise, MDLM_EPS, MDLM_T_MIN, nelbo
from sampling import mdlm_sample


def tiny(V, T, seed=0, scale=0.3):
    """A 1-layer MDLM over V real tokens (+ [MASK] = id V), context T, random weights with structure
    (adaLN-zero and the zero head would make a fresh model uniform). No time conditioning (MDLM's default),
    so its conditionals p(x^i | z) depend on z only."""
    torch.manual_seed(seed)
    cfg = ModelConfig(arch='mdlm', vocab_size=V + 1, block_size=T, n_layer=1, n_head=2, n_embd=16, cond_dim=8,
                      bias=False, pos='rope')
    m = build_model(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if 'adaLN' in name or name.startswith('head'):
                p.normal_(0, scale)
    return m.eval()


def states(V, T):
    """Every partially masked sequence, as a (S, T) long tensor (id V = [MASK])."""
    return torch.tensor(list(itertools.product(range(V + 1), repeat=T)), dtype=torch.long)


def conditionals(m, V, T):
    """{state tuple: (T, V) float64 -log p(v | state) for every position}, from one batch of all states."""
    z = states(V, T)
    with torch.no_grad():
        logp = torch.log_softmax(m(z).double(), -1)[..., :V]
    return {tuple(r): -logp[k] for k, r in enumerate(z.tolist())}


def gauss_legendre(a, b, n=8):
    x, w = np.polynomial.legendre.leggauss(n)
    return (b - a) / 2 * x + (a + b) / 2, (b - a) / 2 * w


def masked_state(x, S, V):
    return tuple(V if i in S else v for i, v in enumerate(x))


def ao_ar_loss(nll, x, V, T):
    """E over the T! orders of sum_j -log p(x^{sigma_j} | x_{sigma_<j}), the later positions masked."""
    tot = 0.0
    for order in itertools.permutations(range(T)):
        for j, i in enumerate(order):
            tot += nll[masked_state(x, set(order[j:]), V)][i, x[i]].item()
    return tot / math.factorial(T)


def subsets(T):
    return [set(S) for k in range(1, T + 1) for S in itertools.combinations(range(T), k)]


def test_beta_weights_equal_the_any_order_ar_loss_exactly():
    """The algebraic identity on the network's own conditionals, in float64: sum_S c(S) B(k, T-k+1) equals
    the AO-AR loss (both from one table of conditionals, so only summation order differs: 1e-12)."""
    V, T = 5, 3
    nll = conditionals(tiny(V, T), V, T)
    for x in itertools.product(range(V), repeat=T):
        c = {frozenset(S): sum(nll[masked_state(x, S, V)][i, x[i]].item() for i in S) for S in subsets(T)}
        beta = sum(c[frozenset(S)] * math.factorial(len(S) - 1) * math.factorial(T - len(S)) / math.factorial(T)
                   for S in subsets(T))
        assert beta == pytest.approx(ao_ar_loss(nll, x, V, T), rel=1e-12, abs=0)


def test_code_nelbo_integral_equals_ao_ar_minus_the_eps_tail():
    """The code's per-sequence NELBO (objectives.nelbo summed over a sequence: its 1/t weight, its mask rate (1 - eps) t),
    averaged exactly over the masks (every S, with probability m^k (1 - m)^{T-k}) and integrated over t in
    [0, 1] by exact quadrature, equals the AO-AR loss minus the eps tail. Tolerance 1e-6 relative: the
    network's logits are float32 and the code's batch has another shape than the table's (GEMM rounding)."""
    V, T = 4, 3
    m = tiny(V, T, seed=1)
    nll = conditionals(m, V, T)
    xs = list(itertools.product(range(V), repeat=T))
    Ss = subsets(T)
    tq, wq = gauss_legendre(0.0, 1.0)
    rows = [(x, S, t) for x in xs for S in Ss for t in tq]
    x0 = torch.tensor([r[0] for r in rows])
    u = torch.tensor([[0.0 if i in r[1] else 1.0 for i in range(T)] for r in rows])  # u < rate exactly on S
    t = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    with torch.no_grad():
        val = nelbo(m, x0, t, u)[0].sum(1).view(len(xs), len(Ss), len(tq))
    rate = (1 - MDLM_EPS) * t.double().view(len(xs), len(Ss), len(tq))[0, 0]
    k = torch.tensor([len(S) for S in Ss], dtype=torch.float64)[:, None]
    prob = rate[None] ** k * (1 - rate[None]) ** (T - k)  # P_t(S), (len(Ss), len(tq))
    code = (val * prob[None]).sum(1) @ torch.from_numpy(wq)  # (len(xs),)
    tm, wm = gauss_legendre(1 - MDLM_EPS, 1.0)
    for n, x in enumerate(xs):
        c = [sum(nll[masked_state(x, S, V)][i, x[i]].item() for i in S) for S in Ss]
        tail = sum(ci * float(np.sum(wm * tm ** (len(S) - 1) * (1 - tm) ** (T - len(S)))) for ci, S in zip(c, Ss))
        ao = ao_ar_loss(nll, x, V, T)
        assert code[n].item() + tail == pytest.approx(ao, rel=1e-6)
        assert 0 < tail < 2 * MDLM_EPS * ao  # the eps truncation is small and one-sided


def test_training_estimator_is_within_its_bias_and_noise():
    """The training estimator: t from diffusion_noise (stratified, truncated to [T_MIN, 1]), masks from
    its uniforms, the objective's eval-mode loss (the mean per token of the batch). Its expectation is the
    NELBO integral over t' in [0, 1] of f((1 - T_MIN) t' + T_MIN), which differs from the integral over
    t in [0, 1] (previous test) by at most T_MIN * max_t |f(t) - L|, with f(t) <= sum_S c(S) (f is a
    polynomial bounded by that on [0, 1]); the sampling noise is bounded by 5 standard errors of the
    per-sequence values (conservative: the stratified t makes the true error smaller)."""
    V, T, B = 4, 3, 4096
    m = tiny(V, T, seed=2)
    nll = conditionals(m, V, T)
    Ss = subsets(T)
    rng = np.random.default_rng(0)
    for x in [(0, 1, 2), (3, 3, 0), (2, 0, 1)]:
        c = [sum(nll[masked_state(x, S, V)][i, x[i]].item() for i in S) for S in Ss]
        tq, wq = gauss_legendre(0.0, 1.0)
        f = lambda tt: sum(ci * ((1 - MDLM_EPS) * tt) ** len(S) * (1 - (1 - MDLM_EPS) * tt) ** (T - len(S)) / tt
                           for ci, S in zip(c, Ss))
        L = float(np.sum(wq * f(tq)))
        t, u = diffusion_noise(rng, B, T, 0, 1)
        x0 = torch.tensor([x] * B)
        with torch.no_grad():
            loss = diffusion_loss(m, x0, t, u)
            per_seq = nelbo(m, x0, t, u)[0].sum(1)
        est = loss.item() * T  # the loss is per token
        assert est == pytest.approx(per_seq.mean().item(), rel=1e-6)
        bias_bound = MDLM_T_MIN * (sum(c) + L)
        se = per_seq.std().item() / math.sqrt(B)
        assert abs(est - L) < bias_bound + 5 * se, (est, L, bias_bound, se)


def exact_sampler_distribution(m, V, T, steps, t_end=1e-5):
    """The exact law of mdlm_sample's output from the all-[MASK] sequence (ddpm, `steps` steps), by dynamic
    programming over the (V+1)^T partially masked states: from t to s each masked position independently
    stays masked with probability move_s / move_t, else becomes v with probability p(v | z) (move_t - move_s)
    / move_t, p the network's conditional at the current z; the masks left at t_end are filled by the argmax.
    A step's transition matrix is sum_{a,b} M[a,b] stay^a (1 - stay)^b, a = positions that stay masked, b =
    positions unmasked; the M[a,b] hold the products of the conditionals and are built once."""
    z = states(V, T)
    keys = [tuple(r) for r in z.tolist()]
    index = {k: n for n, k in enumerate(keys)}
    with torch.no_grad():
        logits = m(z)
        p = torch.softmax(logits.double(), -1)[..., :V].numpy()
        amax = logits.argmax(-1).numpy()
    n = len(keys)
    M = np.zeros((T + 1, T + 1, n, n))
    for a_i, src in enumerate(keys):
        masked = [i for i in range(T) if src[i] == V]
        for choice in itertools.product(range(V + 1), repeat=len(masked)):  # V = stays masked
            dst, w, a, b = list(src), 1.0, 0, 0
            for i, v in zip(masked, choice):
                if v == V:
                    a += 1
                else:
                    dst[i], w, b = v, w * p[a_i, i, v], b + 1
            M[a, b, a_i, index[tuple(dst)]] += w
    dist = np.zeros(n)
    dist[index[(V,) * T]] = 1.0
    ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()
    for i in range(steps):
        stay = ((1 - MDLM_EPS) * ts[i + 1]) / ((1 - MDLM_EPS) * ts[i])
        P = sum(M[a, b] * stay ** a * (1 - stay) ** b for a in range(T + 1) for b in range(T + 1 - a))
        dist = dist @ P
    final = {}
    for k, q in zip(keys, dist):
        if q:
            src = index[k]
            out = tuple(int(amax[src, i]) if k[i] == V else k[i] for i in range(T))
            final[out] = final.get(out, 0.0) + q
    return final


def ao_ar_joint(m, V, T):
    """The any-order sampler's joint: P(x) = E_sigma prod_j p(x^{sigma_j} | x_{sigma_<j}, the rest masked),
    the many-step limit of ddpm (at most one position unmasks per step, every order equally likely)."""
    nll = conditionals(m, V, T)
    return {x: ao_ar_loss_prob(nll, x, V, T) for x in itertools.product(range(V), repeat=T)}


def ao_ar_loss_prob(nll, x, V, T):
    tot = 0.0
    for order in itertools.permutations(range(T)):
        tot += math.exp(-sum(nll[masked_state(x, set(order[j:]), V)][i, x[i]].item() for j, i in enumerate(order)))
    return tot / math.factorial(T)


def tv(p, q):
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_ddpm_sampler_reproduces_the_models_joint():
    """What is exactly right: with a time-independent network the ddpm sampler at N steps has the law
    computed by exact_sampler_distribution (a finite-N distribution: several positions can unmask in one
    step, each from the conditional of the same z); as N grows it tends to the any-order AR joint of the
    network's conditionals (an inconsistent set of conditionals has no other 'joint'). So: (a) the exact
    N-step law sums to 1 and is within 0.01 in total variation of the AO-AR joint at N = 256 (deterministic;
    the gap is O(1/N)); (b) n samples of mdlm_sample match the exact N-step law within the sampling noise:
    E[TV] ~ 0.5 sum_x sqrt(2 p(x) (1 - p(x)) / (pi n)) (the mean absolute deviation of a binomial), plus a
    McDiarmid margin sqrt(log(1e6) / (2n)) (each sample moves the TV by at most 1/n), so a correct sampler
    fails with probability < 1e-6. A sampler that ignored the tokens it had already drawn (the product of
    the all-masked marginals) is checked to be far outside that threshold."""
    V, T, N, n = 4, 3, 256, 30000
    m = tiny(V, T, seed=3, scale=2.0)
    exact = exact_sampler_distribution(m, V, T, N)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-12)
    joint = ao_ar_joint(m, V, T)
    assert sum(joint.values()) == pytest.approx(1.0, abs=1e-12)
    assert tv(exact, joint) < 0.01
    z = torch.full((n, T), V)
    x, _ = mdlm_sample(m, z, steps=N, cache=True, generator=torch.Generator().manual_seed(0))
    keys, counts = np.unique(x.numpy(), axis=0, return_counts=True)
    emp = {tuple(int(v) for v in k): c / n for k, c in zip(keys, counts)}
    expected = 0.5 * sum(math.sqrt(2 * q * (1 - q) / (math.pi * n)) for q in exact.values())
    threshold = expected + math.sqrt(math.log(1e6) / (2 * n))
    assert tv(emp, exact) < threshold, (tv(emp, exact), threshold)
    with torch.no_grad():
        p0 = torch.softmax(m(torch.full((1, T), V)).double(), -1)[0, :, :V]
    product = {xx: float(np.prod([p0[i, v].item() for i, v in enumerate(xx)])) for xx in joint}
    assert tv(product, exact) > 3 * threshold
