"""
Restoration of damaged text with an encoder: the scorers and the search shared by sample.py and evaluate.py.

A scorer is any callable score_fn(x: LongTensor (B, T)) -> log-probs FloatTensor (B, T, V): for an encoder,
log p(token | x) at every position of the corrupted input; for the count-based baselines, the same from counts
of the train split. The search (beam_fill, restore_gaps) only reads the rows of the positions it fills, so
the model, the baselines and their product share it: the same search, different scorers.
"""
import json
import math
import os
import tempfile

import numpy as np
import torch

from atf import is_target
from corpus import documents, load_meta


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

    @torch.no_grad()
    def rows(x, at):
        """score_fn(x)[b, at[b]] for every row b, the head run on those positions only (an Encoder)."""
        from model import Encoder
        d = None if doc is None else torch.as_tensor(doc, device=x.device)[None].expand(x.shape[0], -1)
        at = torch.as_tensor(at, device=x.device)
        if isinstance(model, Encoder):  # Encoder.forward's logits, at the rows read
            h, _ = model.trunk(x, d)
            logits = torch.nn.functional.linear(model.head(h[torch.arange(len(x), device=x.device), at]),
                                                model.trunk.wte.weight).float()
        else:
            logits = model(x, doc=d)[0].float()[torch.arange(len(x), device=x.device), at]
        if len(banned):
            logits[..., banned.to(x.device)] = float('-inf')
        return torch.log_softmax(logits, dim=-1)
    score_fn.rows = rows
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



def gap_score(lp, length, k, length_logprior=None, alpha=1.0):
    """The ranking score of a filling of k signs with joint log-probability lp: lp itself for a gap of known
    length; with the length hidden, log P(k) + lp under the train split's length prior, or else Aeneas's length
    normalisation lp / (1 + k)^alpha."""
    if length:
        return lp
    if length_logprior is not None:
        return lp + float(length_logprior[k])
    return lp / (1 + k) ** alpha

def restore_gaps(score_fn, ids, gaps, *, mask_id, max_gap_len=10, beam=20, alpha=1.0, topk=5, banned_ids=(),
                 window=0, length_logprior=None):
    """Restore every gap of the 1-D token sequence `ids`, one gap at a time.
    gaps: [(start, length)]: `length` lost signs at ids[start:start+length] (a known-length gap, e.g.
          adjacent [GAP]s: decoded jointly), or length None: ids[start] is one gap of unknown length.
    A known-length gap becomes `length` [MASK]s and is filled by beam_fill. An unknown-length gap is
    tried with every length k = 1..max_gap_len (k [MASK]s spliced in place of its token). With a length
    model (length_logprior[k] = log P(k), e.g. gap_length_prior) the candidates of all lengths are ranked by
    their joint log-probability log P(k) + log p(signs | k); without one, by Aeneas's length-normalised score
    logp / (1 + k)^alpha (predictingthepast util/eval.py beam_search_batch, length exponent a), which
    flattens the length so much that near-impossible long fillings tie with likely short ones.
    While one gap is restored the other gaps keep the tokens the data uses for them ([GAP] per lost
    sign, one [GAPN] per unknown-length gap): that is how lost signs appear in every training context
    (they are never MLM targets), whereas [MASK] only ever stood for exactly one hidden sign.
    window > 0 crops each scored sequence to that many tokens around the gap (the model's block_size).
    Returns per gap [(signs, joint prob, ranking score, length)], best score first, topk entries."""
    ids = [int(i) for i in ids]
    out = []
    for start, length in gaps:
        cands = []
        for k in ([length] if length else range(1, max_gap_len + 1)):
            seq = ids[:start] + [mask_id] * k + ids[start + (length or 1):]
            seq, pos = _crop(seq, list(range(start, start + k)), window)
            for signs, lp in beam_fill(score_fn, seq, pos, beam=beam, banned_ids=banned_ids, topk=topk):
                cands.append((signs, math.exp(lp), gap_score(lp, length, k, length_logprior, alpha), k))
        cands.sort(key=lambda c: -c[2])
        out.append(cands[:topk])
    return out


def gap_length_prior(train_ids, train_flags, gap_id, max_gap_len, restored_state=2, sign_flag=8):
    """log P(k), k = 0..max_gap_len (index 0 unused, -inf): how many signs a lost stretch holds, counted on the
    train split: the lengths of the maximal runs of lost signs whose number the editor gives (`x x x`, one
    [GAP] each) and of runs of editor-restored signs (the `[...]` the editor filled in), add-one smoothed over
    1..max_gap_len (a run longer than that counts as max_gap_len)."""
    counts = np.ones(max_gap_len + 1)
    counts[0] = 0
    runs = [train_ids == gap_id, ((train_flags & sign_flag) != 0) & ((train_flags & 3) == restored_state)]
    for r in runs:
        d = np.diff(np.concatenate([[0], r.astype(np.int8), [0]]))
        lengths = np.flatnonzero(d == -1) - np.flatnonzero(d == 1)
        np.add.at(counts, np.minimum(lengths, max_gap_len), 1)
    with np.errstate(divide='ignore'):
        return np.log(counts / counts.sum())


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

    def rows(self, x, at):
        return self.logp.to(x.device).expand(x.shape[0], -1)


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
        with np.errstate(divide='ignore'):
            out[bi_, ii] = torch.from_numpy(np.log(self._probs(xb, bi_, ii))).float()
        return out.to(x.device)

    def rows(self, x, at):
        """self(x)[b, at[b]] for every row b, computed at those positions only."""
        xb, at = x.cpu().numpy(), np.asarray(torch.as_tensor(at).cpu())
        out = self.logp.expand(x.shape[0], -1).clone()
        bi_ = np.flatnonzero(xb[np.arange(len(xb)), at] == self.mask_id)
        if len(bi_):
            with np.errstate(divide='ignore'):
                out[bi_] = torch.from_numpy(np.log(self._probs(xb, bi_, at[bi_]))).float()
        return out.to(x.device)

    def _probs(self, xb, bi_, ii):
        """The n-gram distributions (N, V) at the [MASK] positions (bi_, ii) of the rows xb (B, T)."""
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
        return np.where((lk & rk)[:, None], p3, np.where(lk[:, None], pl, np.where(rk[:, None], pr, p1)))


class ProductScorer:
    """A product of experts (Hinton 2002), i.e. a log-linear interpolation (Klakow 1998) of scorers:
        log p(s | x) = sum_i w_i log p_i(s | x) - log Z(x),
    normalised over the real signs (banned ids get -inf). With one weight 1 and the rest 0 it is that
    scorer. The weights are chosen on held-out data (fit_product_weights), never on the test split."""

    def __init__(self, scorers, weights, banned_ids=()):
        self.scorers, self.weights = list(scorers), [float(w) for w in weights]
        self.banned = sorted({int(i) for i in banned_ids})

    @torch.no_grad()
    def __call__(self, x):
        total = None
        for sf, w in zip(self.scorers, self.weights):
            if w == 0:
                continue
            lp = sf(x).float()
            lp = w * lp.masked_fill(torch.isneginf(lp), -1e4)  # -inf * 0 would be nan; -1e4 keeps it out of the top
            total = lp if total is None else total + lp
        if self.banned:
            total[..., self.banned] = float('-inf')
        return torch.log_softmax(total, dim=-1)

    @torch.no_grad()
    def rows(self, x, at):
        """self(x)[b, at[b]] for every row b, each expert asked for those rows only (score_rows)."""
        total = None
        for sf, w in zip(self.scorers, self.weights):
            if w == 0:
                continue
            lp = score_rows(sf, x, at).float()
            lp = w * lp.masked_fill(torch.isneginf(lp), -1e4)
            total = lp if total is None else total + lp
        if self.banned:
            total[..., self.banned] = float('-inf')
        return torch.log_softmax(total, dim=-1)


def score_rows(score_fn, x, at):
    """The log-probs (B, V) of score_fn at position at[b] of each row b of x: its `rows` method when it has one (the
    scorers of this file: the same numbers, computed at those positions only), else score_fn(x) indexed."""
    rows = getattr(score_fn, 'rows', None)
    at = torch.as_tensor(at, dtype=torch.long)
    if rows is not None:
        return rows(x, at)
    return score_fn(x)[torch.arange(len(x)), at.to(x.device)]


def fit_product_weights(scorers, pieces, mask_id, n_lead, seed, grids, rate=0.15, max_rows=4000, batch_size=32):
    """Weights of a ProductScorer over `scorers` ({name: score_fn}) that maximise the mean log-likelihood of
    the true sign (a proper scoring rule) at masked positions of `pieces` ([(ids, flags)], held-out data):
    `rate` of the target signs masked with `seed`, one sign per [MASK] as in training. grids: {name: [w, ...]}
    searched exhaustively. Returns ({name: weight}, {'restore_fit_rows': N, 'restore_fit_loglik': ...})."""
    from itertools import product
    rng = np.random.default_rng(seed)
    rows, truths = {n: [] for n in scorers}, []
    for ids, fl in pieces:
        chosen = is_target(fl) & (ids >= n_lead) & (rng.random(len(ids)) < rate)
        if not chosen.any():
            continue
        x = ids.copy()
        x[chosen] = mask_id
        xt = torch.from_numpy(x)[None]
        for n, sf in scorers.items():
            rows[n].append(sf(xt)[0][torch.from_numpy(chosen)].double().cpu())
        truths.append(torch.from_numpy(ids[chosen]))
        if sum(len(t) for t in truths) >= max_rows:
            break
    if not truths:
        return {n: (1.0 if k == 0 else 0.0) for k, n in enumerate(scorers)}, {'restore_fit_rows': 0}
    true = torch.cat(truths)
    lps = {n: torch.cat(r).masked_fill(torch.isneginf(torch.cat(r)), -1e4) for n, r in rows.items()}
    banned = torch.zeros(lps[next(iter(lps))].shape[1], dtype=torch.bool)
    banned[:n_lead] = True
    best = (-float('inf'), None)
    for ws in product(*(grids[n] for n in scorers)):
        if not any(ws):
            continue
        total = sum(w * lps[n] for n, w in zip(scorers, ws)).masked_fill(banned, float('-inf'))
        ll = torch.log_softmax(total, -1).gather(1, true[:, None]).mean().item()
        if ll > best[0]:
            best = (ll, ws)
    return dict(zip(scorers, best[1])), {'restore_fit_rows': int(len(true)), 'restore_fit_loglik': best[0]}


# ----------------------------------------------------------------------------- the default restoration scorer

RESTORE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # weights tried for each expert
RESTORE_FIT_SEED = 4242                                  # masks of the weight fit (not those of any reported metric)
RESTORE_EXPERTS = ('model', 'ngram', 'infinigram')       # the experts of the default scorer's product


def read_fragments(data_dir, split, spans=None):
    """[(ids int64, flags uint8)] of the documents of a split (or of the given (start, end) spans)."""
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    fl = np.fromfile(os.path.join(data_dir, f'{split}.flags.bin'), dtype=np.uint8)
    return [(ids[a:b], fl[a:b]) for a, b in (spans if spans is not None else documents(data_dir, split))]


def cut_pieces(frags, T):
    return [(i[s:s + T], f[s:s + T]) for i, f in frags for s in range(0, len(i), T)]


def describe_product(weights):
    return ' x '.join(f'{n}^{w:g}' for n, w in weights.items())


def restore_cache_key(ckpt_path, ckpt, data_fingerprint):
    """What the restoration weights fitted on val depend on: the checkpoint file (its name, size and modification
    time, which every save changes, its iteration and whether its EMA or raw weights were loaded), the data the
    weights are fitted on (data_fingerprint: checkpoint.data_fingerprints(data_dir)['data'] of that data, not of
    the data the model was trained on, which --allow_other_data may differ from) and the fit itself."""
    st = os.stat(ckpt_path)
    return {'checkpoint': {'name': os.path.basename(ckpt_path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
                           'iter': ckpt.get('iter_num'), 'weights': ckpt.get('weights', 'raw')},
            'data': data_fingerprint,
            'fit': {'experts': list(RESTORE_EXPERTS), 'grid': list(RESTORE_GRID), 'seed': RESTORE_FIT_SEED}}


def read_restore_cache(path, key):
    """The weights stored in restore.json when they are whole and stored under `key`; else None (they are fitted
    again, with one line saying why when the file exists)."""
    from corpus import loads_json
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            stored = loads_json(f.read())
    except (OSError, ValueError) as e:
        print(f"{path} is unreadable ({str(e).splitlines()[0][:80]}): fitting the restoration weights again")
        return None
    w = stored.get('weights') if isinstance(stored, dict) else None
    if not (isinstance(w, dict) and w and set(w) <= set(RESTORE_EXPERTS)
            and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in w.values())):
        print(f"{path} does not hold restoration weights: fitting them again")
        return None
    if stored.get('key') != key:
        return None  # another checkpoint or other data: fitted again, silently (the usual case after training)
    return stored


def restoration_scorers(model, data_dir, max_gap_len=10, cache_dir=None, cache_key=None, verbose=True):
    """The scorers of an Akkadian encoder: 'model' (the encoder alone), the count baselines 'unigram' and 'ngram'
    (fit on the train split only), and 'restore', the default: the product of the encoder and the n-gram with
    weights chosen on the val split (fit_product_weights; the test split is never read). Also returns
    info = {weights, fit statistics, 'length_logprior': log P(k) of gap lengths from the train split}.
    With cache_dir, the fitted weights are stored in cache_dir/restore.json under cache_key (restore_cache_key:
    the checkpoint and the data) and reused only while the key matches and the file is whole; otherwise (another
    checkpoint or data, a damaged file) they are fitted again and the file rewritten."""

    meta = load_meta(data_dir)
    sp = meta['special_ids']
    n_lead, mask_id, V = len(sp), sp['[MASK]'], meta['vocab_size']
    banned = list(range(n_lead))
    train_ids = np.fromfile(os.path.join(data_dir, 'train.bin'), dtype=np.uint16).astype(np.int64)
    train_fl = np.fromfile(os.path.join(data_dir, 'train.flags.bin'), dtype=np.uint8)
    scorers = {'model': encoder_scorer(model, banned), 'unigram': UnigramScorer(train_ids, V, n_lead),
               'ngram': NgramScorer(train_ids, V, n_lead, mask_id)}
    scorers['infinigram'] = InfinigramScorer(train_ids, V, n_lead, mask_id, ngram=scorers['ngram'])
    cache = os.path.join(cache_dir, 'restore.json') if cache_dir else None
    if cache and os.path.exists(cache) and not os.path.isfile(cache):
        print(f"{cache} is not a file: the restoration weights are fitted and not cached")
        cache = None
    info = read_restore_cache(cache, cache_key) if cache else None
    if info is None:
        experts = {n: scorers[n] for n in RESTORE_EXPERTS}
        if os.path.exists(os.path.join(data_dir, 'val.bin')) and documents(data_dir, 'val'):
            pieces = cut_pieces(read_fragments(data_dir, 'val'), model.cfg.block_size)
            weights, fit = fit_product_weights(experts, pieces, mask_id, n_lead, RESTORE_FIT_SEED,
                                               {n: RESTORE_GRID for n in experts})
        else:
            weights, fit = {n: float(n == 'model') for n in RESTORE_EXPERTS}, {'restore_fit_rows': 0}
        info = {'key': cache_key, 'weights': weights, **fit}
        if cache:  # a unique temporary file, then rename: two samplers never share one, a reader never sees half
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix='.restore.json.', suffix='.tmp')
            try:
                with os.fdopen(fd, 'w', encoding='utf-8') as f:
                    json.dump(info, f, indent=1)
                os.replace(tmp, cache)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    if verbose:
        print(f"restoration scorer: {describe_product(info['weights'])} (weights chosen on val, "
              f"{info.get('restore_fit_rows', 0)} masked signs)")
    scorers['restore'] = ProductScorer([scorers[n] for n in info['weights']], list(info['weights'].values()), banned)
    info['length_logprior'] = gap_length_prior(train_ids, train_fl, sp['[GAP]'], max_gap_len)
    return scorers, info


class InfinigramScorer:
    """Count-based evidence of unbounded context: an infini-gram (Liu et al. 2024, "Infini-gram: Scaling Unbounded
    n-gram Language Models to a Trillion Tokens") made bidirectional for gaps. At a [MASK] with known signs
    l_a..l_1 on its left and r_1..r_b on its right, the context is the longest one that occurs in the train split
    around some sign (grown one sign at a time, alternating sides, up to max_ctx a side, as the infini-gram takes
    the longest suffix with a non-zero count), and the distribution is that of the signs found there,
        p(s) = (c(s) + u p_ngram(s)) / (C + u),
    Witten-Bell interpolated (u distinct signs among C occurrences) with the bidirectional n-gram, which also
    answers where no context longer than one sign a side matches. Occurrences are read from a position index of
    the train split (no suffix array is needed at these corpus sizes: the candidates are the occurrences of the
    nearest sign, filtered as the context grows)."""

    def __init__(self, train_ids, vocab_size, n_lead, mask_id, ngram=None, max_ctx=8):
        self.data = np.asarray(train_ids, dtype=np.int64)
        self.V, self.n_lead, self.mask_id, self.max_ctx = vocab_size, n_lead, mask_id, max_ctx
        self.ngram = ngram or NgramScorer(train_ids, vocab_size, n_lead, mask_id)
        order = np.argsort(self.data, kind='stable')
        bounds = np.searchsorted(self.data[order], np.arange(vocab_size + 1))
        self.pos = [order[bounds[t]:bounds[t + 1]] for t in range(vocab_size)]
        self.cache = {}

    def counts(self, left, right):
        """(count vector, context length) of the longest matching context; None when it is one sign a side or less."""
        key = (left, right)
        if key in self.cache:
            return self.cache[key]
        d, n = self.data, len(self.data)
        if left:
            c = self.pos[left[-1]] + 1
        elif right:
            c = self.pos[right[0]] - 1
        else:
            return None
        c = c[(c >= 0) & (c < n)]
        c = c[d[c] >= self.n_lead]
        a, b = (1, 0) if left else (0, 1)
        if left and right:
            c = c[(c + 1 < n)]
            c = c[d[np.minimum(c + 1, n - 1)] == right[0]]
            b = 1
        grown = True
        while grown and len(c):
            grown = False
            if a < len(left):
                k = c - a - 1
                c2 = c[(k >= 0) & (d[np.maximum(k, 0)] == left[-(a + 1)])]
                if len(c2):
                    c, a, grown = c2, a + 1, True
            if b < len(right):
                k = c + b + 1
                c2 = c[(k < n) & (d[np.minimum(k, n - 1)] == right[b])]
                if len(c2):
                    c, b, grown = c2, b + 1, True
        out = (np.bincount(d[c], minlength=self.V).astype(np.float64), a + b) if len(c) and a + b > 2 else None
        self.cache[key] = out
        return out

    def __call__(self, x):
        out = self.ngram(x).clone()
        xb = x.cpu().numpy()
        real = (xb >= self.n_lead) & (xb != self.mask_id)
        for b, i in zip(*np.nonzero(xb == self.mask_id)):
            row = self._at(xb[b], real[b], i, out[b, i])
            if row is not None:
                out[b, i] = row
        return out.to(x.device)

    def rows(self, x, at):
        """self(x)[b, at[b]] for every row b, computed at those positions only."""
        out = self.ngram.rows(x, at).clone()
        xb, at = x.cpu().numpy(), np.asarray(torch.as_tensor(at).cpu())
        real = (xb >= self.n_lead) & (xb != self.mask_id)
        for b in np.flatnonzero(xb[np.arange(len(xb)), at] == self.mask_id):
            row = self._at(xb[b], real[b], at[b], out[b])
            if row is not None:
                out[b] = row
        return out.to(x.device)

    def _at(self, xr, real, i, lower_logp):
        """The log-probs at [MASK] position i of the row xr: the longest matching context's counts interpolated
        with the lower-order log-probs `lower_logp`, or None where no context longer than one sign a side matches."""
        T = len(xr)
        j = i
        while j > 0 and real[j - 1] and i - j < self.max_ctx:
            j -= 1
        k = i + 1
        while k < T and real[k] and k - i - 1 < self.max_ctx:
            k += 1
        hit = self.counts(tuple(xr[j:i].tolist()), tuple(xr[i + 1:k].tolist()))
        if hit is None:
            return None
        cnt = hit[0]
        lower = torch.exp(lower_logp.double()).numpy()
        C, u = cnt.sum(), (cnt > 0).sum()
        p = (cnt + u * lower) / (C + u)
        with np.errstate(divide='ignore'):
            return torch.from_numpy(np.log(p)).to(lower_logp.dtype)


@torch.no_grad()
def score_filling(score_fn, ids, positions, signs):
    """Joint log-probability of one given filling under the chain rule of beam_fill (left to right, each sign
    scored with the earlier ones filled and the later ones still [MASK]): comparable with beam_fill's scores."""
    seq = torch.as_tensor(ids, dtype=torch.long).clone()
    positions = sorted(int(p) for p in positions)
    total = 0.0
    for p, s in zip(positions, signs):
        total += float(score_fn(seq[None])[0, p, int(s)])
        seq[p] = int(s)
    return total


# ----------------------------------------------------------------------------- parallels (Aeneas contextualisation)

def _doc_index(data_dir, split):
    """(starts, ends, names): the documents of a split and their ids from meta.json (when recorded)."""

    docs = documents(data_dir, split)
    names = (load_meta(data_dir).get('splits') or {}).get(split) or []
    if len(names) != len(docs):
        names = [f'{split}#{k}' for k in range(len(docs))]
    return np.array([a for a, _ in docs]), np.array([b for _, b in docs]), names


PARALLEL_CHUNK = 16     # tokens of one pooled chunk of the parallels index (stride half of it)
PARALLEL_RERANK = 64    # documents whose windows are embedded exactly, as the query is, after the index


def _pooled(model, x, n_lead):
    """Mean of the final encoder states over the real signs of each row of x (B, T), unit length."""
    device = next(model.parameters()).device
    h, _ = model.trunk(x.to(device))
    real = (x >= n_lead).to(h.dtype).to(device)[..., None]
    return torch.nn.functional.normalize((h * real).sum(1) / real.sum(1).clamp_min(1), dim=-1)


@torch.no_grad()
def parallels_index(model, data_dir, n_lead, split='train', batch_size=64, cache=None, key=None):
    """The index behind similar_passages: one pass of the encoder over every document of `split` (cut into
    block_size pieces, each read in its own context, attention inside the document), and the final states
    mean-pooled over chunks of PARALLEL_CHUNK tokens at stride PARALLEL_CHUNK // 2: (vectors (M, d) float16,
    unit length; document index (M,)). One pass reads each token once, where embedding every window of every
    query length would read it many times per query. With `cache` (a file) the index is stored there under
    `key` (the checkpoint's iteration and data fingerprint) and reused while the key matches."""
    if cache and os.path.exists(cache):
        stored = torch.load(cache, weights_only=True)
        if stored.get('key') == key:
            return stored['vectors'], stored['docs']
    data = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    T, C = model.cfg.block_size, PARALLEL_CHUNK
    pieces = [(d, s, min(s + T, b)) for d, (a, b) in enumerate(documents(data_dir, split)) for s in range(a, b, T)]
    by_len = {}
    for p in pieces:
        by_len.setdefault(p[2] - p[1], []).append(p)
    vecs, owners = [], []
    device = next(model.parameters()).device
    for L, group in sorted(by_len.items()):
        starts = list(range(0, max(1, L - C + 1), C // 2))
        if starts[-1] + C < L:
            starts.append(L - C)
        for b0 in range(0, len(group), batch_size):
            chunk = group[b0:b0 + batch_size]
            x = torch.from_numpy(np.stack([data[s:e] for _, s, e in chunk]))
            h, _ = model.trunk(x.to(device))
            real = (x >= n_lead).to(h.dtype).to(device)[..., None]
            cs = torch.cat([torch.zeros_like(h[:, :1]), torch.cumsum(h * real, 1)], 1)      # (B, L + 1, d)
            cn = torch.cat([torch.zeros_like(real[:, :1]), torch.cumsum(real, 1)], 1)
            st = torch.tensor(starts, device=device)
            en = (st + C).clamp_max(L)
            v = (cs[:, en] - cs[:, st]) / (cn[:, en] - cn[:, st]).clamp_min(1)          # (B, chunks, d)
            vecs.append(torch.nn.functional.normalize(v, dim=-1).reshape(-1, h.shape[-1]).half().cpu())
            owners.append(torch.tensor([d for d, _, _ in chunk]).repeat_interleave(len(starts)))
    vectors, docs = torch.cat(vecs), torch.cat(owners).int()
    if cache:
        tmp = cache + f'.{os.getpid()}.tmp'
        torch.save({'key': key, 'vectors': vectors, 'docs': docs}, tmp)
        os.replace(tmp, cache)
    return vectors, docs


@torch.no_grad()
def similar_passages(model, data_dir, query_ids, n_lead, n=5, split='train', batch_size=64, cache=None, key=None,
                     rerank=PARALLEL_RERANK):
    """The n passages of `split` most similar to the query (Aeneas's parallels: cosine similarity of the mean-pooled
    final encoder states, Assael et al. 2025). Two stages, as a retrieval system does: the `rerank` documents whose
    best chunk of the parallels index (parallels_index, built once per checkpoint and cached) is closest to the
    query; then, in those documents only, every window of the query's length (stride half of it) embedded alone as
    the query is, and the best window of each document. When `rerank` covers every document this is the exhaustive
    search over all windows. Returns [(cosine, doc id, start, end)] best first (offsets into the split's token file)."""
    q = torch.as_tensor(query_ids, dtype=torch.long)
    W = int(min(max(len(q), 4), model.cfg.block_size))
    data = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    starts, ends, names = _doc_index(data_dir, split)
    if not len(starts):
        return []
    qe = _pooled(model, q[None][:, -W:], n_lead)[0]
    if rerank < len(starts):
        vectors, owners = parallels_index(model, data_dir, n_lead, split, batch_size, cache, key)
        sims = vectors.float() @ qe.float().cpu()
        best = torch.full((len(starts),), -2.0).scatter_reduce(0, owners.long(), sims, 'amax')
        keep = best.topk(rerank).indices.tolist()
    else:
        keep = range(len(starts))
    wins = [(d, s) for d in keep for s in range(starts[d], max(starts[d] + 1, ends[d] - W + 1), max(1, W // 2))]
    sims = []
    for b0 in range(0, len(wins), batch_size):
        chunk = wins[b0:b0 + batch_size]
        x = torch.from_numpy(np.stack([np.pad(data[s:min(s + W, ends[d])], (0, max(0, s + W - ends[d])))
                                       for d, s in chunk]))
        sims.append(_pooled(model, x, n_lead) @ qe)
    sims = torch.cat(sims).cpu()
    out, seen = [], set()
    for i in sims.argsort(descending=True).tolist():  # one passage per document: the best window
        d, s = wins[i]
        if d in seen:
            continue
        seen.add(d)
        out.append((float(sims[i]), names[d], int(s), int(min(s + W, ends[d]))))
        if len(out) == n:
            break
    return out


def context_matches(data_dir, left, right, lengths, n_lead, split='train', max_ctx=3, limit=5):
    """Exact matches of a gap's context in `split`: occurrences of the last signs before the gap (`left`) and the
    first after it (`right`) with g real signs between, g in `lengths`, backing off from max_ctx signs a side to
    fewer until something matches (one side alone needs 2 signs). Returns {'left': [...], 'right': [...],
    'fillings': [(signs, count)], 'examples': [(doc id, offset, fill)]}, or None when nothing matches."""
    data = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).astype(np.int64)
    starts, ends, names = _doc_index(data_dir, split)
    left, right = [int(t) for t in left if t >= n_lead], [int(t) for t in right if t >= n_lead]
    sizes = sorted({(a, b) for a in range(min(max_ctx, len(left)) + 1) for b in range(min(max_ctx, len(right)) + 1)
                    if (a and b) or a + b >= 2}, key=lambda ab: (-(ab[0] + ab[1]), -min(ab)))
    from numpy.lib.stride_tricks import sliding_window_view
    for a, b in sizes:
        L, R = left[len(left) - a:], right[:b]
        found = {}
        for g in lengths:
            n = a + g + b
            if n > len(data):
                continue
            win = sliding_window_view(data, n)
            ok = np.ones(len(win), dtype=bool)
            if a:
                ok &= (win[:, :a] == L).all(1)
            if b:
                ok &= (win[:, a + g:] == R).all(1)
            ok &= (win[:, a:a + g] >= n_lead).all(1)
            for i in np.flatnonzero(ok):
                found.setdefault(tuple(win[i, a:a + g].tolist()), []).append(int(i))
        if found:
            fills = sorted(found.items(), key=lambda kv: -len(kv[1]))
            examples = []
            for fill, pos in fills[:limit]:
                d = int(np.searchsorted(starts, pos[0], side='right') - 1)
                examples.append((names[d], pos[0], list(fill)))
            return {'left': L, 'right': R, 'fillings': [(list(f), len(p)) for f, p in fills[:limit]],
                    'examples': examples}
    return None


# ----------------------------------------------------------------------------- many gaps at once (whole texts)

@torch.no_grad()
def beam_fill_many(score_fn, jobs, beam=20, banned_ids=(), topk=None, max_tokens=32768):
    """beam_fill for many jobs [(ids, positions)] at once: every round, the beams of all jobs that still have a
    position to fill go through the scorer together (sequences of one length per call, at most max_tokens tokens
    per call), so a text's gaps cost a few batched calls instead of one small call per gap and position. The
    search of each job is beam_fill's: the same rounds, scores and ties. Returns [beam_fill's result] per job."""
    banned = sorted({int(i) for i in banned_ids})
    state = []
    for ids, positions in jobs:
        ids = torch.as_tensor(ids, dtype=torch.long)
        state.append({'seqs': ids[None].clone(), 'scores': torch.zeros(1, dtype=torch.float64),
                      'pos': sorted(int(p) for p in positions)})
    r = 0
    while True:
        active = [s for s in state if r < len(s['pos'])]
        if not active:
            break
        by_len = {}
        for s in active:
            by_len.setdefault(s['seqs'].shape[1], []).append(s)
        for L, group in by_len.items():
            rows = max(1, max_tokens // L)
            k = 0
            while k < len(group):  # whole jobs per call, about `rows` sequences
                chunk, n = [], 0
                while k < len(group) and (not chunk or n + len(group[k]['seqs']) <= rows):
                    chunk.append(group[k])
                    n += len(group[k]['seqs'])
                    k += 1
                where = torch.cat([torch.full((len(s['seqs']),), s['pos'][r]) for s in chunk])
                out = score_rows(score_fn, torch.cat([s['seqs'] for s in chunk]), where)
                at = 0
                for s in chunk:
                    nb, p = len(s['seqs']), s['pos'][r]
                    logp = out[at:at + nb].double().cpu()
                    at += nb
                    if banned:
                        logp[:, banned] = float('-inf')
                    V = logp.shape[1]
                    total = (s['scores'][:, None] + logp).reshape(-1)
                    m = max(1, min(beam, int(torch.isfinite(total).sum())))
                    s['scores'], idx = total.topk(m)
                    s['seqs'] = s['seqs'][idx // V].clone()
                    s['seqs'][:, p] = idx % V
        r += 1
    res = []
    for s in state:
        if not s['pos']:
            res.append([([], 0.0)])
            continue
        k = min(topk or beam, len(s['scores']))
        res.append([(s['seqs'][i, s['pos']].tolist(), s['scores'][i].item()) for i in range(k)])
    return res


def restore_gaps_many(score_fn, items, *, mask_id, max_gap_len=10, beam=20, alpha=1.0, topk=5, banned_ids=(),
                      window=0, length_logprior=None, chunk=32, progress=None):
    """restore_gaps for many sequences: items [(ids, gaps)] -> per item, per gap, restore_gaps's candidates
    [(signs, joint prob, ranking score, length)]. The gaps are restored `chunk` at a time, all the searches of a
    chunk (every length of an unknown-length gap) batched through beam_fill_many; progress: a tqdm bar, advanced
    by the gaps done."""
    flat = [(n, g, [int(i) for i in ids], start, length)
            for n, (ids, gaps) in enumerate(items) for g, (start, length) in enumerate(gaps)]
    out = [[None] * len(gaps) for _, gaps in items]
    for c0 in range(0, len(flat), chunk):
        jobs, owners = [], []
        for n, g, ids, start, length in flat[c0:c0 + chunk]:
            for k in ([length] if length else range(1, max_gap_len + 1)):
                seq = ids[:start] + [mask_id] * k + ids[start + (length or 1):]
                jobs.append(_crop(seq, list(range(start, start + k)), window))
                owners.append((n, g, length, k))
        found = beam_fill_many(score_fn, jobs, beam=beam, banned_ids=banned_ids, topk=topk)
        cands = {}
        for (n, g, length, k), res in zip(owners, found):
            for signs, lp in res:
                cands.setdefault((n, g), []).append((signs, math.exp(lp), gap_score(lp, length, k, length_logprior, alpha), k))
        for (n, g), cs in cands.items():
            cs.sort(key=lambda c: -c[2])
            out[n][g] = cs[:topk]
        if progress is not None:
            progress.update(len(flat[c0:c0 + chunk]))
    return out


# ----------------------------------------------------------------------------- why this restoration

@torch.no_grad()
def occlusion_saliency(score_fn, ids, positions, signs, mask_id, context, max_tokens=32768):
    """How much each context sign supports a restoration: the drop of the filling's log-probability when that sign
    is hidden (occlusion; Zeiler & Fergus 2014), for any scorer, the product of experts included:
        drop_j = log p(signs | x) - log p(signs | x with x_j := [MASK]),
    both the chain-rule joint of score_filling (left to right, later positions still masked). A positive drop: the
    sign made the filling more likely; negative: less. ids: the sequence with [MASK] at `positions` (the gap);
    context: the positions to hide one at a time. Returns (log p(signs | x), [drop_j per context position])."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    positions = sorted(int(p) for p in positions)
    context = [int(j) for j in context]
    x = ids[None].repeat(1 + len(context), 1)
    x[torch.arange(1, 1 + len(context)), torch.tensor(context, dtype=torch.long)] = mask_id
    total = torch.zeros(len(x), dtype=torch.float64)
    rows = max(1, max_tokens // x.shape[1])
    for p, s in zip(positions, signs):
        lp = torch.cat([score_rows(score_fn, x[b:b + rows], torch.full((len(x[b:b + rows]),), p))[:, int(s)].double().cpu()
                        for b in range(0, len(x), rows)])
        total += lp
        x[:, p] = int(s)
    return float(total[0]), (total[0] - total[1:]).tolist()
