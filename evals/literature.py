"""Long-context metrics of causal checkpoints on the literature data (atlas vs gpt, per language and
tokenizer; prepare/literature.py).

masked word accuracy  every word of the split (corpus.word_spans over meta.json's word tables) with
                      at least one token of left context in its window is hidden and predicted from that left
                      context: correct when the greedy prediction reproduces all of its tokens (teacher-forced
                      argmax at each of them), so a word split into more pieces must get more of them right.
                      Per-word, hence comparable across tokenizers (bits per byte is the other such metric).
retrieval loss        cross-entropy at positions whose answer was seen in the context only beyond the attention
                      window (retrieval_positions), with their fraction: what only a memory can supply.
memory-reset control  (atlas) loss, bits per byte and retrieval loss again with every memory write switched off
                      (reads see the learned initial state W0): the gap is what the memory contributes on held-out
                      text, not what the weights memorised.
memory diagnostics    (atlas) causal_probe on the first batch_size val windows: per layer storage loss before
                      and after each write, write efficiency, effective rank / norm / distance from W0 / Hoyer
                      sparsity / momentum norm per memory matrix, and gate health on raw gate values.
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from corpus import load_meta, load_tokenizer, word_spans
from evals.lm import print_metrics
from objectives import objective

# ----------------------------------------------------------------------------- diagnostics of a causal model

@torch.no_grad()
def causal_probe(model, x, y):
    """What a causal model does with long context, on one batch (x, y = next tokens):
    retrieval_loss   cross-entropy at retrieval_positions (answer seen only beyond the attention window),
                     with their fraction; only when the model has a window (atlas, or gpt with window > 0);
    mem{l}_*         for atlas, per layer (docs/atlas.md, Diagnostics): storage loss pre / post write and
                     write efficiency; effective rank, spectral entropy, Frobenius norm, distance from W0,
                     Hoyer sparsity and momentum norm per memory matrix (per batch element and head, then
                     averaged: never across the batch); gate health on raw sigmoid values."""
    mems = model.memories() if hasattr(model, 'memories') else []
    for mem in mems:
        mem.diag = {}
    try:
        logits, _ = model(x, all_logits=True)
        out = {}
        r = retrieval_positions(x, y, model.cfg.window)
        if model.cfg.window and model.cfg.window < x.shape[1]:
            out['retrieval_frac'] = r.float().mean().item()
            out['retrieval_loss'] = F.cross_entropy(logits[r].float(), y[r]).item() if r.any() else float('nan')
        for l, mem in enumerate(mems):
            out.update({f'mem{l}_{k}': v for k, v in layer_diagnostics(mem).items()})
        return out
    finally:
        for mem in mems:
            mem.diag = None


def effective_rank(A, eps=1e-12):
    """erank(A) = exp(-sum_k p_k ln p_k), p_k = sigma_k / sum_j sigma_j (Roy & Vetterli 2007), per matrix over
    the last two dims. Returns (erank, spectral entropy = ln erank)."""
    s = torch.linalg.svdvals(A.float())
    p = s / s.sum(-1, keepdim=True).clamp_min(eps)
    H = -(p * (p + eps).log()).sum(-1)
    return H.exp(), H


def hoyer_sparsity(A):
    """(sqrt(n) - ||a||_1 / ||a||_2) / (sqrt(n) - 1) per matrix: 0 dense, 1 one-hot (Hoyer 2004)."""
    a = A.float().flatten(-2)
    n = a.shape[-1]
    r = a.abs().sum(-1) / a.norm(dim=-1).clamp_min(1e-12)
    return (math.sqrt(n) - r) / (math.sqrt(n) - 1)


def gate_health(g):
    """mean, std, dead (< 0.01) and saturated (> 0.99) ratios of raw gate values in [0, 1]."""
    g = g.float().flatten()
    return {'mean': g.mean().item(), 'std': g.std().item(), 'dead': (g < 0.01).float().mean().item(),
            'sat': (g > 0.99).float().mean().item()}


def layer_diagnostics(mem):
    d, out = mem.diag, {}
    if 'storage_pre' in d:
        out['storage_pre'], out['storage_post'] = d['storage_pre'], d['storage_post']
        out['write_eff'] = 1.0 - d['storage_post'] / max(d['storage_pre'], 1e-12)
    names = ['w'] if len(d['W']) == 1 else ['w_in', 'w_out']
    for name, W, S, W0 in zip(names, d['W'], d['S'], mem.mem_w0):
        er, ent = effective_rank(W)
        out[f'{name}_erank'], out[f'{name}_spec_entropy'] = er.mean().item(), ent.mean().item()
        out[f'{name}_fro'] = W.float().flatten(-2).norm(dim=-1).mean().item()
        out[f'{name}_dist0'] = (W - W0.detach()).float().flatten(-2).norm(dim=-1).mean().item()
        out[f'{name}_hoyer'] = hoyer_sparsity(W).mean().item()
        out[f'{name}_momentum'] = S.float().flatten(-2).norm(dim=-1).mean().item()
    for i, name in enumerate(('alpha', 'eta', 'theta', 'gamma')):
        out.update({f'gate_{name}_{k}': v for k, v in gate_health(d['gates'][i]).items()})
    if 'mix' in d:
        out.update({f'gate_mix_{k}': v for k, v in gate_health(d['mix']).items()})
    return out


def retrieval_positions(x, y, window):
    """(B, T) bool: positions whose answer y_t occurs earlier in the context x_{<=t} but only outside the
    attention window (never in x_{t-window+1..t}), so only the memory can supply it; all False if window
    is 0 or covers the context."""
    B, T = x.shape
    if not window or window >= T:
        return torch.zeros(B, T, dtype=torch.bool, device=x.device)
    t = torch.arange(T, device=x.device)
    seen = (x[:, None, :] == y[:, :, None]) & (t[None, None, :] <= t[None, :, None])   # (B, t, s): x_s == y_t
    last = torch.where(seen, t[None, None, :], torch.full_like(t, -1)[None, None, :]).amax(-1)
    return (last >= 0) & (last <= t[None, :] - window) & (y >= 0)


# ----------------------------------------------------------------------------- metrics

DIAG_KEYS = ('storage_pre', 'storage_post', 'write_eff', '_erank', '_fro', '_dist0', '_hoyer', '_momentum',
             '_mean', '_dead', '_sat')


def _word_targets(x_row, y_row, ws, wp):
    """(positions p whose logits predict a word's tokens, word id per such position) for one window: word spans
    over the full window x_0..x_T (x plus the last target), keeping words with at least one token of left context."""
    ids = torch.cat([x_row[:1], y_row]).tolist()
    pos, wid = [], []
    for n, (s, e) in enumerate(word_spans(ids, ws, wp)):
        if s >= 1:
            pos.extend(range(s - 1, e - 1))
            wid.extend([n] * (e - s))
    return pos, wid


@torch.no_grad()
def literature_metrics(model, ckpt, data_dir, names, device='cpu', max_tokens=0, batch_size=32):
    meta = load_meta(data_dir)
    ws, wp = meta['word_start'], meta['word_piece']
    tbytes = torch.tensor(load_tokenizer(data_dir).token_bytes(), dtype=torch.float64)
    T = ckpt['model_args']['block_size']
    window = ckpt['model_args'].get('window', 0)
    atlas = hasattr(model, 'set_memory_writes')
    res = {}
    for split in names:
        data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
        n = len(data) if not max_tokens else min(len(data), max_tokens + 1)
        starts = np.arange(0, max(n - T - 1, 0) + 1, T)
        acc = {'words': 0, 'words_ok': 0, 'ret_n': 0, 'ret_nll': 0.0, 'tokens': 0}
        off = {'nll': 0.0, 'bytes': 0.0, 'ret_nll': 0.0}
        for b0 in range(0, len(starts), batch_size):
            chunk = np.stack([np.asarray(data[s:s + T + 1], dtype=np.int64) for s in starts[b0:b0 + batch_size]])
            x, y = torch.from_numpy(chunk[:, :-1]).to(device), torch.from_numpy(chunk[:, 1:]).to(device)
            logits, _ = model(x, all_logits=True)
            hit = (logits.argmax(-1) == y).cpu()
            for r in range(x.shape[0]):
                pos, wid = _word_targets(x[r].cpu(), y[r].cpu(), ws, wp)
                if pos:  # a word is right when every one of its tokens is
                    wid_t = torch.tensor(wid)
                    cnt = torch.bincount(wid_t)
                    hits = torch.bincount(wid_t, weights=hit[r, pos].double())
                    acc['words'] += int((cnt > 0).sum())
                    acc['words_ok'] += int(((hits == cnt) & (cnt > 0)).sum())
            ret = retrieval_positions(x, y, window)
            acc['tokens'] += y.numel()
            if ret.any():
                acc['ret_n'] += int(ret.sum())
                acc['ret_nll'] += F.cross_entropy(logits[ret].double(), y[ret], reduction='sum').item()
            if atlas:  # the memory-reset control on the same windows
                model.set_memory_writes(False)
                lo, _ = model(x, all_logits=True)
                model.set_memory_writes(True)
                nll = F.cross_entropy(lo.double().flatten(0, 1), y.flatten(), reduction='none')
                off['nll'] += nll.sum().item()
                off['bytes'] += tbytes[y.flatten().cpu()].sum().item()
                if ret.any():
                    off['ret_nll'] += nll[ret.flatten()].sum().item()
        res[f'{split}_masked_word_acc'] = acc['words_ok'] / max(acc['words'], 1)
        res[f'{split}_masked_words'] = acc['words']
        if window and window < T:
            res[f'{split}_retrieval_frac'] = acc['ret_n'] / max(acc['tokens'], 1)
            res[f'{split}_retrieval_loss'] = acc['ret_nll'] / acc['ret_n'] if acc['ret_n'] else float('nan')
        if atlas:
            res[f'{split}_loss_no_memory'] = off['nll'] / max(acc['tokens'], 1)
            res[f'{split}_bpb_no_memory'] = off['nll'] / math.log(2) / max(off['bytes'], 1)
            if acc['ret_n']:
                res[f'{split}_retrieval_loss_no_memory'] = off['ret_nll'] / acc['ret_n']
    if atlas and 'val' in names:
        data = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=np.uint16, mode='r')
        starts = np.arange(0, max(len(data) - T - 1, 0) + 1, T)[:batch_size]
        chunk = torch.from_numpy(np.stack([np.asarray(data[s:s + T + 1], dtype=np.int64) for s in starts])).to(device)
        diag = causal_probe(model, chunk[:, :-1], chunk[:, 1:])
        res.update({k: v for k, v in diag.items() if k.startswith('mem') and any(s in k for s in DIAG_KEYS)})
    return res


def memory_table(res, n_layer):
    """Markdown: one row per layer of the headline memory diagnostics."""
    cols = [('storage_pre', 'storage pre'), ('storage_post', 'post'), ('write_eff', 'write eff.'),
            ('w_in_erank', 'erank W_in'), ('w_out_erank', 'erank W_out'), ('w_erank', 'erank W'),
            ('w_in_dist0', '|W_in-W0|'), ('w_out_dist0', '|W_out-W0|'), ('w_dist0', '|W-W0|'),
            ('gate_alpha_mean', 'alpha'), ('gate_eta_mean', 'eta/eta_max'), ('gate_theta_mean', 'theta'),
            ('gate_gamma_mean', 'gamma'), ('gate_mix_mean', 'mix g'),
            ('gate_eta_dead', 'eta dead'), ('gate_alpha_sat', 'alpha sat.')]
    cols = [(k, h) for k, h in cols if f'mem0_{k}' in res]
    lines = ['| layer | ' + ' | '.join(h for _, h in cols) + ' |', '|---|' + '---|' * len(cols)]
    for l in range(n_layer):
        lines.append(f'| {l} | ' + ' | '.join(f"{res[f'mem{l}_{k}']:.3f}" for k, _ in cols) + ' |')
    return '\n'.join(lines)


def applies(ckpt, meta, opts):
    return meta.get('dataset', '').startswith('literature') and objective(ckpt['model_args']['arch']) == 'causal'


def evaluate(model, ckpt, data_dir, splits, opts):
    res = literature_metrics(model, ckpt, data_dir, splits, opts['device'], opts['max_tokens'], opts['batch_size'])
    print_metrics({k: v for k, v in res.items() if not k.startswith('mem')})
    if ckpt['model_args']['arch'] == 'atlas':
        print(memory_table(res, ckpt['model_args']['n_layer']))
    return res
