"""
Akkadian restoration metrics of an encoder checkpoint (data whose meta.json says dataset 'akkadian').

Eval sets: 'subset' = subset_size val fragments chosen with seed 42 (all when fewer exist), 'test' =
the whole test split. A fragment is the run of tokens between two separators; one longer than
block_size is cut into block_size pieces, and every piece is scored alone (attention stays inside it).
Scorers: the model, and two baselines fit on the TRAIN split only (unigram, bidirectional n-gram),
all behind the score_fn interface of restoration.beam_fill, so every number has its baseline beside it.
"""
import os
import sys

import numpy as np
import torch

from atf import FLAG_RESTORED, FLAG_SIGN, is_target
from corpus import die, documents, fixed_subset, load_meta
from restoration import beam_fill, cut_pieces, read_fragments, restoration_scorers, RESTORE_EXPERTS, restore_gaps


MASKED_SIGN_RATE = 0.15
UNK_SPAN_DIVISOR = 6      # the length-hidden evaluation restores n_spans // 6 of each length's spans (10 lengths each)
UNK_SCORERS = ('restore', 'ngram', 'infinigram', 'unigram')  # with the length hidden (the encoder alone: docs/akkadian.md)
SUBSET_SEED = 42


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
    out['nll'] = float(-t.sum())  # cross-entropy of the true sign, nats (the rows are log-probs over the signs)
    out['n'] = len(g)
    return out


def masked_sign_metrics(scorers, pieces, mask_id, n_lead, seed, rate=MASKED_SIGN_RATE, batch_size=32):
    """Mask `rate` of the target signs (atf.is_target, and a known sign: not [UNK]) of
    every piece with a fixed seed, every chosen sign replaced by [MASK]; rank the true sign among the
    real signs under each scorer. Returns {scorer: {top1, top5, top10, mrr, n}} (means)."""
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


def restore_unknown_length(scorers, spans, mask_id, gapn_id, banned, beam, max_gap_len, length_logprior, desc=''):
    """The spans of restore_spans with the length hidden: the span becomes one [GAPN] (as `...` in the data)
    and restoration.restore_gaps tries every length 1..max_gap_len, ranking by log P(k) + log p(signs | k)
    with the train split's gap-length distribution. Returns {scorer: {exact, exact5, len_acc}}: the top
    restoration is the true span (length included), the true span is in the top 5, the top length is right."""
    from tqdm import tqdm
    res = {name: {'exact': 0, 'exact5': 0, 'len_acc': 0} for name in scorers}
    for ids, start, L in tqdm(spans, desc=desc, leave=False, disable=not spans or not sys.stderr.isatty()):
        truth = ids[start:start + L].tolist()
        x = np.concatenate([ids[:start], [gapn_id], ids[start + L:]])
        for name, sf in scorers.items():
            top = restore_gaps(sf, x, [(start, None)], mask_id=mask_id, max_gap_len=max_gap_len, beam=beam, topk=5,
                               banned_ids=banned, length_logprior=length_logprior)[0]
            r = res[name]
            r['exact'] += top[0][0] == truth
            r['exact5'] += any(c[0] == truth for c in top)
            r['len_acc'] += top[0][3] == L
    return {name: {k: v / len(spans) for k, v in r.items()} for name, r in res.items()}


def _runs(mask):
    """(start, length) of the maximal runs of True in a bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - np.flatnonzero(d == 1)))


def akkadian_metrics(model, ckpt, data_dir, device='cpu', n_spans=100, beam=20, max_gap_len=10, seed=42,
                     subset_size=500, batch_size=32, split='all'):
    """Restoration metrics of an Akkadian encoder checkpoint: masked-sign top-1/5/10 and MRR, span
    restoration by length (beam search), the silver set of editor-restored signs; each for the model,
    the unigram and the n-gram baselines. Returns (flat dict of numbers, markdown table)."""
    meta = load_meta(data_dir)
    sp = meta['special_ids']
    n_lead, mask_id = len(sp), sp['[MASK]']
    banned = list(range(n_lead))
    T = ckpt['model_args']['block_size']
    scorers, info = restoration_scorers(model, data_dir, max_gap_len)
    gapn = sp['[GAPN]']
    sets = {}
    if split in ('all', 'val') and os.path.exists(os.path.join(data_dir, 'val.bin')):
        n_val = len(documents(data_dir, 'val'))
        sub = fixed_subset(data_dir, 'val', subset_size, seed=SUBSET_SEED)  # the same subset as train.py's artifacts
        print(f"eval subset: {len(sub)} of {n_val} val fragments (seed {SUBSET_SEED})"
              + (" = all of them" if len(sub) == n_val else ""))
        sets['subset'] = read_fragments(data_dir, 'val', sub)
    if split in ('all', 'test') and os.path.exists(os.path.join(data_dir, 'test.bin')):
        sets['test'] = read_fragments(data_dir, 'test')
    res = {f'restore_weight_{n}': w for n, w in info['weights'].items()}
    res['restore_fit_rows'] = info.get('restore_fit_rows', 0)

    def put(prefix, name, key, value):
        res[f"{prefix}_{'' if name == 'model' else name + '_'}{key}"] = value

    for set_name, frags in sets.items():
        pieces = cut_pieces(frags, T)
        ms = masked_sign_metrics(scorers, pieces, mask_id, n_lead, seed, batch_size=batch_size)
        res[f'{set_name}_fragments'] = len(frags)
        res[f'{set_name}_masked_signs'] = ms['model']['n']
        for name, m in ms.items():
            for k in ('top1', 'top5', 'top10', 'mrr', 'nll'):
                if k in m:
                    put(set_name, name, k, m[k])
        # spans of L consecutive target signs inside one piece
        tgt = [is_target(f) & (i >= n_lead) for i, f in pieces]
        agg = {name: {'exact': 0.0, 'exact5': 0.0, 'wrong': 0.0, 'n': 0, 'signs': 0} for name in scorers}
        unknown = []  # a third of each length's spans, restored again with the length hidden
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
            unknown += spans[:max(1, n_spans // UNK_SPAN_DIVISOR)]
        for name, a in agg.items():
            if a['n']:
                put(set_name, name, 'span_exact', a['exact'] / a['n'])
                put(set_name, name, 'span_exact5', a['exact5'] / a['n'])
                put(set_name, name, 'span_ser', a['wrong'] / a['signs'])
        if unknown:
            r = restore_unknown_length({n: scorers[n] for n in UNK_SCORERS}, unknown, mask_id, gapn, banned, beam, max_gap_len,
                                       info['length_logprior'], desc=f'{set_name} unknown length')
            res[f'{set_name}_unk_count'] = len(unknown)
            for name, m in r.items():
                for k, v in m.items():
                    put(set_name, name, f'unk_{k}', v)
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
    return res, akkadian_table(res, list(sets), max_gap_len,
                               'hf model' if ckpt['model_args']['arch'] == 'hf' else 'encoder')


def akkadian_table(res, set_names, max_gap_len=10, model_name='encoder'):
    """Markdown table: one row per metric, model | unigram | n-gram for each eval set."""
    rows = ['top1', 'top5', 'top10', 'mrr', 'nll']
    for L in list(range(1, max_gap_len + 1)) + ['']:
        rows += [f'span{L}_exact', f'span{L}_exact5', f'span{L}_ser']
    rows += ['silver_exact', 'silver_exact5', 'silver_ser', 'unk_exact', 'unk_exact5', 'unk_len_acc']
    names = ('model', 'restore', 'unigram', 'ngram', 'infinigram')
    head = '| metric | ' + ' | '.join(f'{s} {n}' for s in set_names
                                     for n in (model_name, 'restore', 'unigram', 'n-gram', 'infini-gram')) + ' |'
    lines = [head, '|---|' + '---:|' * (len(names) * len(set_names))]
    for r in rows:
        vals = [res.get(f"{s}_{'' if n == 'model' else n + '_'}{r}") for s in set_names for n in names]
        if all(v is None for v in vals):
            continue
        lines.append(f'| {r} | ' + ' | '.join('' if v is None else f'{v:.3f}' for v in vals) + ' |')
    counts = ', '.join(f"{s}: {res.get(f'{s}_fragments', 0)} fragments, {res.get(f'{s}_masked_signs', 0)} masked signs, "
                       f"{res.get(f'{s}_silver_count', 0)} silver spans" for s in set_names)
    w = ' x '.join(f"{n}^{res.get(f'restore_weight_{n}', 0):g}" for n in RESTORE_EXPERTS)
    return '\n'.join(lines) + (f'\n({counts}; span{{L}}: L consecutive signs restored jointly by beam search; unk_: '
                               f'the same spans with the length hidden; restore = {w}, weights chosen on val)')


def applies(ckpt, meta, opts):
    return meta.get('dataset') == 'akkadian' and ckpt['model_args']['arch'] in ('encoder', 'hf')


def evaluate(model, ckpt, data_dir, splits, opts):
    T = ckpt['model_args']['block_size']
    if opts['max_gap_len'] >= T:  # as sample.py: a span that fills the whole context has nothing to be restored from
        die(f"--max_gap_len={opts['max_gap_len']}: a restored span must leave context in the model's {T} signs; "
            f"use --max_gap_len below {T}")
    res, table = akkadian_metrics(model, ckpt, data_dir, opts['device'], opts['n_spans'], opts['beam'],
                                  opts['max_gap_len'], opts['seed'], opts['subset_size'], opts['batch_size'],
                                  opts['split'])
    print(table)
    return res
