"""
Samples from a trained checkpoint.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=2 --max_new_tokens=300
    python sample.py --out_dir=out-encoder --text="To be, or not to [MASK][MASK], that is the question"

    python sample.py --out_dir=out-akkadian --text="a-na [x x] be-lí-ia qí-bí-ma" [--json]

A causal checkpoint (gpt) generates text after --start (a string, or FILE:path). An encoder
checkpoint fills the [MASK] positions of --text and prints, for each, the top candidates with
their probabilities. --seed makes every run repeatable; --json (= --json_output=True) prints
machine-readable output.

Akkadian restoration (an encoder trained on data whose meta.json says dataset 'akkadian'): --text is
an ATF-like line read by prepare.akkadian.parse_restoration_input, the normalization of the data
(`x` one lost sign, `...` / `[...]` a gap of unknown length; signs outside the vocabulary become
[UNK], with a warning). Adjacent x's form one gap whose signs are decoded jointly by beam search
(model.beam_fill, re-running the encoder as signs are filled); an unknown-length gap tries every length
1..max_gap_len and ranks all candidates by Aeneas's length-normalised score logp / (1 + k)^length_alpha
(model.restore_gaps). For each gap the top `candidates` restorations are printed with their joint
probabilities, then the line with the best restoration of every gap.
"""
import json as _json
import os
import sys

import torch

from configurator import configure
from model import encoder_scorer, load_checkpoint, restore_gaps
from prepare.common import die, load_meta, load_tokenizer

# ----------------------------------------------------------------------------- defaults
out_dir = 'out'
ckpt_name = 'ckpt.pt'
data_dir = ''                 # default: the data directory the checkpoint was trained on
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
length_alpha = 1.0            # ... length exponent a of the score logp / (1 + length)^a (Aeneas)
# -----------------------------------------------------------------------------
sys.argv[1:] = ['--json=True' if a == '--json' else a for a in sys.argv[1:]]
configure(globals())
json_output = json_output or json
torch.manual_seed(seed)
path = os.path.join(out_dir, ckpt_name)
if not os.path.exists(path):
    die(f"{path} not found: train first (python train.py config/...) or pass --out_dir=DIR")
model, ckpt = load_checkpoint(path, device)
cfg = ckpt['config']
data_dir = data_dir or cfg.get('data_dir') or os.path.join('data', cfg['dataset'])
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
    from prepare.akkadian import FLAG_WORD_START, GAP, GAPN, parse_restoration_input
    if not text.strip():
        die('--text must hold an ATF line with gaps, e.g. --text="a-na [x x] be-lí-ia qí-bí-ma"')
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
    score_fn = encoder_scorer(model, banned_ids=specials.values())
    results = restore_gaps(score_fn, ids, gaps, mask_id=specials['[MASK]'], max_gap_len=max_gap_len, beam=beam,
                           alpha=length_alpha, topk=candidates, banned_ids=specials.values(),
                           window=ckpt['model_args']['block_size'])
    out_gaps, best_signs, best_words, prev = [], [], [], 0
    for n, ((start, length), cands) in enumerate(zip(gaps, results)):
        out_gaps.append({'gap': n + 1, 'start': start, 'length': length,
                         'candidates': [{'signs': [tok.itos[s] for s in signs], 'prob': p, 'score': sc, 'length': k}
                                        for signs, p, sc, k in cands]})
        best = [tok.itos[s] for s in cands[0][0]]
        ws = words[start:start + length] if length else [words[start]] + [False] * (len(best) - 1)
        best_signs += toks[prev:start] + ['[' + best[0]] + best[1:-1] + ([best[-1] + ']'] if len(best) > 1 else [])
        if len(best) == 1:
            best_signs[-1] += ']'
        best_words += words[prev:start] + list(ws)
        prev = start + (length or 1)
    best_signs += toks[prev:]
    best_words += words[prev:]
    line = render(best_signs, best_words)
    if json_output:
        print(_json.dumps({'text': text, 'signs': toks, 'unknown_signs': unknown, 'gaps': out_gaps, 'best': line},
                          ensure_ascii=False))
        return
    print(render(['x' if t == GAP else ('...' if t == GAPN else t) for t in toks], words))
    for g in out_gaps:
        kind = f"{g['length']} sign{'s' if g['length'] > 1 else ''}" if g['length'] else f"unknown length, tried 1..{max_gap_len}"
        print(f"gap {g['gap']} ({kind}):")
        for r, c in enumerate(g['candidates'], 1):
            extra = f"  length {c['length']}  score {c['score']:.3f}" if g['length'] is None else ''
            print(f"  {r}. {'-'.join(c['signs']):<30} p={c['prob']:.4f}{extra}")
    print(f"best: {line}")


meta = load_meta(data_dir)
if arch == 'encoder' and meta.get('dataset') == 'akkadian':
    restore_akkadian()
elif arch == 'encoder':
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
else:
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
