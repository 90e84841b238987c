"""model.py: rotary invariance, causality and document masks, the encoder's free head size, the MLM
corruption statistics, overfitting one batch, checkpoints rebuilding the same model."""
import math

import numpy as np
import pytest
import torch

import model as M
from checkpoint import load_checkpoint
from corpus import FLAG_MAX_TARGET_STATE, FLAG_STATE_MASK
from model import apply_rotary, build_model, ModelConfig, Rotary
from objectives import (device_generator, diffusion_loss, maskable_positions_device, mlm_mask, mlm_mask_device, objective,
                        special_ids_tensor)


def tiny(arch='gpt', **kw):
    base = dict(arch=arch, vocab_size=48, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    if arch == 'encoder':
        base.update(bias=False, norm='rmsnorm', mlp='geglu', pos='rope')
    base.update(kw)
    torch.manual_seed(0)
    return build_model(ModelConfig(**base)).eval()


def scrambled(model):
    """float64 weights of order one, so that any influence of one token on another is far above
    rounding noise (the GPT-2 init and the encoder's 1/sqrt(d) logit scale make it ~1e-6)."""
    torch.manual_seed(2)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(1.0 if p.dim() == 1 else 0.0, 0.3)
    return model


def logits_of(model, idx, doc=None):
    with torch.no_grad():
        if isinstance(model, M.GPT):
            return model(idx, doc=doc, all_logits=True)[0]
        return model(idx, doc=doc)[0]


# ----------------------------------------------------------------------------- rotary

def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    D = 16
    rot = Rotary(D, base=10000.0, max_len=64)
    q, k = torch.randn(1, 1, 1, D, dtype=torch.float64), torch.randn(1, 1, 1, D, dtype=torch.float64)
    cos, sin = rot(200)  # longer than max_len: the table grows
    assert cos.shape == (200, D // 2)

    def score(m, n):
        qm = apply_rotary(q, cos[m:m + 1].double(), sin[m:m + 1].double())
        kn = apply_rotary(k, cos[n:n + 1].double(), sin[n:n + 1].double())
        assert torch.allclose(qm.norm(), q.norm())  # a rotation keeps the norm
        return (qm * kn).sum().item()

    for m, n in [(0, 0), (3, 7), (10, 2), (5, 5), (31, 0)]:
        for s in (1, 4, 17, 150):
            assert score(m, n) == pytest.approx(score(m + s, n + s), abs=1e-4)
    # and the position does matter: not a trivial invariance
    assert abs(score(3, 7) - score(3, 8)) > 1e-3
    assert abs(score(0, 5) - score(5, 0)) > 1e-3  # depends on the sign of m - n too


def test_rotary_offset_matches_slice():
    rot = Rotary(8, max_len=16)
    full_cos, full_sin = rot(40)
    cos, sin = rot(5, offset=30)
    # both are slices of the one table the module caches (built once for 80 positions), so they are bitwise equal
    assert torch.equal(cos, full_cos[30:35]) and torch.equal(sin, full_sin[30:35])


# ----------------------------------------------------------------------------- causality and masks

CAUSAL_VARIANTS = [dict(), dict(pos='rope'), dict(pos='rope', doc_mask=True), dict(doc_mask=True, norm='rmsnorm',
                                                                                   mlp='swiglu'),
                   dict(pos='rope', doc_mask=True, canon=4)]


def docs_of(T, bounds=(6, 11)):
    doc = torch.zeros(T, dtype=torch.long)
    for b in bounds:
        doc[b:] += 1
    return doc[None].repeat(2, 1)


@pytest.mark.parametrize('kw', CAUSAL_VARIANTS)
def test_causal_model_never_sees_the_future(kw):
    model = scrambled(tiny('gpt', **kw))
    torch.manual_seed(1)
    T = 16
    idx = torch.randint(0, 48, (2, T))
    doc = docs_of(T) if kw.get('doc_mask') else None
    base = logits_of(model, idx, doc)
    assert base.shape == (2, T, 48)
    for t in (1, 7, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.arange(2)) % 48
        out = logits_of(model, changed, doc)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-10), f"position {t} leaked into earlier logits"
        later = torch.arange(T) >= t
        if doc is not None:
            later &= doc[0] == doc[0, t]
        # the change reaches every later position (of its document)
        assert (out[:, later] - base[:, later]).abs().amax(-1).min() > 1e-4


def test_encoder_sees_both_directions():
    model = scrambled(tiny('encoder'))
    torch.manual_seed(1)
    idx = torch.randint(0, 48, (2, 16))
    base = logits_of(model, idx)
    changed = idx.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 48
    out = logits_of(model, changed)
    assert (out[:, 0] - base[:, 0]).abs().max() > 1e-4  # the first position sees the last token


@pytest.mark.parametrize('arch,canon', [('gpt', 0), ('encoder', 0), ('encoder', 3), ('encoder', 5)])
def test_doc_mask_isolates_documents(arch, canon):
    T = 16
    doc = docs_of(T)  # documents [0, 6), [6, 11), [11, 16)
    torch.manual_seed(1)
    idx = torch.randint(0, 48, (2, T))
    model = scrambled(tiny(arch, doc_mask=True, canon=canon))
    base = logits_of(model, idx, doc)
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 5) % 48  # a token of the middle document
    out = logits_of(model, changed, doc)
    inside = doc[0] == 1
    assert torch.allclose(out[:, ~inside], base[:, ~inside], atol=1e-10), "attention crossed a document boundary"
    assert (out[:, inside] - base[:, inside]).abs().max() > 1e-4
    # the same model without the document mask does leak (so the check above can fail)
    leaky = tiny(arch, doc_mask=False, canon=canon).double()
    leaky.load_state_dict(model.state_dict())
    d = (logits_of(leaky, changed, doc) - logits_of(leaky, idx, doc)).abs()
    assert d[:, 11:].max() > 1e-4


def test_canon_layer_is_the_depthwise_convolution_inside_documents():
    """Canon-A (Allen-Zhu 2025): h_t + sum_o w_o h_{t+o}, offsets -1, 0, 1 in an encoder (k = 3), -2..0 in a causal
    trunk; a neighbour beyond the sequence or in another document counts as zero. Checked against the sum written
    out position by position."""
    torch.manual_seed(3)
    for causal, offsets in ((False, [-1, 0, 1]), (True, [-2, -1, 0])):
        layer = M.Canon(ModelConfig(n_embd=8, n_head=2, canon=3), causal).double()
        torch.nn.init.normal_(layer.weight)
        assert layer.offsets == offsets
        x = torch.randn(2, 7, 8, dtype=torch.float64)
        doc = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
        got = layer(x, M.same_document(doc, offsets))
        want = x.clone()
        for b in range(2):
            for t in range(7):
                for w, o in zip(layer.weight, offsets):
                    if 0 <= t + o < 7 and doc[b, t + o] == doc[b, t]:
                        want[b, t] += w * x[b, t + o]
        assert torch.allclose(got, want, atol=1e-12)
        assert torch.allclose(layer(x), layer(x, M.same_document(torch.zeros_like(doc), offsets)), atol=1e-12)
    with pytest.raises(ValueError, match='canon'):
        ModelConfig(canon=-1)
    with pytest.raises(ValueError, match='canon'):
        ModelConfig(arch='mdlm', canon=3)


@pytest.mark.parametrize('arch,canon', [('gpt', 0), ('encoder', 0), ('encoder', 3)])
def test_from_layer_continues_the_forward_pass(arch, canon):
    """Feeding a layer's own states back with from_layer gives the full forward pass (every layer, with a
    document mask), and other states there change the output: the blocks after l really run on them."""
    T = 16
    doc = docs_of(T)
    model = scrambled(tiny(arch, n_layer=3, doc_mask=True, canon=canon))
    torch.manual_seed(1)
    idx = torch.randint(0, 48, (2, T))
    with torch.no_grad():
        full, hs = model.trunk(idx, doc, {0, 1, 2, 3})
        for l in range(4):
            out, again = model.trunk(idx, doc, {l, 3}, from_layer=(l, hs[l]))
            assert torch.allclose(out, full, atol=1e-12) and torch.allclose(again[3], hs[3], atol=1e-12)
            assert torch.equal(again[l], hs[l])
            other, _ = model.trunk(idx, doc, None, from_layer=(l, hs[l] + torch.randn_like(hs[l])))
            assert (other - full).abs().max() > 1e-4
        if arch == 'encoder':  # the Encoder passes it through to its head
            assert torch.allclose(model(idx, doc=doc, from_layer=(2, hs[2]))[0], model(idx, doc=doc)[0], atol=1e-12)
        with pytest.raises(ValueError, match='from_layer'):
            model.trunk(idx, doc, None, from_layer=(4, hs[3]))


def test_attention_mask_none_when_sdpa_is_exact():
    assert M.attention_mask(None, causal=True, T=8) is None
    m = M.attention_mask(torch.tensor([[0, 0, 1, 1]]), causal=True)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m[0, 0], expected)
    w = M.attention_mask(None, causal=False, window=2, T=4)
    assert torch.equal(w[0, 0], (torch.arange(4)[:, None] - torch.arange(4)[None]).abs() < 2)


# ----------------------------------------------------------------------------- encoder shape

def test_encoder_head_size_free_of_d_model():
    cfg = ModelConfig(arch='encoder', vocab_size=100, block_size=32, n_layer=2, n_head=8, d_kv=32, n_embd=384,
                      bias=False, norm='rmsnorm', mlp='geglu', pos='rope')
    torch.manual_seed(0)
    model = build_model(cfg)
    assert cfg.head_dim == 32 and 8 * 32 != 384
    for block in model.trunk.blocks:
        assert tuple(block.attn.qkv.weight.shape) == (3 * 256, 384)
        assert sum(p.numel() for p in block.attn.qkv.parameters()) == 384 * 256 * 3
        assert tuple(block.attn.proj.weight.shape) == (384, 256)
        assert tuple(block.mlp.fc.weight.shape) == (2 * 4 * 384, 384)  # GeGLU: two branches
    trunk_biases = [n for n, _ in model.trunk.named_parameters() if 'bias' in n]
    assert trunk_biases == []
    assert model.trunk.wpe is None and model.trunk.rope is not None
    idx = torch.randint(0, 100, (3, 32))
    targets = torch.full((3, 32), -1)
    targets[:, ::4] = idx[:, ::4]
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 32, 100)
    assert torch.isfinite(loss) and abs(loss.item() - math.log(100)) < 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # the output head is tied to the token embedding: no separate output matrix
    assert sum(p.numel() for p in model.parameters() if p.shape == (100, 384)) == 100 * 384


def test_gpt_default_head_size_and_weight_tying():
    model = tiny('gpt')
    assert model.cfg.head_dim == 16
    logits, _ = model(torch.zeros(1, 5, dtype=torch.long))
    assert logits.shape == (1, 1, 48)  # generation path: last position only
    n = model.num_params()
    assert n == sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=True) == n - 48 * 32 - 16 * 32


def test_generate_is_repeatable_with_a_generator():
    model = tiny('gpt')
    idx = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(3))
    b = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (1, 21) and torch.equal(a, b)


def test_objective_and_unknown_arch():
    assert objective('gpt') == 'causal' and objective('encoder') == 'mlm'
    with pytest.raises(ValueError, match='unknown arch'):
        build_model(ModelConfig(arch='nope'))


def test_optimizer_groups_decay_only_matrices():
    model = tiny('gpt')
    decay, no_decay = M.optimizer_groups(model, 0.1)
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- MLM corruption

def five_sigma(p, n):
    return 5 * math.sqrt(p * (1 - p) / n)


def mlm_numpy(x, seed, rate, mask_id, V, maskable, **kw):
    return mlm_mask(x, np.random.default_rng(seed), rate, mask_id, V, maskable, **kw)


def mlm_device(x, seed, rate, mask_id, V, maskable, **kw):
    """train.py's path: the same corruption drawn with a torch Generator (here on the CPU)."""
    g = device_generator(np.random.default_rng(seed), 'cpu')
    rate = torch.as_tensor(rate) if isinstance(rate, np.ndarray) else rate
    return mlm_mask_device(torch.as_tensor(x), g, rate, mask_id, V, torch.as_tensor(maskable), **kw)


@pytest.mark.parametrize('corrupt', [mlm_numpy, mlm_device])
def test_mlm_mask_statistics(corrupt):
    V, mask_id, rand_low = 1000, 4, 5
    rng = np.random.default_rng(0)
    B, T = 64, 512
    x = rng.integers(rand_low, V, (B, T))
    maskable = rng.random((B, T)) < 0.7
    inputs, targets = corrupt(x, 1, 0.15, mask_id, V, maskable, rand_low=rand_low)
    inputs, targets = inputs.numpy(), targets.numpy()
    chosen = targets != -1
    assert not (chosen & ~maskable).any(), "a non-maskable position was chosen"
    assert (targets[chosen] == x[chosen]).all()
    assert (inputs[~chosen] == x[~chosen]).all(), "a position that is not a target was corrupted"
    n_maskable, n_chosen = maskable.sum(), chosen.sum()
    assert abs(n_chosen / n_maskable - 0.15) < five_sigma(0.15, n_maskable)
    ins = inputs[chosen]
    orig = x[chosen]
    masked = ins == mask_id
    kept = ins == orig
    rand = ~masked & ~kept
    # a random replacement draws the original token again with probability 1/(V - rand_low)
    p_same = 0.1 / (V - rand_low)
    assert abs(masked.mean() - 0.8) < five_sigma(0.8, n_chosen)
    assert abs(rand.mean() - (0.1 - p_same)) < five_sigma(0.1, n_chosen)
    assert abs(kept.mean() - (0.1 + p_same)) < five_sigma(0.1, n_chosen)
    assert ins[rand].min() >= rand_low and ins[rand].max() < V


def test_mlm_mask_respects_replace_fractions_and_is_seeded():
    V = 50
    x = np.random.default_rng(0).integers(5, V, (8, 64))
    maskable = np.ones_like(x, dtype=bool)
    inputs, targets = mlm_mask(x, np.random.default_rng(2), 0.5, 4, V, maskable, replace=(0.0, 0.0, 1.0))
    assert (targets.numpy() != -1).any() and (inputs.numpy() == x).all()
    a = mlm_mask(x, np.random.default_rng(7), 0.3, 4, V, maskable, span_mean=3.0)
    b = mlm_mask(x, np.random.default_rng(7), 0.3, 4, V, maskable, span_mean=3.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mlm_mask_device_is_seeded_by_the_batch_rng_and_keeps_specials():
    """The device path is a pure function of the batch's numpy Generator (DDP = accumulation = resume rest
    on it) and never chooses a special token or a flagged-out position."""
    V = 50
    x = torch.from_numpy(np.random.default_rng(0).integers(0, V, (8, 64)))
    flags = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (8, 64)))
    meta = {'special_ids': {'[PAD]': 0, '[SEP]': 1, '[MASK]': 2, '[UNK]': 3}}
    maskable = maskable_positions_device(x, flags, special_ids_tensor(meta, 'cpu'))
    assert torch.equal(maskable, (x > 3) & ((flags & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE))
    a = mlm_device(x, 7, 0.5, 2, V, maskable, rand_low=4)
    b = mlm_device(x, 7, 0.5, 2, V, maskable, rand_low=4)
    c = mlm_device(x, 8, 0.5, 2, V, maskable, rand_low=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    chosen = a[1] != -1
    assert chosen.any() and not (chosen & ~maskable).any()


def run_lengths(row):
    runs, n = [], 0
    for c in row:
        if c:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


def test_mlm_span_masking_hits_budget_with_spans():
    V, mask_id = 100, 4
    rng = np.random.default_rng(0)
    B, T = 64, 200
    x = rng.integers(5, V, (B, T))
    maskable = np.ones((B, T), dtype=bool)
    maskable[:, ::25] = False  # a few specials (separators) that must never be chosen
    _, targets = mlm_mask(x, np.random.default_rng(3), 0.15, mask_id, V, maskable, span_mean=3.0, rand_low=5)
    chosen = targets.numpy() != -1
    assert not (chosen & ~maskable).any()
    budget = np.round(0.15 * maskable.sum(1)).astype(int)
    assert (chosen.sum(1) == budget).all(), "span masking missed its budget"
    runs = [r for row in chosen for r in run_lengths(row)]
    assert np.mean(runs) > 1.8  # spans, not independent positions
    # independent masking at the same rate gives runs of about 1 / (1 - 0.15) = 1.18
    _, t2 = mlm_mask(x, np.random.default_rng(3), 0.15, mask_id, V, maskable)
    runs2 = [r for row in t2.numpy() != -1 for r in run_lengths(row)]
    assert np.mean(runs2) < 1.3


# ----------------------------------------------------------------------------- learning

@pytest.mark.parametrize('arch', ['gpt', 'encoder'])
def test_tiny_model_overfits_one_batch(arch):
    model = tiny(arch, n_embd=48, n_head=4).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 48, (4, 16), generator=g)
    if arch == 'gpt':
        idx, y = x[:, :-1], x[:, 1:]
    else:
        inp, y = mlm_mask(x.numpy(), np.random.default_rng(0), 0.25, 4, 48, np.ones((4, 16), bool), rand_low=5)
        idx = inp
    opt = torch.optim.AdamW(M.optimizer_groups(model, 0.0), lr=1e-2)
    first = None
    for step in range(300):
        _, loss = model(idx, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    assert first > 2.5  # started near chance (ln 48 = 3.9)
    assert loss.item() < 0.05, f"{arch} did not overfit one batch: loss {loss.item():.3f} after {step + 1} steps"


# ----------------------------------------------------------------------------- checkpoints

def test_load_checkpoint_rebuilds_the_same_model(tmp_path):
    model = tiny('encoder', dropout=0.1)
    state = {f'_orig_mod.{k}': v for k, v in model.state_dict().items()}  # as saved from a compiled model
    torch.save({'model': state, 'model_args': model.cfg.to_dict(), 'config': {}, 'iter_num': 3}, tmp_path / 'c.pt')
    loaded, ckpt = load_checkpoint(tmp_path / 'c.pt')
    assert ckpt['iter_num'] == 3 and not loaded.training
    idx = torch.randint(0, 48, (2, 16))
    assert torch.equal(logits_of(loaded, idx), logits_of(model, idx))


@pytest.mark.parametrize('arch,extra', [('gpt', {}), ('encoder', {}), ('mdlm', {}), ('backpack', {'n_senses': 4}),
                                        ('atlas', {'window': 4, 'mem_key_dim': 4, 'mem_chunk': 4})])
def test_activation_checkpointing_changes_nothing_but_memory(arch, extra):
    """Recomputing blocks in the backward pass gives the same loss and the same gradients."""
    grads = []
    for ac in (False, True):
        m = tiny(arch, activation_checkpointing=ac, **extra).double()
        torch.manual_seed(1)
        x = torch.randint(0, 30, (2, 12))
        if arch == 'mdlm':  # the denoiser under its objective (objectives.diffusion_loss); its time embedding is float32
            m = m.float()
            loss = diffusion_loss(m, x, torch.full((2,), 0.5), torch.rand(2, 12))
        else:
            _, loss = m(x, x)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    # the same forward kernels run in both; the backward sums gradient contributions in another order with
    # checkpointing, so compare at float64 rounding (mdlm: float32), far below any real difference
    tol = 1e-7 if arch == 'mdlm' else 1e-12
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=tol, atol=tol)
    assert grads[0][1].keys() == grads[1][1].keys()
    for n in grads[0][1]:
        torch.testing.assert_close(grads[0][1][n], grads[1][1][n], rtol=100 * tol, atol=tol, msg=n)


def test_mlm_mask_per_sequence_rates():
    """mask_rate as a (B,) array gives each sequence its own rate (Aeneas draws it from U(0, 0.75)): a row at rate 0
    gets no target, a row at 0.75 about three quarters of its maskable positions, with or without spans."""
    V = 50
    x = np.random.default_rng(0).integers(5, V, (3, 400))
    maskable = np.ones_like(x, dtype=bool)
    for span in (0.0, 3.0):
        _, targets = mlm_mask(x, np.random.default_rng(1), np.array([0.0, 0.75, 0.3]), 4, V, maskable, span_mean=span)
        frac = (targets.numpy() != -1).mean(1)
        assert frac[0] == 0 and abs(frac[1] - 0.75) < 0.06 and abs(frac[2] - 0.3) < 0.06, (span, frac)
    _, targets = mlm_device(x, 1, np.array([0.0, 0.75, 0.3]), 4, V, maskable)  # train.py's path (no spans)
    frac = (targets.numpy() != -1).mean(1)
    assert frac[0] == 0 and abs(frac[1] - 0.75) < 0.06 and abs(frac[2] - 0.3) < 0.06, frac
