"""The cheaper Muon steps of the Atlas memory and its mixed-precision scan: per-chunk Newton-Schulz is the
per-token one when a chunk holds one token, and differs from it otherwise; under bfloat16 autocast the scan
reads bfloat16 q, k, v while the memory state stays float32."""
import math

import torch

import model as M
from model import ModelConfig, build_model, omega_scan


def random_memory(B=2, H=2, T=11, D=6, dv=5, hidden=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    k, q, v = r(B, H, T, D) / math.sqrt(D), r(B, H, T, D) / math.sqrt(D), r(B, H, T, dv)
    W0 = [r(H, hidden, D) / math.sqrt(D), r(H, dv, hidden) / math.sqrt(hidden)]
    gates = (torch.log(0.8 + 0.2 * u(B, H, T)), 0.3 * u(B, H, T), torch.log(0.9 * u(B, H, T) + 0.05), u(B, H, T))
    return k, v, q, gates, W0


def scan(scope, chunk, steps=5):
    k, v, q, gates, W0 = random_memory()
    return omega_scan(k, v, q, *gates, W0, chunk, 3, True, ns_steps=steps, muon_scope=scope)


def test_per_chunk_muon_is_per_token_muon_for_one_token_chunks():
    # float64, the same operations in another grouping: agreement to ~1e-12
    torch.testing.assert_close(scan('chunk', 1), scan('token', 1), rtol=1e-10, atol=1e-12)
    assert (scan('chunk', 4) - scan('token', 4)).abs().max() > 1e-6   # a real approximation for b > 1
    assert (scan('chunk', 4, steps=2) - scan('chunk', 4)).abs().max() > 1e-6  # ns_steps is used


def test_scan_in_bf16_with_fp32_state_under_autocast(monkeypatch):
    cfg = ModelConfig(arch='atlas', vocab_size=40, block_size=32, n_layer=1, n_head=2, n_embd=32, window=8,
                      mem_key_dim=4, mem_poly=2, mem_window=3, mem_chunk=4, mem_muon=True, mem_muon_scope='chunk',
                      pos='rope', norm='rmsnorm', bias=False)
    model = build_model(cfg)
    seen = {}
    real = M.omega_scan

    def spy(k, v, q, log_alpha, *rest, **kw):
        seen.update(k=k.dtype, v=v.dtype, q=q.dtype, gates=log_alpha.dtype)
        return real(k, v, q, log_alpha, *rest, **kw)
    monkeypatch.setattr(M, 'omega_scan', spy)
    mem = model.memories()[0]
    mem.diag = {}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(torch.randint(0, 40, (2, 32)), torch.randint(0, 40, (2, 32)))[1].backward()
    assert seen == dict(k=torch.bfloat16, v=torch.bfloat16, q=torch.bfloat16, gates=torch.float32)
    assert all(w.dtype == torch.float32 for w in mem.diag['W'] + mem.diag['S'])
