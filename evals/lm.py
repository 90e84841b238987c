"""
Language-model metrics of any checkpoint but mdlm (whose bound is evals/mdlm.py): over the whole split (or its
first max_tokens tokens) in non-overlapping windows of block_size, mean cross-entropy in nats per token,
perplexity, bits per byte (total bits / total UTF-8 bytes of the predicted tokens, comparable across
tokenizers), bits per character and top-1 accuracy, summed in float64. A masked-LM checkpoint is scored on
masked positions (its mask_rate of the maskable ones, objectives.mlm_batch with a fixed seed). For
agglutinative attention the learned biases per head are reported too.
"""
import math
import os

import numpy as np
import torch

from corpus import die, load_meta, load_tokenizer
from model import agglutinative_biases, format_agglutinative_biases
from objectives import mlm_batch, objective


def windows(data, T, max_tokens):
    """Non-overlapping windows of T+1 tokens (input T, target T) covering the split."""
    n = len(data) if not max_tokens else min(len(data), max_tokens + 1)
    starts = np.arange(0, max(n - T - 1, 0) + 1, T)
    return starts


def token_chars(data_dir):
    """Characters of each token's text (0 for specials), for bits per character: the decoded token, except
    that a Metaspace piece counts its '▁' as the space it stands for (the decoder drops a leading one)."""
    tok = load_tokenizer(data_dir)
    specials = set(tok.special_ids().values())
    inner = getattr(tok, 'tok', None)
    out = []
    for i in range(tok.vocab_size):
        piece = inner.id_to_token(i) if inner is not None else None
        out.append(0 if i in specials else len(piece) if piece and '▁' in piece else len(tok.decode([i])) or 1)
    return out


@torch.no_grad()
def evaluate_split(model, ckpt, data_dir, split_name, device, max_tokens=0, batch_size=32, seed=42):
    cfg = ckpt['config']
    meta = load_meta(data_dir)
    T = ckpt['model_args']['block_size']
    path = os.path.join(data_dir, f'{split_name}.bin')
    data = np.memmap(path, dtype=np.uint16, mode='r')
    if len(data) < T + 2:
        die(f"{path} has {len(data)} tokens, fewer than a window of {T + 1}")
    flags = None
    if 'flags' in meta.get('aux', {}):
        flags = np.memmap(os.path.join(data_dir, f'{split_name}.flags.bin'), dtype=np.uint8, mode='r')
    tbytes = torch.tensor(load_tokenizer(data_dir).token_bytes(), dtype=torch.float64)
    tchars = torch.tensor(token_chars(data_dir), dtype=torch.float64)
    nchars = 0.0
    obj = objective(ckpt['model_args']['arch'])
    sep = meta.get('sep_id')
    doc_mask = ckpt['model_args'].get('doc_mask', False)
    starts = windows(data, T, max_tokens)
    nll = correct = count = nbytes = 0.0
    rng = np.random.default_rng(seed)
    for b0 in range(0, len(starts), batch_size):
        chunk = np.stack([np.asarray(data[s:s + T + 1], dtype=np.int64) for s in starts[b0:b0 + batch_size]])
        x, y = torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])
        if obj == 'mlm':
            batch = {'x': x}
            if flags is not None:
                batch['flags'] = torch.from_numpy(np.stack([np.asarray(flags[s:s + T], dtype=np.int64)
                                                            for s in starts[b0:b0 + batch_size]]))
            x, y = mlm_batch(batch, rng, meta, cfg.get('mask_rate', 0.15))
        doc = torch.from_numpy(np.cumsum(chunk[:, :-1] == sep, axis=1)) if (doc_mask and sep is not None) else None
        x, y = x.to(device), y.to(device)
        logits, _ = model(x, y, doc.to(device) if doc is not None else None)
        logp = torch.log_softmax(logits.double(), dim=-1)
        valid = y >= 0
        yv = y.clamp(min=0)
        tok_nll = -logp.gather(-1, yv[..., None])[..., 0]
        nll += tok_nll[valid].sum().item()
        correct += (logits.argmax(-1) == y)[valid].sum().item()
        count += valid.sum().item()
        nbytes += tbytes[yv.cpu()][valid.cpu()].sum().item()
        nchars += tchars[yv.cpu()][valid.cpu()].sum().item()
    if count == 0:
        die(f"no tokens were evaluated in {split_name}")
    loss = nll / count
    return {f'{split_name}_loss': loss, f'{split_name}_ppl': math.exp(min(loss, 700)),
            f'{split_name}_bpb': nll / math.log(2) / max(nbytes, 1), f'{split_name}_acc': correct / count,
            f'{split_name}_bpc': nll / math.log(2) / max(nchars, 1), f'{split_name}_tokens': int(count)}


def applies(ckpt, meta, opts):
    # mdlm has its bound (evals/mdlm.py); a subword hf model is scored over whole signs (evals/akkadian.py)
    return ckpt['model_args']['arch'] not in ('mdlm', 'hf')


def evaluate(model, ckpt, data_dir, splits, opts):
    res = {}
    for s in splits:
        res.update(evaluate_split(model, ckpt, data_dir, s, opts['device'], opts['max_tokens'], opts['batch_size'],
                                  opts['seed']))
    print_metrics(res)
    if ckpt['model_args'].get('attention', 'standard') == 'agglutinative':  # learned biases per head
        print(format_agglutinative_biases(model))
        res['agglutinative_biases'] = agglutinative_biases(model)
    return res


def print_metrics(res):
    for k, v in res.items():
        print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
