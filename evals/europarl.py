"""
EN-FR metrics of a causal checkpoint, gpt or backpack (backpack vs gpt).

For data whose meta.json says dataset 'europarl' (prepare/europarl.py) and a causal checkpoint:
- perplexity / bits per byte per language: a token's language is that of the last <en>/<fr> tag before it
  in its document; the tags and separators themselves are not counted ({split}_en_ppl, {split}_fr_bpb, ...);
- translation of the held-out pairs (test.pairs.jsonl, never in training) by prompting `<en> EN <fr>`,
  greedy and beam search, stopping at a newline / tag / separator: BLEU and chrF (sacrebleu), exact match,
  word and character accuracy = max(0, 1 - Levenshtein distance / reference length) over words / characters;
- word similarity (SimLex-999, WordSim-353, Multi-SimLex EN/FR when prepared): Spearman of the model's
  similarity with the human scores. A word is tokenised with a leading space (as Hewitt et al.); a word of
  several pieces is the mean of its pieces. Methods: `emb` cosine of input embeddings (gpt and backpack);
  backpack only: `min` the minimum over senses of the per-sense cosine (Sim_min), `flat` cosine of all
  senses flattened, `best` the best single sense (chosen on the same data: optimistic). Coverage: a BPE
  has no OOV words; `single` pairs are those whose two words are each one vocabulary piece; Spearman is
  reported on all pairs and on the single-piece ones; words containing [UNK] are counted as oov and skipped;
- cross-lingual: mean similarity of English words and their French translations (bilingual_en_fr.tsv)
  against the same English words paired with shuffled French words;
- backpack sense analysis: for chosen words, each sense's top / bottom predicted words (E^T C(x)_l),
  the entropy of softmax(E^T C(x)_l) and the mean cosine between the word's senses (senses.txt).
"""
import json
import math
import os
import sys

import numpy as np
import torch

from corpus import die, load_meta, load_tokenizer
from objectives import objective

SENSE_WORDS = 'file,window,table,key,open,print,right,cell,fichier,fenêtre,touche,ouvrir'  # backpack sense tables


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
        for ids in tqdm(prompts, desc=f'translate {mode}', leave=False, disable=not sys.stderr.isatty()):
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


def europarl_metrics(model, ckpt, data_dir, names, device, out_dir, max_tokens=0, batch_size=32, translate_n=200,
                     translate_beam=4, translate_max_new=64, sense_words=SENSE_WORDS):
    """Every EN-FR metric of a causal checkpoint (gpt or backpack); the sense tables go to out_dir/senses.txt.
    translate_*: held-out pairs translated, beam width (0 = greedy only), most new tokens; sense_words: the
    comma-separated words of the backpack sense tables (evaluate.py's options of the same names)."""
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


def applies(ckpt, meta, opts):
    return meta.get('dataset') == 'europarl' and objective(ckpt['model_args']['arch']) == 'causal'


def evaluate(model, ckpt, data_dir, splits, opts):
    return europarl_metrics(model, ckpt, data_dir, splits, opts['device'], opts['out_dir'], opts['max_tokens'],
                            opts['batch_size'], opts['translate_n'], opts['translate_beam'], opts['translate_max_new'],
                            opts['sense_words'])
