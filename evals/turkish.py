"""
TurkMorfBench: forced-choice morphology accuracy of Turkish causal checkpoints.

The 1,836-item core set of TurkMorfBench 3.8.0 (code Apache-2.0, data CC BY 4.0), read from the PyPI wheel
(turkmorfbench/veri/cekirdek.json; the package is never installed or imported). Each item: a stem ('govde'),
the gold inflected form ('altin') and 1-4 rule-breaking distractors, all in 'secenek'. Forced choice: each
candidate c scores sum log p(tokens of c | [SEP] + tokens of PROMPT) / len(c) in characters; the item is
correct only when the gold form scores strictly highest (ties count as wrong). Tokenization: prompt and
prompt+c are encoded separately; when the ids of prompt+c do not start with all the prompt's ids (e.g. a
unigram/Metaspace tokenizer merges the prompt's trailing space into c's first piece), the tokens after the
longest common prefix are scored (so those may include a boundary piece such as '▁'; the same for every
candidate of an item). The separator id that opens every training document is prepended when the data has one.
"""
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from corpus import load_meta, load_tokenizer, loads_json
from download import pip_download, read_member
from evals.lm import print_metrics
from objectives import objective


TMB_PROMPT = "Kelime: {stem}\nÇekimli biçim: "


TMB_SPEC = 'turkmorfbench==3.8.0'  # the wheel of TurkMorfBench (its root boundaries are also scored by prepare/turkish_morph.py)
TMB_MEMBER = 'turkmorfbench/veri/cekirdek.json'


def tmb_raw_items(raw_dir='data/turkish_raw'):
    """The raw TurkMorfBench core items ('maddeler' of TMB_MEMBER in the TMB_SPEC wheel, read with zipfile; the
    package is never installed), or None with one line printed when the wheel cannot be had."""
    try:
        whl = pip_download(TMB_SPEC, Path(raw_dir))
        with zipfile.ZipFile(whl) as z:
            return loads_json(read_member(z, TMB_MEMBER).decode('utf-8'))['maddeler']
    except (SystemExit, Exception) as e:
        print(f"turkmorfbench: skipped, could not get {TMB_MEMBER} from {TMB_SPEC} ({type(e).__name__}: {e})")
        return None


def load_turkmorfbench(raw_dir=os.path.join('data', 'turkish_raw')):
    """The core items as dicts (stem, gold, options, bucket, real), or None (one line printed) when the wheel
    cannot be had."""
    raw = tmb_raw_items(raw_dir)
    if raw is None:
        return None
    items = []
    for m in raw:
        if m['altin'] not in m['secenek']:
            continue
        items.append({'stem': m['govde'], 'gold': m['altin'], 'options': list(m['secenek']),
                      'bucket': m.get('kova', ''), 'real': bool(m.get('gercek', True))})
    return items


@torch.no_grad()
def _tmb_logprob_sums(model, seqs, starts, device, batch_size=32):
    """sum of log p(seq[t] | seq[:t]) for t >= start, for each (seq, start); one causal forward per batch
    (right padding: causal attention keeps padded positions out of the scored ones)."""
    out = []
    for b0 in range(0, len(seqs), batch_size):
        chunk, st = seqs[b0:b0 + batch_size], starts[b0:b0 + batch_size]
        L = max(len(s) for s in chunk) - 1
        x = torch.zeros(len(chunk), L, dtype=torch.long)
        y = torch.full((len(chunk), L), -1, dtype=torch.long)
        for i, (s, a) in enumerate(zip(chunk, st)):
            x[i, :len(s) - 1] = torch.tensor(s[:-1])
            y[i, a - 1:len(s) - 1] = torch.tensor(s[a:])
        logits, _ = model(x.to(device), y.to(device))
        logp = torch.log_softmax(logits.double(), -1)
        tok = logp.gather(-1, y.clamp(min=0).to(device)[..., None])[..., 0] * (y >= 0).to(device)
        out += tok.sum(1).tolist()
    return out


def turkmorfbench(model, tok, items, device='cpu', block_size=None, sep_id=None, batch_size=32):
    """Forced-choice accuracy on items [{'stem', 'gold', 'options', 'bucket'?, 'real'?}] (see the section comment).
    Returns turkmorfbench_acc / _n / _chance (mean of 1/number of options) and accuracy on a few groups."""
    seqs, starts, owner = [], [], []
    for k, it in enumerate(items):
        prompt = TMB_PROMPT.format(stem=it['stem'])
        p = ([sep_id] if sep_id is not None else []) + list(tok.encode(prompt))
        for c in it['options']:
            f = ([sep_id] if sep_id is not None else []) + list(tok.encode(prompt + c))
            a = 0
            while a < min(len(p), len(f)) and p[a] == f[a]:
                a += 1
            a = max(a, 1)  # the first token has no context to be scored from
            if block_size and len(f) > block_size + 1:  # keep the candidate, cut the prompt's head
                cut = len(f) - (block_size + 1)
                f, a = f[cut:], max(a - cut, 1)
            seqs.append(f)
            starts.append(a)
            owner.append((k, c))
    lp = _tmb_logprob_sums(model, seqs, starts, device, batch_size)
    scores = [dict() for _ in items]
    for (k, c), v, f, a in zip(owner, lp, seqs, starts):
        scores[k][c] = v / max(len(c), 1) if len(f) > a else -math.inf
    correct = []
    for it, sc in zip(items, scores):
        g = sc[it['gold']]
        correct.append(all(g > v for c, v in sc.items() if c != it['gold']))
    n = len(items)
    res = {'turkmorfbench_acc': float(np.mean(correct)) if n else float('nan'), 'turkmorfbench_n': n,
           'turkmorfbench_chance': float(np.mean([1 / len(it['options']) for it in items])) if n else float('nan')}
    groups = {'exceptions': lambda it: it.get('bucket', '').startswith('istisna'),
              'regular': lambda it: 'bucket' in it and not it['bucket'].startswith('istisna'),
              'nonce': lambda it: it.get('real') is False}
    for name, pick in groups.items():
        sel = [ok for it, ok in zip(items, correct) if pick(it)]
        if sel:
            res[f'turkmorfbench_{name}_acc'] = float(np.mean(sel))
            res[f'turkmorfbench_{name}_n'] = len(sel)
    return res


def applies(ckpt, meta, opts):
    return (opts['turkmorfbench_on'] and meta.get('dataset') == 'turkish'
            and objective(ckpt['model_args']['arch']) == 'causal')


def evaluate(model, ckpt, data_dir, splits, opts):
    items = load_turkmorfbench()
    if not items:
        return {}
    res = turkmorfbench(model, load_tokenizer(data_dir), items, opts['device'], ckpt['model_args']['block_size'],
                        load_meta(data_dir).get('sep_id'), opts['batch_size'])
    print_metrics(res)
    return res
