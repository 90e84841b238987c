"""
Restoration of damaged text with an encoder: the scorers and the search shared by sample.py and evaluate.py.

A scorer is any callable score_fn(x: LongTensor (B, T)) -> log-probs FloatTensor (B, T, V): for an encoder,
log p(token | x) at every position of the corrupted input; for the count-based baselines, the same from counts
of the train split. The search (beam_fill, restore_gaps) only reads the rows of the positions it fills, so
the model, the baselines and their product share it: the same search, different scorers.
"""
import math

import numpy as np
import torch


def encoder_scorer(model, banned_ids=(), doc=None):
    """score_fn of an Encoder: log_softmax of its logits with `banned_ids` (the specials: [PAD] [UNK]
    [MASK] [GAP] ...) set to -inf first, i.e. renormalised over the real signs. doc: optional (T,)
    document ids, used when x keeps that length (the model applies them only if cfg.doc_mask)."""
    banned = torch.tensor(sorted({int(i) for i in banned_ids}), dtype=torch.long)

    @torch.no_grad()
    def score_fn(x):
        d = None if doc is None else torch.as_tensor(doc, device=x.device)[None].expand(x.shape[0], -1)
        logits = model(x, doc=d)[0].float()
        if len(banned):
            logits[..., banned.to(x.device)] = float('-inf')
        return torch.log_softmax(logits, dim=-1)
    return score_fn


@torch.no_grad()
def beam_fill(score_fn, ids, positions, beam=20, banned_ids=(), topk=None):
    """Fill `positions` of the 1-D sequence `ids` (they hold [MASK]) jointly, left to right.
    Round r expands every beam at positions[r] with the scorer's log-probs there, re-running the
    scorer on the partially filled sequences (all beams in one batched call), and keeps the `beam`
    best. The joint score is the chain-rule factorisation
        log p(s_1..s_k) = sum_r log p(s_r | context, s_<r filled, s_>r still masked)
    (the non-sequential decoding of Aeneas / Ithaca's beam search, one position per round). With
    beam >= V^(k-1) no prefix is ever dropped and the result is the exact top of all V^k fillings.
    Returns [(tokens, joint log-prob)] best first, at most topk (default: beam) entries."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    positions = sorted(int(p) for p in positions)
    if not positions:
        return [([], 0.0)]
    banned = sorted({int(i) for i in banned_ids})
    seqs = ids[None].clone()
    scores = torch.zeros(1, dtype=torch.float64, device=ids.device)
    for p in positions:
        logp = score_fn(seqs)[:, p].double()                       # (n_beams, V)
        if banned:
            logp[:, banned] = float('-inf')
        V = logp.shape[1]
        total = (scores[:, None] + logp).reshape(-1)
        n = max(1, min(beam, int(torch.isfinite(total).sum())))
        scores, idx = total.topk(n)
        seqs = seqs[idx // V].clone()
        seqs[:, p] = idx % V
    k = min(topk or beam, len(scores))
    return [(seqs[i, positions].tolist(), scores[i].item()) for i in range(k)]


def _crop(seq, pos, window):
    """A window of `window` tokens of seq centred on the positions pos (all of seq when it fits)."""
    if not window or len(seq) <= window:
        return seq, pos
    mid = (pos[0] + pos[-1]) // 2
    s = min(max(0, mid - window // 2), len(seq) - window)
    return seq[s:s + window], [p - s for p in pos]


def restore_gaps(score_fn, ids, gaps, *, mask_id, max_gap_len=10, beam=20, alpha=1.0, topk=5, banned_ids=(),
                 window=0):
    """Restore every gap of the 1-D token sequence `ids`, one gap at a time.
    gaps: [(start, length)]: `length` lost signs at ids[start:start+length] (a known-length gap, e.g.
          adjacent [GAP]s: decoded jointly), or length None: ids[start] is one gap of unknown length.
    A known-length gap becomes `length` [MASK]s and is filled by beam_fill. An unknown-length gap is
    tried with every length k = 1..max_gap_len (k [MASK]s spliced in place of its token) and all
    candidates of all lengths are ranked by Aeneas's length-normalised score logp / (1 + k)^alpha
    (predictingthepast util/eval.py beam_search_batch, length exponent a).
    While one gap is restored the other gaps keep the tokens the data uses for them ([GAP] per lost
    sign, one [GAPN] per unknown-length gap): that is how lost signs appear in every training context
    (they are never MLM targets), whereas [MASK] only ever stood for exactly one hidden sign.
    window > 0 crops each scored sequence to that many tokens around the gap (the model's block_size).
    Returns per gap [(signs, joint prob, normalised score, length)], best score first, topk entries."""
    ids = [int(i) for i in ids]
    out = []
    for start, length in gaps:
        cands = []
        for k in ([length] if length else range(1, max_gap_len + 1)):
            seq = ids[:start] + [mask_id] * k + ids[start + (length or 1):]
            seq, pos = _crop(seq, list(range(start, start + k)), window)
            for signs, lp in beam_fill(score_fn, seq, pos, beam=beam, banned_ids=banned_ids, topk=topk):
                cands.append((signs, math.exp(lp), lp / (1 + k) ** alpha, k))  # Aeneas length normalisation
        cands.sort(key=lambda c: -c[2])
        out.append(cands[:topk])
    return out


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
