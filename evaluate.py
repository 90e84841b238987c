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

An mdlm checkpoint (masked diffusion) reports the plain MDLM NELBO whatever its training options: windows
of block_size, one t per window stratified over the split, uniform log-linear masking, float64 sums:
{split}_nelbo (nats/token), {split}_ppl_bound = exp(nelbo) (an upper bound on perplexity),
{split}_bpb; beside them the unigram entropy of the train split and the split's cross-entropy under it.
--gen_ppl_ckpt=out-wiki-gpt/ckpt.pt (a gpt trained on the same data) adds the generative perplexity of
gen_samples unconditional samples (gen_steps steps, ddpm_cache, float64) under that gpt, always with the
samples' unigram entropy: gen_ppl, gen_unigram_entropy (nats; a low entropy means repetitive samples),
and data_window_unigram_entropy, the same measure on real windows of the same length.

A causal checkpoint (gpt or backpack) of the EN-FR data (meta.json dataset 'europarl', prepare/europarl.py)
also gets per-language perplexity / bits per byte ({split}_en_ppl, {split}_fr_bpb), translation of the
held-out pairs by prompting `<en> EN <fr>` (translate_greedy_bleu / _chrf / _exact / _word_acc / _char_acc,
the same for beam), word similarity (ws_simlex999_emb_spearman, ..._min_, ..._single, coverage counts),
cross-lingual similarity (xling_*) and, for a backpack, sense tables (printed and in out_dir/senses.txt);
see the section "EN-FR metrics" below for the definitions.
"""
import json
import math
import os

import numpy as np
import torch

from configurator import configure
from model import beam_fill, encoder_scorer, load_checkpoint, load_run, mlm_mask, objective
from prepare.common import die, documents, fixed_subset, load_meta, load_tokenizer, maskable_positions

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
# mdlm checkpoints
nelbo_samples = 2             # (t, mask) draws per window for the NELBO
gen_ppl_ckpt = ''             # a gpt checkpoint trained on the same data: generative perplexity of samples
gen_samples = 8               # unconditional samples scored for gen_ppl
gen_steps = 128               # their denoising steps
# EN-FR checkpoints (data of prepare/europarl.py; gpt and backpack)
translate_n = 200             # europarl: held-out pairs translated (the first n that fit the context)
translate_beam = 4            # europarl: beam width (0 = greedy only)
translate_max_new = 64        # europarl: most generated tokens per translation
turkmorfbench_on = True       # turkish: TurkMorfBench core forced-choice accuracy of causal checkpoints (False = off;
                              # not named `turkmorfbench`, which is the scoring function below)
sense_words = 'file,window,table,key,open,print,right,cell,fichier,fenêtre,touche,ouvrir'  # backpack sense tables
# -----------------------------------------------------------------------------


def windows(data, T, max_tokens):
    """Non-overlapping windows of T+1 tokens (input T, target T) covering the split."""
    n = len(data) if not max_tokens else min(len(data), max_tokens + 1)
    starts = np.arange(0, max(n - T - 1, 0) + 1, T)
    return starts


@torch.no_grad()
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
        nchars += tchars[yv.cpu()][valid.cpu()].sum().item()
    if count == 0:
        die(f"no tokens were evaluated in {split_name}")
    loss = nll / count
    return {f'{split_name}_loss': loss, f'{split_name}_ppl': math.exp(min(loss, 700)),
            f'{split_name}_bpb': nll / math.log(2) / max(nbytes, 1), f'{split_name}_acc': correct / count,
            f'{split_name}_bpc': nll / math.log(2) / max(nchars, 1), f'{split_name}_tokens': int(count)}


# ----------------------------------------------------------------------------- Akkadian restoration metrics
# Eval sets: 'subset' = subset_size val fragments chosen with seed 42 (all when fewer exist), 'test' =
# the whole test split. A fragment is the run of tokens between two separators; one longer than
# block_size is cut into block_size pieces, and every piece is scored alone (attention stays inside it).
# Scorers: the model, and two baselines fit on the TRAIN split only (unigram, bidirectional n-gram),
# all behind the score_fn interface of model.beam_fill, so every number has its baseline beside it.

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


# ----------------------------------------------------------------------------- masked diffusion (mdlm) metrics

def unigram_stats(data_dir, split_names):
    """Unigram entropy of the train split (nats/token) and each split's cross-entropy under the add-one
    train unigram: the level a model must go well below to have learnt anything beyond frequencies."""
    tr = np.fromfile(os.path.join(data_dir, 'train.bin'), dtype=np.uint16)
    c = np.bincount(tr, minlength=load_meta(data_dir)['vocab_size']).astype(np.float64)
    p = c[c > 0] / c.sum()
    res = {'data_unigram_entropy': float(-(p * np.log(p)).sum())}
    q = (c + 1) / (c.sum() + len(c))
    for s in split_names:
        d = np.fromfile(os.path.join(data_dir, f'{s}.bin'), dtype=np.uint16)
        res[f'{s}_unigram_xent'] = float(-np.log(q[d]).mean())
    return res


@torch.no_grad()
def evaluate_mdlm_split(model, ckpt, data_dir, split_name, device, max_tokens=0, batch_size=32, seed=42, n_rep=2):
    """Plain MDLM NELBO of a split: non-overlapping windows of block_size tokens, n_rep (t, mask) draws per
    window, t stratified over all windows of the split (model.diffusion_noise), float64 sums."""
    from model import diffusion_noise, mdlm_per_sequence_nelbo
    T = ckpt['model_args']['block_size']
    data = np.memmap(os.path.join(data_dir, f'{split_name}.bin'), dtype=np.uint16, mode='r')
    n = len(data) if not max_tokens else min(len(data), max_tokens)
    starts = np.arange(0, n - T + 1, T)
    if len(starts) == 0:
        die(f"{split_name}.bin has {len(data)} tokens, fewer than a window of {T}")
    tbytes = np.asarray(load_tokenizer(data_dir).token_bytes() + [0], dtype=np.float64)
    nats = count = nbytes = 0.0
    for r in range(n_rep):
        t_all, u_all = diffusion_noise(np.random.default_rng([seed, r]), len(starts), T, 0, 1)
        for b0 in range(0, len(starts), batch_size):
            chunk = np.stack([np.asarray(data[s:s + T], dtype=np.int64) for s in starts[b0:b0 + batch_size]])
            x0 = torch.from_numpy(chunk).to(device)
            nats += mdlm_per_sequence_nelbo(model, x0, t_all[b0:b0 + len(chunk)], u_all[b0:b0 + len(chunk)]).sum().item()
            count += chunk.size
            nbytes += tbytes[np.minimum(chunk, len(tbytes) - 1)].sum()
    nelbo = nats / count
    return {f'{split_name}_nelbo': nelbo, f'{split_name}_ppl_bound': math.exp(min(nelbo, 700)),
            f'{split_name}_bpb': nats / math.log(2) / max(nbytes, 1), f'{split_name}_tokens': int(count / n_rep)}


@torch.no_grad()
def generative_ppl(model, gpt_path, data_dir, n_samples=8, steps=128, seed=42, device='cpu', batch_size=8):
    """Generative perplexity of unconditional MDLM samples (ddpm_cache, float64) under a causal gpt trained
    on the same data (MDLM diffusion.py L514-573, with this data's tokenizer instead of gpt2-large): each
    sample is scored after the document separator, exp(mean -log p). Always with the samples' unigram
    entropy (mean over samples of the entropy of their token frequencies, nats): low-temperature,
    repetitive samples get a low gen ppl and a low entropy (Zheng et al. 2024)."""
    from model import mdlm_sample
    if not os.path.exists(gpt_path):
        die(f"{gpt_path} not found: train the causal baseline first (python train.py config/gpt_wikitext_cpu.py)")
    gpt, gck = load_checkpoint(gpt_path, device)
    if gck['model_args']['arch'] != 'gpt':
        die(f"{gpt_path} is a {gck['model_args']['arch']} checkpoint; --gen_ppl_ckpt needs a gpt one")
    if load_meta(data_dir).get('vocab_size') != gck['model_args']['vocab_size']:
        die(f"{gpt_path} was trained with another vocabulary; train it on {data_dir}")
    sep, T, Tg = load_meta(data_dir)['sep_id'], model.cfg.block_size, gck['model_args']['block_size']
    g = torch.Generator().manual_seed(seed)
    nll = count = 0.0
    ents, saved, calls = [], 0, 0
    for b0 in range(0, n_samples, batch_size):
        nb = min(batch_size, n_samples - b0)
        z = torch.full((nb, T), model.mask_id, dtype=torch.long, device=device)
        x, st = mdlm_sample(model, z, steps, True, g)
        saved, calls = saved + st['calls_saved'], calls + st['network_calls']
        seq = torch.cat([torch.full((nb, 1), sep, dtype=torch.long, device=device), x], dim=1)
        for c in range(0, T, Tg):  # windows of the gpt's context, each with the tokens before it as targets
            inp, tgt = seq[:, c:c + Tg], seq[:, c + 1:c + Tg + 1]
            logits, _ = gpt(inp[:, :tgt.shape[1]], all_logits=True)
            lp = torch.log_softmax(logits.double(), -1).gather(-1, tgt[..., None])[..., 0]
            nll, count = nll - lp.sum().item(), count + tgt.numel()
        for row in x.tolist():
            _, cnt = np.unique(row, return_counts=True)
            p = cnt / cnt.sum()
            ents.append(float(-(p * np.log(p)).sum()))
    ref = []  # the same entropy on windows of real text (the val split, or train), for scale
    split = 'val' if os.path.exists(os.path.join(data_dir, 'val.bin')) else 'train'
    real = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16)
    for s0 in range(0, len(real) - T + 1, T):
        _, cnt = np.unique(real[s0:s0 + T], return_counts=True)
        ref.append(float(-(cnt / cnt.sum() * np.log(cnt / cnt.sum())).sum()))
    return {'gen_ppl': math.exp(nll / count), 'gen_unigram_entropy': float(np.mean(ents)),
            'data_window_unigram_entropy': float(np.mean(ref)), 'gen_samples': n_samples,
            'gen_steps': steps, 'gen_calls_saved': saved}


# ----------------------------------------------------------------------------- EN-FR metrics (issue 5: backpack vs gpt)
# For data whose meta.json says dataset 'europarl' (prepare/europarl.py) and a causal checkpoint:
# - perplexity / bits per byte per language: a token's language is that of the last <en>/<fr> tag before it
#   in its document; the tags and separators themselves are not counted ({split}_en_ppl, {split}_fr_bpb, ...);
# - translation of the held-out pairs (test.pairs.jsonl, never in training) by prompting `<en> EN <fr>`,
#   greedy and beam search, stopping at a newline / tag / separator: BLEU and chrF (sacrebleu), exact match,
#   word and character accuracy = max(0, 1 - Levenshtein distance / reference length) over words / characters;
# - word similarity (SimLex-999, WordSim-353, Multi-SimLex EN/FR when prepared): Spearman of the model's
#   similarity with the human scores. A word is tokenised with a leading space (as Hewitt et al.); a word of
#   several pieces is the mean of its pieces. Methods: `emb` cosine of input embeddings (gpt and backpack);
#   backpack only: `min` the minimum over senses of the per-sense cosine (Sim_min), `flat` cosine of all
#   senses flattened, `best` the best single sense (chosen on the same data: optimistic). Coverage: a BPE
#   has no OOV words; `single` pairs are those whose two words are each one vocabulary piece; Spearman is
#   reported on all pairs and on the single-piece ones; words containing [UNK] are counted as oov and skipped;
# - cross-lingual: mean similarity of English words and their French translations (bilingual_en_fr.tsv)
#   against the same English words paired with shuffled French words;
# - backpack sense analysis: for chosen words, each sense's top / bottom predicted words (E^T C(x)_l),
#   the entropy of softmax(E^T C(x)_l) and the mean cosine between the word's senses (senses.txt).


def _lang_of_tokens(ids, tags, sep):
    """Per position: 0 en, 1 fr, -1 tag / separator / before any tag."""
    lang = np.full(len(ids), -1, dtype=np.int8)
    cur = -1
    en, fr = tags['<en>'], tags['<fr>']
    marks = np.flatnonzero((ids == en) | (ids == fr) | (ids == sep))
    bounds = list(marks) + [len(ids)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        cur = 0 if ids[a] == en else (1 if ids[a] == fr else -1)
        lang[a + 1:b] = cur
    if marks.size:
        lang[:marks[0]] = -1
    return lang


@torch.no_grad()
def europarl_lang_metrics(model, data_dir, split_name, T, device, max_tokens=0, batch_size=32):
    meta = load_meta(data_dir)
    data = np.fromfile(os.path.join(data_dir, f'{split_name}.bin'), dtype=np.uint16).astype(np.int64)
    if max_tokens:
        data = data[:max_tokens + 1]
    lang = _lang_of_tokens(data, meta['lang_tags'], meta['sep_id'])
    tbytes = np.asarray(load_tokenizer(data_dir).token_bytes(), dtype=np.float64)
    starts = np.arange(0, max(len(data) - T - 1, 0) + 1, T)
    nll, cnt, nb = np.zeros(2), np.zeros(2), np.zeros(2)
    for b0 in range(0, len(starts), batch_size):
        chunk = np.stack([data[s:s + T + 1] for s in starts[b0:b0 + batch_size]])
        lg = np.stack([lang[s + 1:s + T + 1] for s in starts[b0:b0 + batch_size]])
        x, y = torch.from_numpy(chunk[:, :-1]).to(device), torch.from_numpy(chunk[:, 1:]).to(device)
        logits, _ = model(x, y)
        tok_nll = -torch.log_softmax(logits.double(), -1).gather(-1, y[..., None])[..., 0].cpu().numpy()
        for l in (0, 1):
            m = lg == l
            nll[l] += tok_nll[m].sum()
            cnt[l] += m.sum()
            nb[l] += tbytes[chunk[:, 1:][m]].sum()
    out = {}
    for l, name in ((0, 'en'), (1, 'fr')):
        if cnt[l]:
            out[f'{split_name}_{name}_ppl'] = math.exp(min(nll[l] / cnt[l], 700))
            out[f'{split_name}_{name}_bpb'] = nll[l] / math.log(2) / max(nb[l], 1)
            out[f'{split_name}_{name}_tokens'] = int(cnt[l])
    return out


def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _stop_ids(tok, meta):
    """Generation ends at a token that holds a newline, a language tag or a special."""
    stop = set(meta['lang_tags'].values()) | set((meta.get('special_ids') or {}).values()) | {meta['sep_id']}
    for i in range(tok.vocab_size):
        if '\n' in tok.tok.id_to_token(i).replace('Ċ', '\n'):
            stop.add(i)
    return stop


@torch.no_grad()
def _greedy(model, prompt, stop, max_new, T, device):
    ids = list(prompt)
    for _ in range(max_new):
        logits, _ = model(torch.tensor([ids[-T:]], device=device))
        nxt = int(logits[0, -1].argmax())
        if nxt in stop:
            break
        ids.append(nxt)
    return ids[len(prompt):]


@torch.no_grad()
def _beam(model, prompt, stop, max_new, T, device, beam):
    """Beam search over continuations; a hypothesis ends at a stop token; ranked by mean log-prob per token."""
    live, done = [(list(prompt), 0.0)], []
    for _ in range(max_new):
        x = torch.tensor([s[-T:] for s, _ in live], device=device)
        logp = torch.log_softmax(model(x)[0][:, -1].double(), -1)
        cand = []
        for (s, sc), lp in zip(live, logp):
            v, i = lp.topk(beam)
            cand += [(s, sc + a, int(b)) for a, b in zip(v.tolist(), i.tolist())]
        cand.sort(key=lambda c: -c[1])
        live = []
        for s, sc, t in cand:
            n = len(s) - len(prompt) + 1
            if t in stop:
                done.append((s[len(prompt):], sc / n))
            elif len(live) < beam:
                live.append((s + [t], sc))
            if len(live) >= beam and len(done) >= beam:
                break
        if len(done) >= beam or not live:
            break
    done += [(s[len(prompt):], sc / max(1, len(s) - len(prompt))) for s, sc in live]
    return max(done, key=lambda d: d[1])[0]


def translation_metrics(model, data_dir, device, n=200, beam=4, max_new=64):
    import sacrebleu
    meta = load_meta(data_dir)
    path = os.path.join(data_dir, meta.get('test_pairs_file', 'test.pairs.jsonl'))
    if not os.path.exists(path):
        die(f"{path} not found: re-run python prepare/europarl.py")
    tok = load_tokenizer(data_dir)
    T = model.cfg.block_size
    stop = _stop_ids(tok, meta)
    pairs, prompts = [], []
    with open(path, encoding='utf-8') as f:
        for line in f:
            p = json.loads(line)
            ids = tok.encode(f"<en> {p['en']} <fr>")
            if len(ids) + max_new <= T:
                pairs.append(p)
                prompts.append(ids)
            if len(pairs) >= n:
                break
    res = {'translate_pairs': len(pairs)}
    from tqdm import tqdm
    for mode in (['greedy'] + (['beam'] if beam > 1 else [])):
        hyps = []
        for ids in tqdm(prompts, desc=f'translate {mode}', leave=False):
            out = _greedy(model, ids, stop, max_new, T, device) if mode == 'greedy' else \
                _beam(model, ids, stop, max_new, T, device, beam)
            hyps.append(tok.decode(out).strip())
        refs = [p['fr'] for p in pairs]
        res[f'translate_{mode}_bleu'] = sacrebleu.corpus_bleu(hyps, [refs]).score
        res[f'translate_{mode}_chrf'] = sacrebleu.corpus_chrf(hyps, [refs]).score
        res[f'translate_{mode}_exact'] = float(np.mean([h == r for h, r in zip(hyps, refs)]))
        res[f'translate_{mode}_word_acc'] = float(np.mean([max(0.0, 1 - _levenshtein(h.split(), r.split()) / max(1, len(r.split())))
                                                          for h, r in zip(hyps, refs)]))
        res[f'translate_{mode}_char_acc'] = float(np.mean([max(0.0, 1 - _levenshtein(h, r) / max(1, len(r)))
                                                          for h, r in zip(hyps, refs)]))
        res[f'_examples_{mode}'] = [(p['en'], r, h) for p, r, h in list(zip(pairs, refs, hyps))[:3]]
    return res


def _rank(a):
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind='mergesort')
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return sums[inv] / counts[inv]   # average rank of ties


def spearman(a, b):
    if len(a) < 3:
        return float('nan')
    ra, rb = _rank(a), _rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den else float('nan')


class WordVectors:
    """Input embeddings and (backpack) senses of words tokenised with a leading space; pieces averaged."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.E = model.trunk.wte.weight.detach().double()
        self.backpack = hasattr(model, 'sense_table')
        self.unk = tok.special_ids().get('[UNK]')

    def pieces(self, w):
        return self.tok.encode(' ' + w)

    @torch.no_grad()
    def get(self, w):
        ids = self.pieces(w)
        emb = self.E[ids].mean(0)
        senses = self.model.sense_table(ids).double().mean(0) if self.backpack else None  # (k, d)
        return ids, emb, senses


def F_cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def word_similarity_metrics(model, data_dir):
    tok = load_tokenizer(data_dir)
    wv = WordVectors(model, tok)
    wdir = os.path.join(data_dir, 'wordsim')
    res, cache = {}, {}
    get = lambda w: cache.setdefault(w, wv.get(w))
    names = [n for n in ('simlex999', 'wordsim353', 'multisimlex_en', 'multisimlex_fr')
             if os.path.exists(os.path.join(wdir, f'{n}.tsv'))]
    if not names:
        print(f"word similarity: no data in {wdir} (re-run python prepare/europarl.py)")
    for name in names:
        rows = [l.split('\t') for l in open(os.path.join(wdir, f'{name}.tsv'), encoding='utf-8').read().splitlines() if l]
        gold, single, sims, oov = [], [], {}, 0
        for w1, w2, s in rows:
            (i1, e1, c1), (i2, e2, c2) = get(w1), get(w2)
            if wv.unk is not None and (wv.unk in i1 or wv.unk in i2):
                oov += 1
                continue
            gold.append(float(s))
            single.append(len(i1) == 1 and len(i2) == 1)
            sims.setdefault('emb', []).append(F_cos(e1, e2).item())
            if c1 is not None:
                per = F_cos(c1, c2)                         # (k,) cosine of sense l with sense l
                sims.setdefault('min', []).append(per.min().item())
                sims.setdefault('flat', []).append(F_cos(c1.flatten(), c2.flatten()).item())
                sims.setdefault('per', []).append(per.numpy())
        gold, single = np.array(gold), np.array(single, dtype=bool)
        res[f'ws_{name}_pairs'] = len(rows)
        res[f'ws_{name}_single_pairs'] = int(single.sum())
        res[f'ws_{name}_oov_pairs'] = oov
        for m, v in sims.items():
            if m == 'per':
                per = np.stack(v)
                rhos = [spearman(per[:, l], gold) for l in range(per.shape[1])]
                best = int(np.nanargmax(rhos))
                res[f'ws_{name}_best_spearman'] = rhos[best]
                res[f'ws_{name}_best_sense'] = best
                continue
            v = np.array(v)
            res[f'ws_{name}_{m}_spearman'] = spearman(v, gold)
            res[f'ws_{name}_{m}_spearman_single'] = spearman(v[single], gold[single])
    # cross-lingual: translations vs shuffled pairs
    path = os.path.join(wdir, 'bilingual_en_fr.tsv')
    if os.path.exists(path):
        pairs = [l.split('\t') for l in open(path, encoding='utf-8').read().splitlines() if l]
        rng = np.random.default_rng(0)
        perm = np.arange(len(pairs))
        while len(pairs) > 1 and (perm == np.arange(len(pairs))).any():
            perm = rng.permutation(len(pairs))

        def sim(a, b):
            (_, ea, ca), (_, eb, cb) = get(a), get(b)
            return (F_cos(ca, cb).mean() if ca is not None else F_cos(ea, eb)).item()
        tr = np.array([sim(e, f) for e, f in pairs])
        rnd = np.array([sim(e, pairs[j][1]) for (e, _), j in zip(pairs, perm)])
        res.update({'xling_pairs': len(pairs), 'xling_translation_sim': float(tr.mean()), 'xling_random_sim': float(rnd.mean()),
                    'xling_gap': float(tr.mean() - rnd.mean()), 'xling_win_rate': float((tr > rnd).mean())})
    return res


@torch.no_grad()
def sense_tables(model, data_dir, words, top=5):
    """Per chosen word (its first piece when it has several): for each sense l, the top / bottom words of
    E^T C(x)_l, the entropy of softmax(E^T C(x)_l), and the mean cosine between the word's senses."""
    tok = load_tokenizer(data_dir)
    E = model.trunk.wte.weight.detach().float()
    lines, ents, sims = [], [], []
    show = lambda i: tok.decode([i]).strip() or repr(tok.tok.id_to_token(i))
    for w in words:
        ids = tok.encode(' ' + w)
        C = model.sense_table(ids[:1]).float()[0]                   # (k, d)
        logits = C @ E.T                                            # (k, V): what each sense adds to every logit
        p = torch.softmax(logits, -1)
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)         # nats, per sense
        Cn = torch.nn.functional.normalize(C, dim=-1)
        k = C.shape[0]
        inter = ((Cn @ Cn.T).sum() - k) / (k * (k - 1))
        ents.append(ent.mean().item())
        sims.append(inter.item())
        note = '' if len(ids) == 1 else f' (first of {len(ids)} pieces: {[tok.decode([i]) for i in ids]})'
        lines.append(f"\n### {w}{note}: mean sense entropy {ent.mean():.3f} nats, mean inter-sense cosine {inter:.3f}")
        lines.append('| sense | entropy | top | bottom |')
        lines.append('|---|---:|---|---|')
        for l in range(k):
            hi = logits[l].topk(top).indices.tolist()
            lo = (-logits[l]).topk(top).indices.tolist()
            lines.append(f"| {l} | {ent[l]:.2f} | {', '.join(show(i) for i in hi)} | {', '.join(show(i) for i in lo)} |")
    return {'sense_entropy_mean': float(np.mean(ents)), 'sense_intersim_mean': float(np.mean(sims))}, '\n'.join(lines)


def europarl_metrics(model, ckpt, data_dir, names, device, out_dir, max_tokens=0, batch_size=32):
    """Every EN-FR metric of a causal checkpoint (gpt or backpack); the sense tables go to out_dir/senses.txt."""
    res = {}
    T = ckpt['model_args']['block_size']
    for s in names:
        res.update(europarl_lang_metrics(model, data_dir, s, T, device, max_tokens, batch_size))
    tr = translation_metrics(model, data_dir, device, translate_n, translate_beam, translate_max_new)
    for mode in ('greedy', 'beam'):
        for en, ref, hyp in tr.pop(f'_examples_{mode}', []):
            print(f"[{mode}] EN: {en}\n        REF: {ref}\n        HYP: {hyp}")
    res.update(tr)
    res.update(word_similarity_metrics(model, data_dir))
    print("word similarity: Spearman on all pairs (words of several BPE pieces averaged) and on 'single' pairs "
          "(both words one vocabulary piece); pairs/single_pairs/oov_pairs give the coverage")
    if hasattr(model, 'sense_table'):
        stats, table = sense_tables(model, data_dir, [w for w in sense_words.split(',') if w])
        res.update(stats)
        print(table)
        tmp = os.path.join(out_dir, '.senses.txt.tmp')
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(table + '\n')
        os.replace(tmp, os.path.join(out_dir, 'senses.txt'))
        print(f"wrote {os.path.join(out_dir, 'senses.txt')}")
    return res


# ----------------------------------------------------------------------------- TurkMorfBench (Turkish causal checkpoints)
# The 1,836-item core set of TurkMorfBench 3.8.0 (code Apache-2.0, data CC BY 4.0), read from the PyPI wheel
# (turkmorfbench/veri/cekirdek.json; the package is never installed or imported). Each item: a stem ('govde'),
# the gold inflected form ('altin') and 1-4 rule-breaking distractors, all in 'secenek'. Forced choice: each
# candidate c scores sum log p(tokens of c | [SEP] + tokens of PROMPT) / len(c) in characters; the item is
# correct only when the gold form scores strictly highest (ties count as wrong). Tokenization: prompt and
# prompt+c are encoded separately; when the ids of prompt+c do not start with all the prompt's ids (e.g. a
# unigram/Metaspace tokenizer merges the prompt's trailing space into c's first piece), the tokens after the
# longest common prefix are scored (so those may include a boundary piece such as '▁'; the same for every
# candidate of an item). The separator id that opens every training document is prepended when the data has one.
TMB_SPEC = 'turkmorfbench==3.8.0'
TMB_MEMBER = 'turkmorfbench/veri/cekirdek.json'  # the notes say veri/cekirdek.json; in the wheel it is under the package
TMB_PROMPT = "Kelime: {stem}\nÇekimli biçim: "


def load_turkmorfbench(raw_dir=os.path.join('data', 'turkish_raw')):
    """The core items as dicts (stem, gold, options, bucket, real), or None (one line printed) when the wheel
    cannot be had."""
    import zipfile
    from pathlib import Path
    from prepare.common import pip_download
    try:
        whl = pip_download(TMB_SPEC, Path(raw_dir))
        with zipfile.ZipFile(whl) as z:
            d = json.loads(z.read(TMB_MEMBER).decode('utf-8'))
    except (SystemExit, Exception) as e:
        print(f"turkmorfbench: skipped, could not get {TMB_MEMBER} from {TMB_SPEC} ({type(e).__name__}: {e})")
        return None
    items = []
    for m in d['maddeler']:
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


def run_eval(out_dir, ckpt_name='ckpt.pt', data_dir='', split='all', max_tokens=0, batch_size=32, seed=42, device='cpu',
             n_spans=100, beam=20, max_gap_len=10, subset_size=500):
    model, ckpt, data_dir = load_run(out_dir, ckpt_name, device, data_dir)
    names = [s for s in ('val', 'test') if os.path.exists(os.path.join(data_dir, f'{s}.bin'))] if split == 'all' else [split]
    res = {'iter': ckpt['iter_num'], 'params': model.num_params(), 'params_non_embedding': model.num_params(True),
           'best_val_loss': ckpt['best_val_loss']}
    for s in names:
        if ckpt['model_args']['arch'] == 'mdlm':  # the plain NELBO, whatever the training options
            res.update(evaluate_mdlm_split(model, ckpt, data_dir, s, device, max_tokens, batch_size, seed, nelbo_samples))
        else:
            res.update(evaluate_split(model, ckpt, data_dir, s, device, max_tokens, batch_size, seed))
    if ckpt['model_args']['arch'] == 'mdlm':
        res.update(unigram_stats(data_dir, names))
        if gen_ppl_ckpt:
            res.update(generative_ppl(model, gen_ppl_ckpt, data_dir, gen_samples, gen_steps, seed, device))
    for k, v in res.items():
        print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
    if ckpt['model_args'].get('attention', 'standard') == 'agglutinative':  # issue 7: learned biases per head
        from model import agglutinative_biases, format_agglutinative_biases
        print(format_agglutinative_biases(model))
        res['agglutinative_biases'] = agglutinative_biases(model)
    if load_meta(data_dir).get('dataset') == 'akkadian' and ckpt['model_args']['arch'] == 'encoder':
        akk, table = akkadian_metrics(model, ckpt, data_dir, device, n_spans, beam, max_gap_len, seed, subset_size,
                                      batch_size)
        res.update(akk)
        print(table)
    if load_meta(data_dir).get('dataset') == 'europarl' and objective(ckpt['model_args']['arch']) == 'causal':
        res.update(europarl_metrics(model, ckpt, data_dir, names, device, out_dir, max_tokens, batch_size))
    if (turkmorfbench_on and load_meta(data_dir).get('dataset') == 'turkish'
            and objective(ckpt['model_args']['arch']) == 'causal'):
        tmb_items = load_turkmorfbench()
        if tmb_items:
            tmb = turkmorfbench(model, load_tokenizer(data_dir), tmb_items, device, ckpt['model_args']['block_size'],
                                load_meta(data_dir).get('sep_id'), batch_size)
            for k, v in tmb.items():
                print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
            res.update(tmb)
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
    for d in dirs:  # backpack sense tables (evaluate.py writes them beside eval.json)
        sp = os.path.join(d, 'senses.txt')
        if os.path.exists(sp):
            print(f"\nsense tables of {d} (E^T C(x)_l: each sense's top / bottom words):")
            with open(sp, encoding='utf-8') as f:
                print(f.read().rstrip())
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
