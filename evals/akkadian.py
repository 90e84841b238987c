"""
Akkadian restoration metrics of an encoder checkpoint (issue 3; data whose meta.json says dataset 'akkadian').

Eval sets: 'subset' = subset_size val fragments chosen with seed 42 (all when fewer exist), 'test' =
the whole test split. A fragment is the run of tokens between two separators; one longer than
block_size is cut into block_size pieces, and every piece is scored alone (attention stays inside it).
Scorers: the model, and two baselines fit on the TRAIN split only (unigram, bidirectional n-gram),
all behind the score_fn interface of model.beam_fill, so every number has its baseline beside it.
"""
import os
import sys

import numpy as np
import torch

from model import beam_fill, encoder_scorer
from prepare.common import documents, fixed_subset, load_meta


MASKED_SIGN_RATE = 0.15
SUBSET_SEED = 42


def read_fragments(data_dir, split, spans=None):
    """[(ids int64, flags uint8)] of the documents of a split (or of the given (start, end) spans)."""
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    fl = np.fromfile(os.path.join(data_dir, f'{split}.flags.bin'), dtype=np.uint8)
    return [(ids[a:b], fl[a:b]) for a, b in (spans if spans is not None else documents(data_dir, split))]


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
    for ids, start, L in tqdm(spans, desc=desc, leave=False, disable=not spans or not sys.stderr.isatty()):
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
    n_lead, mask_id, V = len(sp), sp['[MASK]'], meta['vocab_size']
    banned = list(range(n_lead))
    T = ckpt['model_args']['block_size']
    train_ids = np.fromfile(os.path.join(data_dir, 'train.bin'), dtype=np.uint16).astype(np.int64)
    scorers = {'model': encoder_scorer(model, banned), 'unigram': UnigramScorer(train_ids, V, n_lead),
               'ngram': NgramScorer(train_ids, V, n_lead, mask_id)}
    sets = {}
    if os.path.exists(os.path.join(data_dir, 'val.bin')):
        n_val = len(documents(data_dir, 'val'))
        sub = fixed_subset(data_dir, 'val', subset_size, seed=SUBSET_SEED)  # the same subset as train.py's artifacts
        print(f"eval subset: {len(sub)} of {n_val} val fragments (seed {SUBSET_SEED})"
              + (" = all of them" if len(sub) == n_val else ""))
        sets['subset'] = read_fragments(data_dir, 'val', sub)
    if os.path.exists(os.path.join(data_dir, 'test.bin')):
        sets['test'] = read_fragments(data_dir, 'test')
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
