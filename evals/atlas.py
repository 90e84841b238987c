"""Long-context metrics of causal checkpoints on the literature data (atlas vs gpt, per language and
tokenizer; prepare/literature.py).

masked word accuracy  every word of the split (prepare.literature.word_spans over meta.json's word tables) with
                      at least one token of left context in its window is hidden and predicted from that left
                      context: correct when the greedy prediction reproduces all of its tokens (teacher-forced
                      argmax at each of them), so a word split into more pieces must get more of them right.
                      Per-word, hence comparable across tokenizers (bits per byte is the other such metric).
retrieval loss        cross-entropy at positions whose answer was seen in the context only beyond the attention
                      window (model.retrieval_positions), with their fraction: what only a memory can supply.
memory-reset control  (atlas) loss, bits per byte and retrieval loss again with every memory write switched off
                      (reads see the learned initial state W0): the gap is what the memory contributes on held-out
                      text, not what the weights memorised.
memory diagnostics    (atlas) model.causal_probe on the first batch_size val windows: per layer storage loss before
                      and after each write, write efficiency, effective rank / norm / distance from W0 / Hoyer
                      sparsity / momentum norm per memory matrix, and gate health on raw gate values.
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from model import causal_probe, retrieval_positions
from prepare.common import load_meta, load_tokenizer
from prepare.literature import word_spans

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
