"""FlexAttention (attn_impl='flex') against the dense-mask SDPA reference (attn_impl='sdpa'): document
masks, sliding windows and the agglutinative bias give the same logits; the unmasked paths stay on SDPA's
is_causal (flash-eligible). On the CPU FlexAttention runs forward only (torch has no CPU backward for it), so
the gradient check runs on CUDA only."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import model as M
from model import ModelConfig, build_model

pytestmark = pytest.mark.skipif(M.flex_attention is None, reason="FlexAttention needs torch >= 2.5")

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
V, T = 40, 48

CASES = {
    'gpt_doc': dict(arch='gpt', doc_mask=True),
    'gpt_window': dict(arch='gpt', window=7),
    'gpt_doc_window': dict(arch='gpt', doc_mask=True, window=5),
    'encoder_doc': dict(arch='encoder', doc_mask=True, norm='rmsnorm', pos='rope', mlp='geglu', bias=False),
    'mdlm_doc': dict(arch='mdlm', doc_mask=True, pos='rope'),
    'atlas_window': dict(arch='atlas', window=6, mem_chunk=8, mem_key_dim=4, mem_poly=1),
    'agglu': dict(arch='gpt', attention='agglutinative'),
    'agglu_doc': dict(arch='gpt', attention='agglutinative', doc_mask=True),
    'backpack_agglu': dict(arch='backpack', attention='agglutinative', n_senses=4),
}


def pair(kw):
    """Two copies of one randomly initialised model, sdpa and flex; agglutinative biases made non-zero
    and non-trivial vocabulary tables, so every term of the bias is exercised."""
    cfg = ModelConfig(vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=32, dropout=0.0, attn_impl='sdpa', **kw)
    torch.manual_seed(0)
    ref = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    if cfg.attention == 'agglutinative':
        ref.set_token_tables(torch.randint(0, 2, (V,), generator=g).tolist(),
                             torch.randint(0, 4, (V,), generator=g).tolist())
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if 'agglu' in name:
                    p.copy_(torch.randn(p.shape, generator=g))
    if cfg.arch == 'mdlm':  # adaLN-zero and the zero head would make every logit 0
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if 'adaLN' in name or name.startswith('head'):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
    flex = build_model(replace(cfg, attn_impl='flex'))
    flex.load_state_dict(ref.state_dict())
    return ref.to(DEVICE), flex.to(DEVICE)


def batch(B=3):
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, V - 1, (B, T), generator=g)
    # packed documents of uneven length, boundaries differing per row
    doc = (torch.rand(B, T, generator=g) < 0.12).long().cumsum(1)
    return idx.to(DEVICE), doc.to(DEVICE)


def logits_of(model, idx, doc):
    if model.cfg.arch == 'mdlm':
        return model(idx, doc=doc)[0]
    if model.cfg.arch == 'encoder':
        return model(idx, doc=doc)[0]
    return model(idx, doc=doc, all_logits=True)[0]


@pytest.mark.parametrize('case', list(CASES))
def test_flex_forward_matches_dense_sdpa(case):
    ref, flex = pair(CASES[case])
    ref.eval(), flex.eval()
    idx, doc = batch()
    with torch.no_grad():
        a, b = logits_of(ref, idx, doc), logits_of(flex, idx, doc)
    scale = a[..., :V - 1].abs().max().item()
    assert scale > 1e-3
    # float32, the same math through two kernels (a dense masked softmax vs FlexAttention's blockwise online
    # softmax): the orders of the sums differ, so results agree to a few float32 ulps of the largest logit
    # (~1e-6 relative, seen: <= 5e-7), far below a masking error (a wrong mask moves logits by > 1e-3 relative)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * scale)


def test_flex_detects_a_wrong_mask():
    """The comparison above can fail: a flex model with the window switched off differs from the reference."""
    ref, flex = pair(CASES['gpt_window'])
    flex.cfg = replace(flex.cfg, window=0, doc_mask=True)
    flex.trunk.cfg = flex.cfg
    ref.eval(), flex.eval()
    idx, doc = batch()
    with torch.no_grad():
        a = logits_of(ref, idx, doc)
        diff = (a - logits_of(flex, idx, doc)).abs().max().item()
    assert diff > 1e-3 * a.abs().max().item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward on the CPU")
@pytest.mark.parametrize('case', ['gpt_doc_window', 'encoder_doc', 'agglu_doc'])
def test_flex_backward_matches_dense_sdpa(case):
    ref, flex = pair(CASES[case])
    idx, doc = batch()
    targets = torch.roll(idx, -1, 1)
    for m in (ref, flex):
        m.train()
        m(idx, targets, doc=doc)[1].backward()
    for (name, p), q in zip(ref.named_parameters(), flex.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        # float32 gradients through two kernels: TF32 is off by default for matmuls, so a few ulps of the
        # largest gradient entry
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_auto_picks_flex_only_on_cuda_without_attention_dropout():
    cfg = ModelConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16, doc_mask=True)
    assert not M.use_flex(cfg, 'cpu', training=True)
    assert M.use_flex(cfg, 'cuda', training=True)
    assert not M.use_flex(replace(cfg, dropout=0.1), 'cuda', training=True)
    assert M.use_flex(replace(cfg, dropout=0.1), 'cuda', training=False)
    assert not M.use_flex(replace(cfg, attn_impl='sdpa'), 'cuda', training=False)
    assert M.use_flex(replace(cfg, attn_impl='flex'), 'cpu', training=False)
    with pytest.raises(ValueError, match='attention dropout'):
        ModelConfig(attn_impl='flex', dropout=0.1)


def test_one_block_mask_per_forward():
    """create_block_mask runs once per forward, whatever the number of layers."""
    _, flex = pair(CASES['agglu_doc'])
    flex.eval()
    calls = []
    real = M.create_block_mask
    M.create_block_mask = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with torch.no_grad():
            logits_of(flex, *batch())
    finally:
        M.create_block_mask = real
    assert len(calls) == 1


@pytest.mark.parametrize('arch,causal', [('gpt', True), ('encoder', False), ('mdlm', False), ('backpack', True)])
def test_unmasked_paths_use_is_causal_without_a_mask(arch, causal, monkeypatch):
    """Without documents, windows or biases no mask reaches SDPA (flash-eligible): causal paths ask for
    is_causal=True, bidirectional ones for no mask at all."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        seen.append((attn_mask is None, is_causal))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)
    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    cfg = ModelConfig(arch=arch, vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=32, pos='rope',
                      n_senses=4)
    m = build_model(cfg).eval()
    with torch.no_grad():
        m(torch.randint(0, V - 1, (2, T)))
    assert seen and all(s == (True, causal) for s in seen), seen
