"""The faster forms of three blocks against the plain ones they replace: the encoder's logits at a fixed
budget of target positions (same loss and gradients as logits everywhere), Backpack's sense table over the
vocabulary (same senses as per distinct id, no torch.unique), and RMSNorm through F.rms_norm (same values
as the written formula, same parameter names)."""
from dataclasses import replace

import pytest
import torch

import model as M
from model import ModelConfig, build_model

V, T = 50, 40


def encoder(budget, dropout=0.0):
    cfg = ModelConfig(arch='encoder', vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=32, norm='rmsnorm',
                      pos='rope', mlp='geglu', bias=False, dropout=dropout, doc_mask=True, mlm_logit_budget=budget)
    torch.manual_seed(0)
    return build_model(cfg)


def mlm_batch(rate, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (B, T), generator=g)
    chosen = torch.rand(B, T, generator=g) < rate
    targets = torch.where(chosen, torch.randint(0, V, (B, T), generator=g), torch.full_like(idx, -1))
    doc = (torch.rand(B, T, generator=g) < 0.1).long().cumsum(1)
    return idx, targets, doc


@pytest.mark.parametrize('rate', [0.15, 0.4])
def test_encoder_budget_loss_and_grads_equal_full_logits(rate):
    full, budget = encoder(0.0).train(), encoder(0.5).train()
    budget.load_state_dict(full.state_dict())
    idx, targets, doc = mlm_batch(rate)
    assert (targets >= 0).sum() <= 0.5 * targets.numel()  # the targets fit the budget
    logits_f, loss_f = full(idx, targets, doc)
    logits_b, loss_b = budget(idx, targets, doc)
    K = -(-int(0.5 * targets.numel()) // 64) * 64
    assert logits_f.shape == (4, T, V) and logits_b.shape == (K, V)
    # float32 mean of the same per-token losses, summed in another order: a few ulps
    torch.testing.assert_close(loss_b, loss_f, rtol=1e-6, atol=1e-6)
    loss_f.backward()
    loss_b.backward()
    for (name, p), q in zip(full.named_parameters(), budget.parameters()):
        # the same gradient terms, reduced through different shapes: float32 ulps of the largest entry
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_encoder_budget_shape_is_static_and_eval_keeps_every_position():
    m = encoder(0.25).train()
    shapes = set()
    for seed in range(3):
        idx, targets, doc = mlm_batch(0.1 + 0.05 * seed, seed=seed)
        shapes.add(tuple(m(idx, targets, doc)[0].shape))
    assert shapes == {(64, V)}  # ceil(0.25 * 160) = 40 -> 64, whatever the number of targets
    m.eval()
    with torch.no_grad():
        assert m(idx, targets, doc)[0].shape == (4, T, V)
        assert m(idx)[0].shape == (4, T, V)


def test_encoder_budget_too_small_leaves_targets_out():
    """The budget decides the loss when targets overflow it: the property above can fail."""
    full, budget = encoder(0.0).train(), encoder(0.1).train()
    budget.load_state_dict(full.state_dict())
    idx, targets, doc = mlm_batch(0.8)
    assert abs(full(idx, targets, doc)[1].item() - budget(idx, targets, doc)[1].item()) > 1e-4


def backpack(V_, dropout=0.0):
    cfg = ModelConfig(arch='backpack', vocab_size=V_, block_size=T, n_layer=1, n_head=2, n_embd=32, n_senses=4,
                      dropout=dropout)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_backpack_vocabulary_table_equals_per_token_senses(monkeypatch):
    m = backpack(V)
    idx = torch.randint(0, V, (3, T))  # 120 positions >= V = 50: the vocabulary-table path
    called = []
    real = torch.unique
    monkeypatch.setattr(torch, 'unique', lambda *a, **k: called.append(1) or real(*a, **k))
    with torch.no_grad():
        C = m.senses(idx)
        ref = m.sense_net(m.trunk.wte(idx))
    assert not called
    # float32: the same per-row network through matmuls of different batch sizes
    torch.testing.assert_close(C, ref, rtol=1e-5, atol=1e-6)
    big = backpack(4 * V)  # vocabulary larger than the batch: the distinct-id path
    with torch.no_grad():
        big.senses(idx)
    assert called


def test_rmsnorm_matches_formula_and_loads_old_state():
    torch.manual_seed(0)
    norm = M.RMSNorm(24)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(24))
    assert list(norm.state_dict()) == ['weight']
    x = 3 * torch.randn(5, 7, 24)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    # float32: a fused reduction vs pow/mean/rsqrt, a few ulps relative
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-6)
    xb = x.bfloat16()
    refb = (xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + norm.eps)).bfloat16() * norm.weight
    assert norm(xb).dtype == refb.dtype == torch.float32
    # bfloat16 input: the old form rounded x / rms(x) to bf16 (8 bits) before the gain, the fused one does not
    torch.testing.assert_close(norm(xb), refb, rtol=1e-2, atol=1e-2)
    other = M.RMSNorm(24)
    other.load_state_dict({'weight': norm.weight.detach().clone()})
    torch.testing.assert_close(other(x), norm(x), rtol=1e-6, atol=1e-7)  # a loaded copy computes what the module does
