"""Atlas.flops_per_token against torch.utils.flop_counter on a tiny model: the estimate must count what runs
(the memory's read, gradient pass, momentum and Newton-Schulz matmuls, per token or per chunk), within 5%."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model import ModelConfig, build_model


def measured_and_estimated(arch='atlas', **kw):
    # mem_conv=1: FlopCounterMode counts a grouped convolution's backward as a dense one (49x too many here)
    cfg = ModelConfig(arch=arch, vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, window=8,
                      pos='rope', norm='rmsnorm', bias=False, mem_key_dim=4, mem_hidden=16, mem_poly=2,
                      mem_window=4, mem_chunk=8, mem_conv=1, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    B, T = 2, 32
    idx = torch.randint(0, 64, (B, T))
    counter = FlopCounterMode(display=False)
    # the math SDPA kernel runs attention as matmuls the counter sees (the CPU's fused kernel has no formula)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(idx, idx)[1].backward()
    return counter.get_total_flops() / (B * T), model.flops_per_token(T)


@pytest.mark.parametrize('kw', [dict(mem_muon=False), dict(mem_muon=True, mem_muon_scope='token'),
                                dict(mem_muon=True, mem_muon_scope='chunk'),
                                dict(mem_muon=True, mem_muon_scope='chunk', mem_ns_steps=2),
                                dict(mem_muon=True, mem_depth=1)], ids=str)
def test_atlas_flops_per_token_matches_flop_counter(kw):
    measured, estimate = measured_and_estimated(**kw)
    assert abs(estimate - measured) <= 0.05 * measured, (estimate, measured)


def test_gpt_flops_per_token_matches_flop_counter():
    measured, estimate = measured_and_estimated('gpt')
    assert abs(estimate - measured) <= 0.05 * measured, (estimate, measured)


def test_per_chunk_muon_costs_less_than_per_token():
    tok = measured_and_estimated(mem_muon=True, mem_muon_scope='token')[0]
    chk = measured_and_estimated(mem_muon=True, mem_muon_scope='chunk')[0]
    assert chk < 0.5 * tok
