"""
Samples from a trained checkpoint.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=2 --max_new_tokens=300
    python sample.py --out_dir=out-encoder --text="To be, or not to [MASK][MASK], that is the question"

    python sample.py --out_dir=out-akkadian --text="a-na [x x] be-lí-ia qí-bí-ma" [--json]
    python sample.py --out_dir=out-wiki-mdlm-cpu [--sampler=ddpm_cache|ddpm] [--steps=128] [--length=300]
    python sample.py --out_dir=out-wiki-mdlm-cpu --text="The river [MASK*12] in northern France."

An mdlm checkpoint (masked diffusion) samples with sampling.mdlm_sample: `ddpm` (ancestral) or `ddpm_cache`
(per sequence: the network runs only on the rows whose tokens changed), --steps steps, float64 Gumbel sampling;
--length beyond the context is generated semi-autoregressively (--stride new tokens per block); --text
with [MASK] (or [MASK*n] for n of them) is infilled: its known tokens stay fixed.

A causal checkpoint (gpt, backpack, atlas) generates text after --start (a string, or FILE:path). An encoder
checkpoint fills the [MASK] positions of --text and prints, for each, the top candidates with
their probabilities. --seed makes every run repeatable; --json (= --json_output=True) prints
machine-readable output.

Backpack sense control: --sense_edit='file:3=0,5=2;table:*=0' multiplies sense 3 of every occurrence of
'file' in --start by 0 and sense 5 by 2, and every sense of 'table' by 0 (Hewitt et al. 2023, eq. 15), then
prints the next-token distribution before and after, the most raised / lowered tokens and the KL.

Akkadian restoration (an encoder trained on data whose meta.json says dataset 'akkadian'): --text is
an ATF-like line read by atf.parse_restoration_input, the normalization of the data
(`x` one lost sign, `...` / `[...]` a gap of unknown length; signs outside the vocabulary become
[UNK], with a warning). Adjacent x's form one gap whose signs are decoded jointly by beam search
(restoration.beam_fill, re-running the scorer as signs are filled). The default scorer (--scorer=restore)
is the product of the encoder, the bidirectional n-gram and the infini-gram of the train split, with weights
chosen on the val split (restoration.restoration_scorers; cached in out_dir/restore.json); --scorer=model
is the encoder alone. An unknown-length gap tries every length 1..max_gap_len and ranks all candidates by
log P(length) + log p(signs | length), P the train split's distribution of gap lengths
(--length_model=aeneas: Aeneas's logp / (1 + k)^length_alpha instead). For each gap the top `candidates`
restorations are printed with their joint probabilities, then the line with the best restoration of every
gap. --answer='e-li-tum' (one per gap, '|' between) prints where the true filling ranks. --parallels=5 adds
the 5 train passages most similar to the line (cosine of mean-pooled encoder states, Aeneas's parallels) with
their document ids, and for each gap the exact matches of its context in the train split, whose fillings are
offered as candidates beside the scorer's.
"""
import json as _json
import math
import os
import sys

import torch

from atf import FLAG_WORD_START, GAP, GAPN, parse_restoration_input
from checkpoint import load_run
from configurator import configure
from corpus import die, load_meta, load_tokenizer
from restoration import restore_gaps

# ----------------------------------------------------------------------------- defaults
out_dir = 'out'
ckpt_name = 'ckpt.pt'
data_dir = ''                 # default: the data directory the checkpoint was trained on
allow_other_data = False      # True: use data_dir although it is not the run's data (same tokenizer only)
use_ema = True                # the checkpoint's EMA weights when it has them (train.py ema_decay > 0); False: the raw weights
start = '\n'                  # causal prompt, or FILE:path
num_samples = 3
max_new_tokens = 500
temperature = 0.8
top_k = 200
text = ''                     # encoder: text with [MASK] positions to fill
candidates = 5                # encoder: candidates printed per position
seed = 1337
device = 'cpu'
json_output = False
json = False                  # the same as json_output (the spelling --json); a bare --json means True
beam = 20                     # Akkadian restoration: beam width of the joint search of a gap
max_gap_len = 10              # ... longest restoration tried for a gap of unknown length
length_alpha = 1.0            # ... length exponent a of the score logp / (1 + length)^a (--length_model=aeneas)
length_model = 'prior'        # ... unknown lengths: prior (log P(k) + log p(signs | k)) | aeneas (logp / (1 + k)^a)
scorer = 'restore'            # ... restore (encoder x n-gram x infini-gram, weights on val) | model | ngram | infinigram | unigram
parallels = 0                 # ... N > 0: the N most similar train passages and exact context matches of each gap
answer = ''                   # ... the true filling of each gap ('|' between gaps): print where it ranks
steps = 128                   # mdlm: denoising steps
sampler = 'ddpm_cache'        # mdlm: ddpm | ddpm_cache
length = 0                    # mdlm: tokens per unconditional sample; 0 = block_size; more = semi-autoregressive
stride = 0                    # mdlm: new tokens per semi-autoregressive block; 0 = block_size // 2
sense_edit = ''                # backpack: 'WORD:L=S,L=S;WORD:*=S' re-weights senses L of WORD in --start (0 removes)
show_top = 10                 # backpack sense_edit: next-token candidates shown before / after
# -----------------------------------------------------------------------------
sys.argv[1:] = ['--json=True' if a == '--json' else a for a in sys.argv[1:]]
configure(globals())
json_output = json_output or json


def check_options():
    """Values the sampler cannot use: one line each, before the checkpoint is loaded."""
    for k in ('num_samples', 'candidates', 'beam', 'max_gap_len', 'steps', 'show_top'):
        if globals()[k] < 1:
            die(f"--{k} must be at least 1, got {globals()[k]}")
    for k in ('max_new_tokens', 'length', 'stride', 'top_k'):
        if globals()[k] < 0:
            die(f"--{k} must not be negative, got {globals()[k]}")
    if temperature <= 0:
        die(f"--temperature must be positive, got {temperature}")
    if start.startswith('FILE:') and not os.path.isfile(start[5:]):
        die(f"--start={start}: file {start[5:]!r} not found")
    if device != 'cpu' and device.startswith('cuda') and not torch.cuda.is_available():
        die(f"device={device} but this PyTorch has no usable CUDA device; use --device=cpu")


check_options()
torch.manual_seed(seed)
model, ckpt, data_dir = load_run(out_dir, ckpt_name, device, data_dir, allow_other_data, use_ema)
tok = load_tokenizer(data_dir)
arch = ckpt['model_args']['arch']


def encode_with_masks(s):
    """Encode text in which the literal [MASK] marks positions to fill."""
    mask_id = tok.special_ids().get('[MASK]')
    if mask_id is None:
        die(f"the tokenizer of {data_dir} has no [MASK] token")
    ids = []
    for k, piece in enumerate(s.split('[MASK]')):
        if k:
            ids.append(mask_id)
        if piece:
            ids.extend(tok.encode(piece))
    return ids, mask_id


def render(signs, flags):
    """Tokens back to an ATF-like line: `-` inside a word, a space before a word start."""
    out = ''
    for s, f in zip(signs, flags):
        out += (' ' if out and f else ('-' if out else '')) + s
    return out


def restore_akkadian():
    from restoration import context_matches, describe_product, restoration_scorers, score_filling, similar_passages
    if not text.strip():
        die('--text must hold an ATF line with gaps, e.g. --text="a-na [x x] be-lí-ia qí-bí-ma"')
    if scorer not in ('restore', 'model', 'ngram', 'infinigram', 'unigram'):
        die(f"--scorer must be restore, model, ngram, infinigram or unigram, got {scorer!r}")
    if length_model not in ('prior', 'aeneas'):
        die(f"--length_model must be prior or aeneas, got {length_model!r}")
    parsed = parse_restoration_input(text)
    specials = tok.special_ids()
    toks = [t for t, _ in parsed]
    words = [bool(f & FLAG_WORD_START) for _, f in parsed]
    ids = [tok.stoi.get(t, specials['[UNK]']) for t in toks]
    unknown = sorted({t for t, i in zip(toks, ids) if i == specials['[UNK]']})
    if unknown:
        print(f"warning: {len(unknown)} sign(s) not in the vocabulary of {data_dir}, read as [UNK]: "
              + ' '.join(unknown), file=sys.stderr)
    gaps, i = [], 0
    while i < len(toks):  # adjacent x's are one gap, decoded jointly; each ... is one unknown-length gap
        if toks[i] == GAP:
            j = i
            while j < len(toks) and toks[j] == GAP:
                j += 1
            gaps.append((i, j - i))
            i = j
        else:
            if toks[i] == GAPN:
                gaps.append((i, None))
            i += 1
    if not gaps:
        die('--text has no gap to restore: write a lost sign as x and a gap of unknown length as ... or [...]')
    T = ckpt['model_args']['block_size']
    longest = max([max_gap_len if n is None else n for _, n in gaps])
    if longest >= T:
        die(f"a restoration of {longest} signs does not fit the model's context of {T} signs with any context "
            f"around it; use --max_gap_len below {T} (and gaps of fewer than {T} x's)")
    answers = [a.strip() for a in answer.split('|')] if answer else []
    if answers and len(answers) != len(gaps):
        die(f"--answer has {len(answers)} part(s) for {len(gaps)} gap(s): give one per gap, separated by |")
    n_lead = len(specials)
    stat = os.stat(os.path.join(out_dir, ckpt_name))  # a run trained again into out_dir has other weights
    cache_key = [ckpt['iter_num'], ckpt.get('data_fingerprint'), stat.st_size, stat.st_mtime_ns]
    scorers, info = restoration_scorers(model, data_dir, max_gap_len, cache_dir=out_dir, cache_key=cache_key,
                                        verbose=False)
    score_fn = scorers[scorer]
    prior = info['length_logprior'] if length_model == 'prior' else None
    results = restore_gaps(score_fn, ids, gaps, mask_id=specials['[MASK]'], max_gap_len=max_gap_len, beam=beam,
                           alpha=length_alpha, topk=candidates, banned_ids=specials.values(), window=T,
                           length_logprior=prior)
    sign = lambda s: tok.itos[s]

    def joint(start, length, fill):
        """log p of a given filling of gap (start, length) under the scorer, ranked like the search's candidates."""
        k = len(fill)
        seq = ids[:start] + [specials['[MASK]']] * k + ids[start + (length or 1):]
        lp = score_filling(score_fn, seq, range(start, start + k), fill)
        return lp, (lp if length else (lp + float(prior[k]) if prior is not None else lp / (1 + k) ** length_alpha))

    out_gaps, best_signs, best_words, prev = [], [], [], 0
    for n, ((start, length), cands) in enumerate(zip(gaps, results)):
        g = {'gap': n + 1, 'start': start, 'length': length,
             'candidates': [{'signs': [sign(s) for s in signs], 'prob': p, 'score': sc, 'length': k, 'source': scorer}
                            for signs, p, sc, k in cands]}
        if parallels:
            lengths = [length] if length else range(1, max_gap_len + 1)
            m = context_matches(data_dir, ids[max(0, start - 3):start], ids[start + (length or 1):][:3], lengths, n_lead)
            g['context_matches'] = None
            if m:
                g['context_matches'] = {'left': [sign(s) for s in m['left']], 'right': [sign(s) for s in m['right']],
                                        'fillings': [{'signs': [sign(s) for s in f], 'count': c} for f, c in m['fillings']],
                                        'examples': [{'doc': d, 'offset': o, 'signs': [sign(s) for s in f]}
                                                     for d, o, f in m['examples']]}
                have = {tuple(c['signs']) for c in g['candidates']}
                for f, c in m['fillings']:  # what the corpus puts in this gap, offered beside the model's candidates
                    if tuple(sign(s) for s in f) in have or (length and len(f) != length):
                        continue
                    lp, sc = joint(start, length, f)
                    g['candidates'].append({'signs': [sign(s) for s in f], 'prob': math.exp(lp), 'score': sc,
                                            'length': len(f), 'source': f'parallel (x{c})'})
                g['candidates'].sort(key=lambda c: -c['score'])
        if answers:
            truth = [t for t in parse_restoration_input(answers[n])]
            fill = [tok.stoi.get(t, specials['[UNK]']) for t, _ in truth]
            lp, sc = joint(start, length, fill)
            rank = 1 + sum(c['score'] > sc for c in g['candidates'])
            g['answer'] = {'signs': [t for t, _ in truth], 'prob': math.exp(lp), 'score': sc, 'rank': rank,
                           'in_candidates': any(c['signs'] == [t for t, _ in truth] for c in g['candidates'])}
        out_gaps.append(g)
        best = g['candidates'][0]['signs']
        ws = words[start:start + length] if length else [words[start]] + [False] * (len(best) - 1)
        best_signs += toks[prev:start] + ['[' + best[0]] + best[1:-1] + ([best[-1] + ']'] if len(best) > 1 else [])
        if len(best) == 1:
            best_signs[-1] += ']'
        best_words += words[prev:start] + list(ws)
        prev = start + (length or 1)
    best_signs += toks[prev:]
    best_words += words[prev:]
    line = render(best_signs, best_words)
    passages = []
    if parallels:
        query = [i for i in ids if i >= n_lead]
        passages = [{'doc': d, 'cosine': c, 'text': render_ids(s, e)} for c, d, s, e in
                    similar_passages(model, data_dir, query, n_lead, parallels,
                                     cache=os.path.join(out_dir, 'parallels.pt'), key=cache_key)]
    w = info['weights']
    desc = {'restore': f"{describe_product(w)} (a product of experts, weights chosen on val)",
            'model': 'the encoder alone', 'ngram': 'the bidirectional n-gram of the train split',
            'infinigram': 'the bidirectional infini-gram of the train split',
            'unigram': 'train-split sign frequencies'}[scorer]
    if json_output:
        print(_json.dumps({'text': text, 'signs': toks, 'unknown_signs': unknown, 'scorer': scorer, 'weights': w,
                           'gaps': out_gaps, 'best': line, 'parallels': passages}, ensure_ascii=False))
        return
    print(render(['x' if t == GAP else ('...' if t == GAPN else t) for t in toks], words))
    print(f"scorer: {scorer} = {desc}; unknown lengths ranked by "
          + ("log P(length) + log p(signs | length), P from the train split's gaps" if prior is not None else
             f"Aeneas's logp / (1 + length)^{length_alpha:g}"))
    for g in out_gaps:
        kind = f"{g['length']} sign{'s' if g['length'] > 1 else ''}" if g['length'] else f"unknown length, tried 1..{max_gap_len}"
        print(f"gap {g['gap']} ({kind}):")
        for r, c in enumerate(g['candidates'], 1):
            extra = f"  length {c['length']}  score {c['score']:.3f}" if g['length'] is None else ''
            src = f"  [{c['source']}]" if c['source'] != scorer else ''
            print(f"  {r}. {'-'.join(c['signs']):<30} p={c['prob']:.4f}{extra}{src}")
        if 'answer' in g:
            a = g['answer']
            where = (f"rank {a['rank']}" if a['in_candidates'] else
                     f"not among the {len(g['candidates'])} candidates above (rank {a['rank']} or worse)")
            print(f"  answer {'-'.join(a['signs'])}: {where}, p={a['prob']:.3g}")
        if g.get('context_matches'):
            m = g['context_matches']
            print(f"  exact context matches in train ({'-'.join(m['left']) or '^'} [...] {'-'.join(m['right']) or '$'}): "
                  + ', '.join(f"{'-'.join(f['signs'])} x{f['count']}" for f in m['fillings']))
            for e in m['examples']:
                print(f"    {e['doc']} @{e['offset']}: {'-'.join(m['left'])} [{'-'.join(e['signs'])}] {'-'.join(m['right'])}")
        elif parallels:
            print("  exact context matches in train: none")
    print(f"best: {line}")
    if passages:
        print(f"parallels (the {len(passages)} train passages closest to this line, cosine of mean-pooled encoder states):")
        for r, p in enumerate(passages, 1):
            print(f"  {r}. {p['doc']}  cos={p['cosine']:.3f}  {p['text']}")


def render_ids(s, e, split='train'):
    """The signs of split[s:e] as an ATF-like line (word starts from the flags)."""
    import numpy as np
    d = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')[s:e]
    f = np.memmap(os.path.join(data_dir, f'{split}.flags.bin'), dtype=np.uint8, mode='r')[s:e]
    return render([tok.itos[int(i)] for i in d], [bool(int(x) & FLAG_WORD_START) for x in f])


def sample_mdlm():
    """Masked diffusion: unconditional samples (semi-autoregressive past the context), or infilling of
    the [MASK] / [MASK*n] positions of --text. Prints tokens/s and the network calls the cache saved."""
    import re
    import time
    from sampling import mdlm_sample, mdlm_semi_ar
    if sampler not in ('ddpm', 'ddpm_cache'):
        die(f"sampler must be ddpm or ddpm_cache, got {sampler!r}")
    cache, T, g = sampler == 'ddpm_cache', model.cfg.block_size, torch.Generator(device=device).manual_seed(seed)
    t0 = time.time()
    if text:
        src = re.sub(r'\[MASK\*(\d+)\]', lambda m: '[MASK]' * int(m.group(1)), text)
        ids = []
        for k, piece in enumerate(src.split('[MASK]')):
            ids += ([model.mask_id] if k else []) + (tok.encode(piece) if piece else [])
        if model.mask_id not in ids:
            die('--text has no [MASK] to fill: write e.g. --text="The river [MASK*12] in northern France."')
        if len(ids) > T:
            die(f"--text is {len(ids)} tokens, longer than the model's context of {T}")
        z = torch.tensor([ids] * num_samples, device=device)
        out, st = mdlm_sample(model, z, steps, cache, g)
        new = int((z == model.mask_id).sum())
    else:
        out, st = mdlm_semi_ar(model, num_samples, length or T, steps, stride, cache, g, device)
        z, new = None, out.numel()
    dt = time.time() - t0
    samples = []
    for r, row in enumerate(out.tolist()):
        if z is None:
            samples.append(tok.decode(row))
            continue
        filled, parts, k = (z[r] == model.mask_id).tolist(), [], 0
        while k < len(row):  # known runs as they were, generated runs in [[ ]]
            j = k
            while j < len(row) and filled[j] == filled[k]:
                j += 1
            piece = tok.decode(row[k:j])
            parts.append(f'[[{piece}]]' if filled[k] else piece)
            k = j
        samples.append(''.join(parts))
    rows = st['row_calls'] + st['rows_saved']
    stats = {'sampler': sampler, 'steps': steps, 'tokens_per_s': new / max(dt, 1e-9), 'seconds': dt,
             'network_calls': st['network_calls'], 'calls_saved': st['calls_saved'], 'row_calls': st['row_calls'],
             'rows_saved': st['rows_saved']}
    if json_output:
        print(_json.dumps({'text': text, 'samples': samples, **stats}, ensure_ascii=False))
        return
    for s in samples:
        print(s)
        print('---------------')
    print(f"{sampler}, {steps} steps: {new} tokens in {dt:.2f}s = {stats['tokens_per_s']:,.1f} tokens/s; "
          f"{st['network_calls']} batched network calls running {st['row_calls']} sequences; the per-sequence cache "
          f"reused {st['rows_saved']} ({100 * st['rows_saved'] / max(rows, 1):.0f}%)")



def parse_sense_edit(spec, k):
    """'file:3=0,5=2;table:*=0' -> [(word, {sense: factor})]; * means every sense."""
    out = []
    for part in [p for p in spec.split(';') if p.strip()]:
        word, _, edits = part.partition(':')
        if not word.strip() or not edits:
            die(f"--sense_edit part {part!r} must look like WORD:L=S,L=S (e.g. file:3=0,5=2 or file:*=0)")
        factors = {}
        for e in edits.split(','):
            l, _, v = e.partition('=')
            try:
                senses = range(k) if l.strip() == '*' else [int(l)]
                f = float(v)
            except ValueError:
                die(f"--sense_edit {e!r}: write SENSE=FACTOR with SENSE in 0..{k - 1} or *")
            for x in senses:
                if not 0 <= x < k:
                    die(f"--sense_edit: sense {x} out of range 0..{k - 1}")
                factors[x] = f
        out.append((word.strip(), factors))
    return out


@torch.no_grad()
def backpack_intervention():
    """Sense control (Hewitt et al. 2023, eq. 15 with delta_{l,j}): the senses l of every occurrence of a
    chosen word in the prompt are multiplied by a factor; prints the next-token distribution before and
    after, the tokens whose probability changed most, and the KL divergence."""
    k = model.cfg.n_senses
    prompt = start
    if prompt.startswith('FILE:'):
        with open(prompt[5:], encoding='utf-8') as f:
            prompt = f.read()
    ids = tok.encode(prompt)
    if not ids:
        die('--start must hold a prompt that contains the words of --sense_edit')
    ids = ids[-model.cfg.block_size:]
    x = torch.tensor([ids], device=device)
    scale = torch.ones(1, len(ids), k, device=device)
    hits = {}
    for word, factors in parse_sense_edit(sense_edit, k):
        pos = sorted({i + j for form in (tok.encode(' ' + word), tok.encode(word)) if form
                      for i in range(len(ids) - len(form) + 1) if ids[i:i + len(form)] == form for j in range(len(form))})
        if not pos:
            die(f"--sense_edit word {word!r} does not occur in the prompt {prompt!r}")
        for l, f in factors.items():
            scale[0, pos, l] = f
        hits[word] = pos
    p0 = torch.softmax(model(x)[0][0, -1].double(), -1)
    p1 = torch.softmax(model(x, sense_scale=scale)[0][0, -1].double(), -1)
    kl = float((p0 * (p0.clamp_min(1e-300).log() - p1.clamp_min(1e-300).log())).sum())
    show = lambda i: tok.decode([i]) or repr(i)
    top = lambda p: [(show(i), float(p[i])) for i in p.topk(show_top).indices.tolist()]
    delta = (p1 - p0)
    up = [(show(i), float(p0[i]), float(p1[i])) for i in delta.topk(show_top).indices.tolist()]
    down = [(show(i), float(p0[i]), float(p1[i])) for i in (-delta).topk(show_top).indices.tolist()]
    if json_output:
        print(_json.dumps({'start': prompt, 'sense_edit': sense_edit, 'positions': hits, 'kl': kl, 'before': top(p0),
                           'after': top(p1), 'up': up, 'down': down}, ensure_ascii=False))
        return
    print(f"prompt: {prompt!r}\nedit: {sense_edit}  (positions {hits})\nKL(before || after) = {kl:.4f} nats")
    print('| rank | before | p | after | p |\n|---:|---|---:|---|---:|')
    for r, ((a, pa), (b, pb)) in enumerate(zip(top(p0), top(p1)), 1):
        print(f"| {r} | {a!r} | {pa:.4f} | {b!r} | {pb:.4f} |")
    print('most raised: ' + ', '.join(f"{t!r} {a:.4f}->{b:.4f}" for t, a, b in up))
    print('most lowered: ' + ', '.join(f"{t!r} {a:.4f}->{b:.4f}" for t, a, b in down))


def fill_masks():
    """An encoder (not Akkadian): the candidates of every [MASK] of --text."""
    if '[MASK]' not in text:
        die('--text must contain at least one [MASK] position to fill, e.g. --text="to be or not to [MASK][MASK]"')
    ids, mask_id = encode_with_masks(text)
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        logits, _ = model(x)
    probs = torch.softmax(logits[0].float(), dim=-1)
    out = []
    for pos in (x[0] == mask_id).nonzero().flatten().tolist():
        p, i = probs[pos].topk(candidates)
        out.append({'position': pos, 'candidates': [{'token': tok.decode([j]), 'prob': round(q, 4)}
                                                     for q, j in zip(p.tolist(), i.tolist())]})
    if json_output:
        print(_json.dumps({'text': text, 'masks': out}, ensure_ascii=False))
    else:
        print(text)
        for m in out:
            print(f"  [MASK] at {m['position']}: " + ', '.join(f"{c['token']!r} {c['prob']:.3f}" for c in m['candidates']))


def generate_text():
    """A causal model (gpt, backpack, atlas): num_samples continuations of --start."""
    prompt = start
    if prompt.startswith('FILE:'):
        with open(prompt[5:], encoding='utf-8') as f:
            prompt = f.read()
    ids = tok.encode(prompt) or [tok.special_ids().get('[SEP]', 0)]
    x = torch.tensor([ids] * num_samples, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    samples = [tok.decode(row.tolist()) for row in y]
    if json_output:
        print(_json.dumps({'start': prompt, 'samples': samples}, ensure_ascii=False))
    else:
        for s in samples:
            print(s)
            print('---------------')


# what sample.py does for a checkpoint: the first mode whose test holds
meta = load_meta(data_dir)
MODES = (
    (lambda: arch == 'backpack' and bool(sense_edit), backpack_intervention),
    (lambda: arch == 'mdlm', sample_mdlm),
    (lambda: arch in ('encoder', 'hf') and meta.get('dataset') == 'akkadian', restore_akkadian),  # hf: hf_encoder.py
    (lambda: arch == 'encoder', fill_masks),
    (lambda: True, generate_text),
)
next(run for applies, run in MODES if applies())()
