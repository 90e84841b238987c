"""Atlas memory: causality, chunked == sequential, the Titans special case, writes store, gradients
reach the write path, and the diagnostics' effective rank."""
import math

import pytest
import torch

from evals.literature import causal_probe, effective_rank, gate_health, retrieval_positions
from model import Atlas, memory_apply, ModelConfig, newton_schulz5, omega_scan, poly_features, poly_monomials

torch.set_num_threads(1)


def tiny_cfg(**kw):
    base = dict(arch='atlas', vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32, window=8,
                mem_key_dim=4, mem_poly=2, mem_window=3, mem_chunk=4, mem_muon=True, pos='rope', norm='rmsnorm',
                bias=False, mem_lr=0.5)
    base.update(kw)
    return ModelConfig(**base)


def random_memory(B=2, H=2, T=11, D=6, dv=5, hidden=7, depth=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    k, q = r(B, H, T, D) / math.sqrt(D), r(B, H, T, D) / math.sqrt(D)
    v = r(B, H, T, dv)
    shapes = [(dv, D)] if depth == 1 else [(hidden, D), (dv, hidden)]
    W0 = [r(H, o, i) / math.sqrt(i) for o, i in shapes]
    gates = dict(log_alpha=torch.log(0.8 + 0.2 * u(B, H, T)), eta=0.3 * u(B, H, T),
                 log_theta=torch.log(0.9 * u(B, H, T) + 0.05), gamma=u(B, H, T))
    return k, v, q, gates, W0


def sequential_reference(k, v, q, g, W0, chunk, window, muon, residual):
    """Token by token with autograd gradients: S_t = theta_t S + sum_{window} gamma_i grad_i(W at the chunk
    start), W_t = alpha_t W - eta_t (NS_5(S_t) or S_t); reads of a chunk use its start state."""
    B, H, T, _ = k.shape
    outs = torch.zeros(B, H, T, v.shape[-1], dtype=k.dtype)
    for b in range(B):
        for h in range(H):
            W = [w[h].clone() for w in W0]
            S = [torch.zeros_like(w) for w in W]
            for t in range(T):
                if t % chunk == 0:
                    Wc = [w.clone().requires_grad_(True) for w in W]
                outs[b, h, t] = memory_apply([w[None, None] for w in Wc], q[b, h, t][None, None, None], residual)[0][0, 0, 0]
                loss = 0
                for i in range(max(0, t - window + 1), t + 1):
                    y = memory_apply([w[None, None] for w in Wc], k[b, h, i][None, None, None], residual)[0][0, 0, 0]
                    loss = loss + g['gamma'][b, h, i] * 0.5 * (y - v[b, h, i]).pow(2).sum()
                grads = torch.autograd.grad(loss, Wc)
                alpha, theta, eta = g['log_alpha'][b, h, t].exp(), g['log_theta'][b, h, t].exp(), g['eta'][b, h, t]
                S = [theta * s + gr for s, gr in zip(S, grads)]
                W = [alpha * w - eta * (newton_schulz5(s) if muon else s) for w, s in zip(W, S)]
    return outs


@pytest.mark.parametrize('depth,muon,chunk,window', [(2, True, 4, 3), (2, False, 4, 3), (1, False, 3, 2),
                                                     (1, True, 5, 1), (2, False, 1, 3)])
def test_chunked_equals_sequential(depth, muon, chunk, window):
    k, v, q, g, W0 = random_memory(depth=depth)
    got = omega_scan(k, v, q, g['log_alpha'], g['eta'], g['log_theta'], g['gamma'], W0, chunk, window, muon)
    want = sequential_reference(k, v, q, g, W0, chunk, window, muon, residual=False)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_c1_no_feature_map_is_titans():
    """Titans (eq. 13-14): S'_t = eta'_t S'_{t-1} - theta'_t grad l(M_{t-1}; x_t), M_t = (1 - a'_t) M_{t-1} + S'_t,
    read y_t = M_{t-1}(q_t), MLP memory with a residual. Atlas with c = 1, no map, no NS, chunk 1, eta = 1,
    gamma = theta', theta = eta', alpha = 1 - a' must give the same reads."""
    B, H, T, d = 1, 2, 9, 4
    k, v, q, g, _ = random_memory(B=B, H=H, T=T, D=d, dv=d)
    gen = torch.Generator().manual_seed(3)
    W0 = [torch.randn(H, 6, d, generator=gen, dtype=torch.float64) / 2, torch.randn(H, d, 6, generator=gen, dtype=torch.float64) / 3]
    lr, mom = g['gamma'], g['log_theta'].exp()
    forget = 1 - g['log_alpha'].exp()
    got = omega_scan(k, v, q, torch.log(1 - forget), torch.ones_like(lr), torch.log(mom), lr, W0, chunk=1,
                     window=1, muon=False, residual=True)
    want = torch.zeros_like(got)
    for h in range(H):
        M = [w[h].clone() for w in W0]
        Sp = [torch.zeros_like(w) for w in M]
        for t in range(T):
            fwd = lambda Ws, z: z + Ws[1] @ torch.nn.functional.gelu(Ws[0] @ z)
            want[0, h, t] = fwd(M, q[0, h, t])
            Mg = [w.clone().requires_grad_(True) for w in M]
            grads = torch.autograd.grad(0.5 * (fwd(Mg, k[0, h, t]) - v[0, h, t]).pow(2).sum(), Mg)
            Sp = [mom[0, h, t] * s - lr[0, h, t] * gr for s, gr in zip(Sp, grads)]
            M = [(1 - forget[0, h, t]) * w + s for w, s in zip(M, Sp)]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_write_lowers_storage_loss():
    k, v, q, g, W0 = random_memory(B=3, H=2, T=16, depth=2, seed=5)
    ones = torch.ones_like(g['eta'])
    for muon in (False, True):
        diag = {}
        omega_scan(k, v, q, torch.zeros_like(ones), 0.2 * ones if not muon else 0.02 * ones, torch.full_like(ones, -30.0),
                   ones, W0, chunk=4, window=4, muon=muon, diag=diag)
        assert diag['storage_post'] < diag['storage_pre'], diag


def test_memory_reset_reads_initial_state():
    k, v, q, g, W0 = random_memory()
    got = omega_scan(k, v, q, g['log_alpha'], g['eta'], g['log_theta'], g['gamma'], W0, 4, 3, write=False)
    torch.testing.assert_close(got, memory_apply([w[None] for w in W0], q, False)[0])


def test_poly_features_kernel():
    """phi(q).phi(k) = a0 + a1 (q.k) + a2 (q.k)^2 + a3 (q.k)^3 exactly."""
    d, p = 5, 3
    log_a = torch.tensor([0.1, -0.3, 0.2, -1.0], dtype=torch.float64)
    mono = poly_monomials(d, p)
    x, y = torch.randn(7, d, dtype=torch.float64), torch.randn(7, d, dtype=torch.float64)
    fx, fy = poly_features(x, log_a, mono), poly_features(y, log_a, mono)
    assert fx.shape[-1] == math.comb(d + p, p)
    s = (x * y).sum(-1)
    a = log_a.exp()
    torch.testing.assert_close((fx * fy).sum(-1), a[0] + a[1] * s + a[2] * s ** 2 + a[3] * s ** 3)


@pytest.mark.parametrize('mode,muon,lr', [('mag', True, 0.5), ('mal', False, 0.01)])
def test_causality_memory_included(mode, muon, lr):
    torch.manual_seed(0)
    model = Atlas(tiny_cfg(atlas_mode=mode, mem_muon=muon, mem_lr=lr)).double().eval()
    x = torch.randint(0, 40, (2, 30))
    base, _ = model(x, all_logits=True)
    for t in (0, 5, 13, 29):
        x2 = x.clone()
        x2[:, t] = (x2[:, t] + 7) % 40
        out, _ = model(x2, all_logits=True)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-12)
        assert (out[:, t:] - base[:, t:]).abs().max() > 1e-6


@pytest.mark.parametrize('mode', ['mag', 'mal'])
def test_gradients_reach_write_path_and_every_gate(mode):
    torch.manual_seed(0)
    model = Atlas(tiny_cfg(atlas_mode=mode))
    x = torch.randint(0, 40, (2, 24))
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    for l, mem in enumerate(model.memories()):
        gw = mem.gates.weight.grad.view(4, mem.H, -1)
        for i, name in enumerate(('alpha', 'eta', 'theta', 'gamma')):
            assert gw[i].abs().sum() > 0, f"layer {l}: no gradient reaches gate {name}"
        dk, dv = mem.dk, mem.dv
        gq = mem.qkv.weight.grad.view(mem.H, 2 * dk + dv, -1)
        assert gq[:, dk:2 * dk].abs().sum() > 0 and gq[:, 2 * dk:].abs().sum() > 0  # key and value projections
        assert mem.poly_log_a.grad.abs().sum() > 0
    # the write path alone: with reads from W0 only (no writes), k and v would get no gradient
    model.zero_grad()
    model.set_memory_writes(False)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    mem = model.memories()[0]
    assert mem.gates.weight.grad is None or mem.gates.weight.grad.view(4, mem.H, -1)[:4].abs().sum() == 0


def test_effective_rank_of_known_matrices():
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    for r in (1, 3, 7):
        A = U[:, :r] @ V[:, :r].T * 2.5      # r equal singular values -> erank exactly r
        er, ent = effective_rank(A)
        assert abs(er.item() - r) < 1e-4 and abs(ent.item() - math.log(r)) < 1e-4
    s = torch.tensor([3.0, 1.0], dtype=torch.float64)
    A = U[:, :2] @ torch.diag(s) @ V[:, :2].T
    p = s / s.sum()
    assert abs(effective_rank(A)[0].item() - math.exp(-(p * p.log()).sum().item())) < 1e-4
    batched = torch.stack([U[:, :1] @ V[:, :1].T, U[:, :4] @ V[:, :4].T])   # per matrix, never across the batch
    torch.testing.assert_close(effective_rank(batched)[0], torch.tensor([1.0, 4.0]), atol=1e-4, rtol=0)


def test_gate_health_on_raw_values():
    g = torch.tensor([0.0, 0.005, 0.5, 0.995, 1.0])
    h = gate_health(g)
    assert h['dead'] == pytest.approx(0.4) and h['sat'] == pytest.approx(0.4)


def test_diagnostics_keys_and_ranges():
    torch.manual_seed(0)
    model = Atlas(tiny_cfg()).eval()
    x = torch.randint(0, 40, (2, 21))
    d = causal_probe(model, x[:, :-1], x[:, 1:])
    for l in range(2):
        assert 1.0 <= d[f'mem{l}_w_in_erank'] <= min(model.memories()[0].hidden, model.memories()[0].D) + 1e-4
        assert 0.0 <= d[f'mem{l}_gate_alpha_mean'] <= 1.0
        assert d[f'mem{l}_storage_pre'] > 0 and f'mem{l}_write_eff' in d and f'mem{l}_gate_mix_sat' in d
    assert 'retrieval_loss' in d and 0 <= d['retrieval_frac'] <= 1
    assert all(m.diag is None for m in model.memories())


def test_retrieval_positions():
    x = torch.tensor([[5, 1, 2, 3, 4, 6, 7, 8]])
    y = torch.tensor([[1, 2, 3, 4, 6, 7, 8, 5]])   # the last answer, 5, was seen only at position 0
    r = retrieval_positions(x, y, window=4)
    assert r.tolist() == [[False] * 7 + [True]]
    assert not retrieval_positions(x, y, window=8).any()
