"""
Metrics of a checkpoint, and comparisons of runs.

    python evaluate.py --out_dir=out-shakespeare-char              # val and test -> out_dir/eval.json
    python evaluate.py --out_dir=DIR --split=test --max_tokens=200000
    python evaluate.py --compare=out-a,out-b --plot=compare.png   # markdown table + loss curves

Loss is measured over the whole split (or its first max_tokens tokens) in non-overlapping windows of
block_size: mean cross-entropy in nats per token, perplexity exp(loss), bits per byte
(total bits / total UTF-8 bytes of the predicted tokens, comparable across tokenizers), and top-1
token accuracy. For a masked-LM checkpoint the loss is over masked positions (mask_rate of the
maskable ones, chosen with a fixed seed), and bits per byte are over the masked tokens' bytes.
Sums are accumulated in float64.

An encoder checkpoint of the Akkadian data (meta.json dataset 'akkadian') also gets the restoration
metrics (issue 3), on 'subset' (subset_size val fragments, seed 42) and 'test' (the whole test split):
masked-sign top-1/5/10 and MRR (hit@k as Lazar et al. 2021) with 15% of the target signs masked;
span restoration of L = 1..max_gap_len consecutive signs by beam search (model.beam_fill): top-1 and
top-5 exact match of the whole span and the sign error rate, by length and overall; the same on the
silver set of editor-restored signs; each beside a unigram and a bidirectional n-gram baseline fit on
the train split (the same search, another scorer). Printed as a markdown table, stored in eval.json
as test_top1, test_ngram_top5, subset_span3_exact, test_unigram_span_ser, test_silver_count, ...
"""
import json
import math
import os
import sys

import numpy as np
import torch

from configurator import configure
from model import beam_fill, encoder_scorer, load_checkpoint, mlm_mask, objective
from prepare.common import die, load_meta, load_tokenizer, maskable_positions

# ----------------------------------------------------------------------------- defaults
out_dir = ''
ckpt_name = 'ckpt.pt'
data_dir = ''                 # default: the checkpoint's training data
split = 'all'                 # val | test | all (every held-out split present)
max_tokens = 0                # 0 = the whole split
batch_size = 32
seed = 42
device = 'cpu'
compare = ''                  # DIR1,DIR2,...: markdown table + PNG of loss curves
plot = 'compare.png'
# Akkadian restoration metrics (encoder checkpoints of data whose meta.json says dataset 'akkadian')
n_spans = 100                 # spans sampled per gap length 1..max_gap_len (and silver runs per length)
beam = 20                     # beam width of the span search
max_gap_len = 10              # longest span restored
subset_size = 500             # the 'subset' eval set: this many val fragments, chosen with seed 42
# -----------------------------------------------------------------------------


def windows(data, T, max_tokens):
    """Non-overlapping windows of T+1 tokens (input T, target T) covering the split."""
    n = len(data) if not max_tokens else min(len(data), max_tokens + 1)
    starts = np.arange(0, max(n - T - 1, 0) + 1, T)
    return starts


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
    obj = objective(ckpt['model_args']['arch'])
    special = meta.get('special_ids') or {}
    n_lead = len(special) if sorted(special.values()) == list(range(len(special))) else 0
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
            x, y = mlm_mask(x.numpy(), rng, cfg.get('mask_rate', 0.15), special['[MASK]'], meta['vocab_size'],
                            maskable_positions(batch, meta), rand_low=n_lead)
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
    if count == 0:
        die(f"no tokens were evaluated in {split_name}")
    loss = nll / count
    return {f'{split_name}_loss': loss, f'{split_name}_ppl': math.exp(min(loss, 700)),
            f'{split_name}_bpb': nll / math.log(2) / max(nbytes, 1), f'{split_name}_acc': correct / count,
            f'{split_name}_tokens': int(count)}


# ----------------------------------------------------------------------------- Akkadian restoration metrics
# Eval sets: 'subset' = subset_size val fragments chosen with seed 42 (all when fewer exist), 'test' =
# the whole test split. A fragment is the run of tokens between two separators; one longer than
# block_size is cut into block_size pieces, and every piece is scored alone (attention stays inside it).
# Scorers: the model, and two baselines fit on the TRAIN split only (unigram, bidirectional n-gram),
# all behind the score_fn interface of model.beam_fill, so every number has its baseline beside it.

MASKED_SIGN_RATE = 0.15
SUBSET_SEED = 42


def read_fragments(data_dir, split, sep_id):
    """[(ids int64, flags uint8)] of the documents of a split, separators dropped."""
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    fl = np.fromfile(os.path.join(data_dir, f'{split}.flags.bin'), dtype=np.uint8)
    cuts = list(np.flatnonzero(ids == sep_id)) + [len(ids)]
    out = [(ids[a + 1:b], fl[a + 1:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a + 1]
    if cuts[0] > 0:
        out.insert(0, (ids[:cuts[0]], fl[:cuts[0]]))
    return out


def cut_pieces(frags, T):
    return [(i[s:s + T], f[s:s + T]) for i, f in frags for s in range(0, len(i), T)]


class UnigramScorer:
    """Baseline: p(s) = (c(s) + k) / (N + k V) over the real signs, counts from the train split
    (add-k); the same distribution at every position, so its ranking is the train frequency order."""

    def __init__(self, train_ids, vocab_size, n_lead, k=1.0):
        c = np.bincount(train_ids[train_ids >= n_lead], minlength=vocab_size).astype(np.float64)
        c[:n_lead] = 0
        p = (c + k) / (c.sum() + k * (vocab_size - n_lead))
        p[:n_lead] = 0
        self.counts, self.p1 = c, p
        with np.errstate(divide='ignore'):
            self.logp = torch.from_numpy(np.log(p)).float()

    def __call__(self, x):
        return self.logp.to(x.device).expand(*x.shape, -1)


class NgramScorer(UnigramScorer):
    """Baseline: a bidirectional n-gram over signs, counted on the train split only (adjacent signs
    within a document). At a [MASK] position with known neighbours l (left) and r (right):
        p(s | l, r) ~ c(l,s,r), backed off to c(l,s) c(s,r) / c(s) (the trigram under a first-order
        Markov chain), backed off to the add-k unigram,
    each level interpolated with the next by Witten-Bell smoothing (Witten & Bell 1991):
        p = (c + u p_lower) / (C + u), C = total count of the context, u = number of distinct signs seen
        in it. A neighbour that is not a real sign ([MASK], a gap, [UNK], the fragment edge) is unknown:
        only the known side is used, p(s | l) ~ c(l,s) or p(s | r) ~ c(s,r), and with none the unigram.
    Only [MASK] rows are n-gram predictions (the only rows a search or metric reads); the other rows
    are the unigram distribution."""

    def __init__(self, train_ids, vocab_size, n_lead, mask_id, k=1.0):
        super().__init__(train_ids, vocab_size, n_lead, k)
        V, self.V, self.n_lead, self.mask_id = vocab_size, vocab_size, n_lead, mask_id
        a, b = train_ids[:-1], train_ids[1:]
        ok = (a >= n_lead) & (b >= n_lead)
        self.bi = np.zeros((V, V), dtype=np.float32)
        np.add.at(self.bi, (a[ok], b[ok]), 1)
        l, s, r = train_ids[:-2], train_ids[1:-1], train_ids[2:]
        ok = (l >= n_lead) & (s >= n_lead) & (r >= n_lead)
        keys, cnt = np.unique((l[ok] * V + s[ok]) * V + r[ok], return_counts=True)
        ctx = (keys // (V * V)) * V + keys % V
        order = np.argsort(ctx, kind='stable')
        ctx, mids, cnt = ctx[order], (keys[order] // V) % V, cnt[order]
        bounds = np.flatnonzero(np.diff(ctx)) + 1
        self.tri = {int(c[0]): (m, n.astype(np.float64)) for c, m, n in
                    zip(np.split(ctx, bounds), np.split(mids, bounds), np.split(cnt, bounds)) if len(c)}

    @staticmethod
    def _wb(counts, lower):
        """Witten-Bell interpolation of count vectors (N, V) with lower-order distributions (N, V)."""
        C = counts.sum(1, keepdims=True)
        u = (counts > 0).sum(1, keepdims=True)
        return np.where(C > 0, (counts + u * lower) / np.maximum(C + u, 1e-300), lower)

    def __call__(self, x):
        out = self.logp.expand(*x.shape, -1).clone()
        xb = x.cpu().numpy()
        bi_, ii = np.nonzero(xb == self.mask_id)
        if len(bi_) == 0:
            return out.to(x.device)
        T = xb.shape[1]
        left = np.where(ii > 0, xb[bi_, np.maximum(ii - 1, 0)], -1)
        right = np.where(ii < T - 1, xb[bi_, np.minimum(ii + 1, T - 1)], -1)
        lk, rk = left >= self.n_lead, right >= self.n_lead
        p1 = np.broadcast_to(self.p1, (len(ii), self.V))
        L = self.bi[np.maximum(left, 0)].astype(np.float64)
        R = self.bi[:, np.maximum(right, 0)].T.astype(np.float64)
        pl, pr = self._wb(L, p1), self._wb(R, p1)
        pair = L * R / np.maximum(self.counts, 1)[None]          # c(l,s) c(s,r) / c(s)
        p2 = self._wb(pair, p1)
        tri = np.zeros_like(pair)
        for n in np.flatnonzero(lk & rk):
            hit = self.tri.get(int(left[n]) * self.V + int(right[n]))
            if hit is not None:
                tri[n, hit[0]] = hit[1]
        p3 = self._wb(tri, p2)
        p = np.where((lk & rk)[:, None], p3, np.where(lk[:, None], pl, np.where(rk[:, None], pr, p1)))
        with np.errstate(divide='ignore'):
            out[bi_, ii] = torch.from_numpy(np.log(p)).float()
        return out.to(x.device)


_H = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 1 << 17))])  # harmonic numbers H_0..H_n


def rank_stats(logp, true, ks=(1, 5, 10)):
    """Sums of hit@k and reciprocal rank of the true token (Lazar et al. 2021) over rows of logp
    (N, V; -inf = not a candidate). Ties are broken uniformly at random, in expectation: with g
    candidates strictly better and e tied (the true one included), the rank is uniform on g+1..g+e,
    so E[hit@k] = clip(k - g, 0, e) / e and E[1/rank] = (H_{g+e} - H_g) / e."""
    logp = logp.double().cpu()
    true = torch.as_tensor(true).long().cpu()
    t = logp.gather(1, true[:, None])
    g = (logp > t).sum(1).numpy()
    e = np.maximum(((logp == t) & torch.isfinite(logp)).sum(1).numpy(), 1)
    out = {f'top{k}': float((np.clip(k - g, 0, e) / e).sum()) for k in ks}
    out['mrr'] = float(((_H[g + e] - _H[g]) / e).sum())
    out['n'] = len(g)
    return out


def masked_sign_metrics(scorers, pieces, mask_id, n_lead, seed, rate=MASKED_SIGN_RATE, batch_size=32):
    """Mask `rate` of the target signs (prepare.akkadian.is_target, and a known sign: not [UNK]) of
    every piece with a fixed seed, every chosen sign replaced by [MASK]; rank the true sign among the
    real signs under each scorer. Returns {scorer: {top1, top5, top10, mrr, n}} (means)."""
    from prepare.akkadian import is_target
    rng = np.random.default_rng(seed)
    items = []
    for ids, fl in pieces:
        chosen = is_target(fl) & (ids >= n_lead) & (rng.random(len(ids)) < rate)
        if chosen.any():
            x = ids.copy()
            x[chosen] = mask_id
            items.append((x, chosen, ids))
    sums = {name: {} for name in scorers}
    by_len = {}
    for it in items:
        by_len.setdefault(len(it[0]), []).append(it)
    for group in by_len.values():
        for b0 in range(0, len(group), batch_size):
            chunk = group[b0:b0 + batch_size]
            x = torch.from_numpy(np.stack([c[0] for c in chunk]))
            chosen = torch.from_numpy(np.stack([c[1] for c in chunk]))
            true = torch.from_numpy(np.stack([c[2] for c in chunk]))[chosen]
            for name, sf in scorers.items():
                st = rank_stats(sf(x)[chosen.to(x.device)], true)
                for k, v in st.items():
                    sums[name][k] = sums[name].get(k, 0) + v
    return {name: {k: (v / max(s['n'], 1) if k != 'n' else v) for k, v in s.items()} if s else {'n': 0}
            for name, s in sums.items()}


def restore_spans(scorers, spans, mask_id, banned, beam, desc=''):
    """spans: [(ids, start, L)]; each span of L signs becomes L [MASK]s and is filled by beam_fill under
    every scorer. Returns {scorer: {exact, exact5, ser, n, signs}}: top-1 exact match of the whole span,
    exact match within the top 5, and the sign error rate of the top-1 filling (wrong / signs)."""
    from tqdm import tqdm
    res = {name: {'exact': 0, 'exact5': 0, 'wrong': 0, 'n': 0, 'signs': 0} for name in scorers}
    for ids, start, L in tqdm(spans, desc=desc, leave=False, disable=not spans):
        truth = ids[start:start + L].tolist()
        x = ids.copy()
        x[start:start + L] = mask_id
        for name, sf in scorers.items():
            top = beam_fill(sf, torch.from_numpy(x), range(start, start + L), beam=beam, banned_ids=banned, topk=5)
            r = res[name]
            r['exact'] += top[0][0] == truth
            r['exact5'] += any(t == truth for t, _ in top)
            r['wrong'] += sum(a != b for a, b in zip(top[0][0], truth))
            r['n'] += 1
            r['signs'] += L
    return {name: {'exact': r['exact'] / max(r['n'], 1), 'exact5': r['exact5'] / max(r['n'], 1),
                   'ser': r['wrong'] / max(r['signs'], 1), 'n': r['n'], 'signs': r['signs']}
            for name, r in res.items()}


def _runs(mask):
    """(start, length) of the maximal runs of True in a bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - np.flatnonzero(d == 1)))


def akkadian_metrics(model, ckpt, data_dir, device='cpu', n_spans=100, beam=20, max_gap_len=10, seed=42,
                     subset_size=500, batch_size=32):
    """Restoration metrics of an Akkadian encoder checkpoint: masked-sign top-1/5/10 and MRR, span
    restoration by length (beam search), the silver set of editor-restored signs; each for the model,
    the unigram and the n-gram baselines. Returns (flat dict of numbers, markdown table)."""
    from prepare.akkadian import FLAG_RESTORED, FLAG_SIGN, is_target
    meta = load_meta(data_dir)
    sp = meta['special_ids']
    n_lead, mask_id, sep_id, V = len(sp), sp['[MASK]'], meta['sep_id'], meta['vocab_size']
    banned = list(range(n_lead))
    T = ckpt['model_args']['block_size']
    train_ids = np.fromfile(os.path.join(data_dir, 'train.bin'), dtype=np.uint16).astype(np.int64)
    scorers = {'model': encoder_scorer(model, banned), 'unigram': UnigramScorer(train_ids, V, n_lead),
               'ngram': NgramScorer(train_ids, V, n_lead, mask_id)}
    sets = {}
    if os.path.exists(os.path.join(data_dir, 'val.bin')):
        val = read_fragments(data_dir, 'val', sep_id)
        rng = np.random.default_rng(SUBSET_SEED)
        pick = np.sort(rng.choice(len(val), size=min(subset_size, len(val)), replace=False))
        print(f"eval subset: {len(pick)} of {len(val)} val fragments (seed {SUBSET_SEED})"
              + (" = all of them" if len(pick) == len(val) else ""))
        sets['subset'] = [val[i] for i in pick]
    if os.path.exists(os.path.join(data_dir, 'test.bin')):
        sets['test'] = read_fragments(data_dir, 'test', sep_id)
    res = {}

    def put(prefix, name, key, value):
        res[f"{prefix}_{'' if name == 'model' else name + '_'}{key}"] = value

    for set_name, frags in sets.items():
        pieces = cut_pieces(frags, T)
        ms = masked_sign_metrics(scorers, pieces, mask_id, n_lead, seed, batch_size=batch_size)
        res[f'{set_name}_fragments'] = len(frags)
        res[f'{set_name}_masked_signs'] = ms['model']['n']
        for name, m in ms.items():
            for k in ('top1', 'top5', 'top10', 'mrr'):
                if k in m:
                    put(set_name, name, k, m[k])
        # spans of L consecutive target signs inside one piece
        tgt = [is_target(f) & (i >= n_lead) for i, f in pieces]
        agg = {name: {'exact': 0.0, 'exact5': 0.0, 'wrong': 0.0, 'n': 0, 'signs': 0} for name in scorers}
        for L in range(1, max_gap_len + 1):
            cand = [(j, s) for j, t in enumerate(tgt) if len(t) >= L
                    for s in np.flatnonzero(np.convolve(t, np.ones(L, int), 'valid') == L)]
            if not cand:
                continue
            rng = np.random.default_rng([seed, L])
            pick = rng.choice(len(cand), size=min(n_spans, len(cand)), replace=False)
            spans = [(pieces[cand[c][0]][0], int(cand[c][1]), L) for c in sorted(pick)]
            r = restore_spans(scorers, spans, mask_id, banned, beam, desc=f'{set_name} spans of {L}')
            for name, m in r.items():
                put(set_name, name, f'span{L}_exact', m['exact'])
                put(set_name, name, f'span{L}_exact5', m['exact5'])
                put(set_name, name, f'span{L}_ser', m['ser'])
                a = agg[name]
                a['exact'] += m['exact'] * m['n']
                a['exact5'] += m['exact5'] * m['n']
                a['wrong'] += m['ser'] * m['signs']
                a['n'] += m['n']
                a['signs'] += m['signs']
            res[f'{set_name}_span{L}_count'] = r['model']['n']
        for name, a in agg.items():
            if a['n']:
                put(set_name, name, 'span_exact', a['exact'] / a['n'])
                put(set_name, name, 'span_exact5', a['exact5'] / a['n'])
                put(set_name, name, 'span_ser', a['wrong'] / a['signs'])
        # silver: maximal runs of editor-restored signs, restored the same way
        silver = []
        for ids, fl in pieces:
            restored = ((fl & FLAG_SIGN) != 0) & ((fl & 3) == FLAG_RESTORED)
            silver += [(ids, int(s), int(L)) for s, L in _runs(restored)
                       if L <= max_gap_len and (ids[s:s + L] >= n_lead).all()]
        rng = np.random.default_rng([seed, 1000])
        keep = []
        for L in range(1, max_gap_len + 1):
            idx = [k for k, sv in enumerate(silver) if sv[2] == L]
            if idx:
                keep += sorted(rng.choice(idx, size=min(n_spans, len(idx)), replace=False).tolist())
        silver = [silver[k] for k in sorted(keep)]
        res[f'{set_name}_silver_count'] = len(silver)
        if silver:
            r = restore_spans(scorers, silver, mask_id, banned, beam, desc=f'{set_name} silver')
            for name, m in r.items():
                put(set_name, name, 'silver_exact', m['exact'])
                put(set_name, name, 'silver_exact5', m['exact5'])
                put(set_name, name, 'silver_ser', m['ser'])
        else:
            print(f"{set_name}: no editor-restored signs (flag state 2) in these fragments: no silver scores")
    return res, akkadian_table(res, list(sets), max_gap_len)


def akkadian_table(res, set_names, max_gap_len=10):
    """Markdown table: one row per metric, model | unigram | n-gram for each eval set."""
    rows = ['top1', 'top5', 'top10', 'mrr']
    for L in list(range(1, max_gap_len + 1)) + ['']:
        rows += [f'span{L}_exact', f'span{L}_exact5', f'span{L}_ser']
    rows += ['silver_exact', 'silver_exact5', 'silver_ser']
    head = '| metric | ' + ' | '.join(f'{s} {n}' for s in set_names for n in ('model', 'unigram', 'n-gram')) + ' |'
    lines = [head, '|---|' + '---:|' * (3 * len(set_names))]
    for r in rows:
        vals = [res.get(f"{s}_{'' if n == 'model' else n + '_'}{r}") for s in set_names for n in ('model', 'unigram', 'ngram')]
        if all(v is None for v in vals):
            continue
        lines.append(f'| {r} | ' + ' | '.join('' if v is None else f'{v:.3f}' for v in vals) + ' |')
    counts = ', '.join(f"{s}: {res.get(f'{s}_fragments', 0)} fragments, {res.get(f'{s}_masked_signs', 0)} masked signs, "
                       f"{res.get(f'{s}_silver_count', 0)} silver spans" for s in set_names)
    return '\n'.join(lines) + f'\n({counts}; span{{L}}: L consecutive signs restored jointly by beam search)'


def run_eval(out_dir, ckpt_name='ckpt.pt', data_dir='', split='all', max_tokens=0, batch_size=32, seed=42, device='cpu',
             n_spans=100, beam=20, max_gap_len=10, subset_size=500):
    path = os.path.join(out_dir, ckpt_name)
    if not os.path.exists(path):
        die(f"{path} not found: train first, or pass --out_dir of a training run")
    model, ckpt = load_checkpoint(path, device)
    cfg = ckpt['config']
    data_dir = data_dir or cfg.get('data_dir') or os.path.join('data', cfg['dataset'])
    names = [s for s in ('val', 'test') if os.path.exists(os.path.join(data_dir, f'{s}.bin'))] if split == 'all' else [split]
    res = {'iter': ckpt['iter_num'], 'params': model.num_params(), 'params_non_embedding': model.num_params(True),
           'best_val_loss': ckpt['best_val_loss']}
    for s in names:
        res.update(evaluate_split(model, ckpt, data_dir, s, device, max_tokens, batch_size, seed))
    for k, v in res.items():
        print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
    if load_meta(data_dir).get('dataset') == 'akkadian' and ckpt['model_args']['arch'] == 'encoder':
        akk, table = akkadian_metrics(model, ckpt, data_dir, device, n_spans, beam, max_gap_len, seed, subset_size,
                                      batch_size)
        res.update(akk)
        print(table)
    tmp = os.path.join(out_dir, '.eval.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, 'eval.json'))
    return res


def read_metrics(d):
    rows = []
    p = os.path.join(d, 'metrics.jsonl')
    if os.path.exists(p):
        with open(p) as f:
            rows = [json.loads(l) for l in f if l.strip()]
    return rows


def compare_runs(dirs, plot_path):
    results, configs = {}, {}
    for d in dirs:
        p = os.path.join(d, 'eval.json')
        if not os.path.exists(p):
            print(f"{p} missing: evaluating {d} now")
            run_eval(d, device=device)
        with open(p) as f:
            results[d] = json.load(f)
        ck = os.path.join(d, 'ckpt.pt')
        configs[d] = torch.load(ck, map_location='cpu', weights_only=True)['config'] if os.path.exists(ck) else {}
    keys = sorted({k for r in results.values() for k in r})
    lines = ['| metric | ' + ' | '.join(dirs) + ' |', '|---|' + '---|' * len(dirs)]
    for k in keys:
        vals = [results[d].get(k) for d in dirs]
        lines.append(f'| {k} | ' + ' | '.join('' if v is None else (f'{v:.4f}' if isinstance(v, float) else str(v)) for v in vals) + ' |')
    print('\n'.join(lines))
    ckeys = sorted({k for c in configs.values() for k in c})
    diff = [k for k in ckeys if len({repr(configs[d].get(k)) for d in dirs}) > 1 and k != 'out_dir']
    print('\nconfig keys that differ:')
    if diff:
        print('| key | ' + ' | '.join(dirs) + ' |\n|---|' + '---|' * len(dirs))
        for k in diff:
            print(f'| {k} | ' + ' | '.join(repr(configs[d].get(k)) for d in dirs) + ' |')
    else:
        print('(none besides out_dir)')
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for d in dirs:
        rows = read_metrics(d)
        tr = [(r['iter'], r['loss']) for r in rows if r.get('kind') == 'train']
        ev = [(r['iter'], r['val_loss']) for r in rows if r.get('kind') == 'eval' and r.get('val_loss') is not None]
        if tr:
            ax.plot(*zip(*tr), alpha=0.35, label=f'{d} train')
        if ev:
            ax.plot(*zip(*ev), marker='o', label=f'{d} val')
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss (nats/token)')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = plot_path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, plot_path)
    print(f"\nwrote {plot_path}")


if __name__ == '__main__':
    configure(globals())
    if compare:
        compare_runs([d for d in compare.split(',') if d], plot)
    else:
        if not out_dir:
            die("give --out_dir=DIR (a training run) or --compare=DIR1,DIR2")
        res = run_eval(out_dir, ckpt_name, data_dir, split, max_tokens, batch_size, seed, device, n_spans, beam,
                       max_gap_len, subset_size)
        print(f"wrote {os.path.join(out_dir, 'eval.json')}")
