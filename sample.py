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
offered as candidates beside the scorer's. --explain adds why: for each candidate, how much its log-probability
drops when each context sign is hidden (occlusion saliency, restoration.occlusion_saliency); the 5 signs that
support it most are printed, --json carries them all. Lines and candidates are written as the input writes ATF
(edition.py): determinatives attached, its own hyphens and spaces, its subscript or accent convention.

Whole texts (docs/restoring.md, Restoring as a scholar works):

    python sample.py --out_dir=out-akkadian --input=letters.atf [--output=restored.atf] [--json | --tsv] [--explain]

restores every gap of every line of an ATF file (one or many `&` texts; an ORACC corpusjson text or project zip
too), each in the context of its text, all gaps batched through the scorer. Written to standard output, or to
--output (never the input itself): the ATF back, each gap's best restoration inside brackets as an editor writes it
and a `#note:` line under each restored line with the top candidates and their probabilities, every other line
untouched; --json (one JSON object per gap, one per line) or --tsv (one row per gap) instead. --restored=True also
restores each run of signs the editor restored inside [ ] and reports where the editor's reading ranks.
"""
import json as _json
import os
import sys

import torch

from checkpoint import check_device, load_run
from configurator import configure
from corpus import die, load_meta, load_tokenizer

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
explain = False               # ... why: occlusion saliency of each candidate (the 5 most influential signs printed)
input = ''                    # ... an ATF file (or ORACC corpusjson / zip): restore every gap of every line
output = ''                   # ... --input: write here (never over the input); default standard output
tsv = False                   # ... --input: one tab-separated row per gap instead of the ATF
restored = False              # ... --input: also restore the editor's [restorations] and rank the editor's reading
steps = 128                   # mdlm: denoising steps
sampler = 'ddpm_cache'        # mdlm: ddpm | ddpm_cache
length = 0                    # mdlm: tokens per unconditional sample; 0 = block_size; more = semi-autoregressive
stride = 0                    # mdlm: new tokens per semi-autoregressive block; 0 = block_size // 2
sense_edit = ''                # backpack: 'WORD:L=S,L=S;WORD:*=S' re-weights senses L of WORD in --start (0 removes)
show_top = 10                 # backpack sense_edit: next-token candidates shown before / after
# -----------------------------------------------------------------------------
sys.argv[1:] = [a + '=True' if a in ('--json', '--tsv', '--explain') else a for a in sys.argv[1:]]
given = set()  # the options set on the command line: each must apply to what this checkpoint does (MODE_OPTIONS)
configure(globals(), given=given)
json_output = json_output or json


def check_options():
    """Values the sampler cannot use: one line each, before the checkpoint is loaded."""
    for k in ('num_samples', 'candidates', 'beam', 'max_gap_len', 'steps', 'show_top'):
        if globals()[k] < 1:
            die(f"--{k} must be at least 1, got {globals()[k]}")
    for k in ('max_new_tokens', 'length', 'stride', 'top_k', 'parallels', 'length_alpha', 'seed'):
        if globals()[k] < 0:
            die(f"--{k} must not be negative, got {globals()[k]}")
    if temperature <= 0:
        die(f"--temperature must be positive, got {temperature}")
    if start.startswith('FILE:') and not os.path.isfile(start[5:]):
        die(f"--start={start}: file {start[5:]!r} not found")
    check_device(device)
    if input and not os.path.isfile(input):
        die(f"--input={input}: file not found (give an ATF file, an ORACC corpusjson .json or a project .zip)")
    if output and not input:
        die("--output is where --input's restored text goes: give --input=FILE too")
    if output and os.path.exists(output) and os.path.samefile(output, input):
        die(f"--output={output} is the input itself: write the restored text to another file")
    if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        die(f"--output={output}: folder {os.path.dirname(os.path.abspath(output))} does not exist")
    if json_output and tsv:
        die("--json and --tsv are two formats of the same records: choose one")


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


def make_restorer():
    """The run's restorer (restorer.Restorer): scorers built once, options checked in one line each."""
    from restorer import InputError, Restorer
    try:
        return Restorer(model, ckpt, data_dir, cache_dir=out_dir, ckpt_path=os.path.join(out_dir, ckpt_name),
                        scorer=scorer, beam=beam, max_gap_len=max_gap_len, candidates=candidates,
                        length_model=length_model, length_alpha=length_alpha)
    except InputError as e:
        die(str(e))


def restore_akkadian():
    """One ATF line (--text): each gap's candidates, the answer's rank, parallels, saliency (restorer.Restorer.line)."""
    from restorer import InputError, top_saliency
    if not text.strip():
        die('--text must hold an ATF line with gaps, e.g. --text="a-na [x x] be-lí-ia qí-bí-ma"')
    r = make_restorer()
    try:
        res = r.line(text, answer=answer, parallels=parallels, explain=explain)
    except InputError as e:
        die(str(e))
    if res['unknown_signs']:
        print(f"warning: {len(res['unknown_signs'])} sign(s) not in the vocabulary of {data_dir}, read as [UNK]: "
              + ' '.join(res['unknown_signs']), file=sys.stderr)
    if json_output:
        print(_json.dumps(res, ensure_ascii=False))
        return
    print(text)
    print(f"scorer: {scorer} = {res['scorer_description']}; unknown lengths ranked by {res['lengths']}")
    for g in res['gaps']:
        kind = f"{g['length']} sign{'s' if g['length'] > 1 else ''}" if g['length'] else f"unknown length, tried 1..{max_gap_len}"
        print(f"gap {g['gap']} ({kind}):")
        for k, c in enumerate(g['candidates'], 1):
            extra = f"  length {c['length']}  score {c['score']:.3f}" if g['length'] is None else ''
            src = f"  [{c['source']}]" if c['source'] != scorer else ''
            print(f"  {k}. {c['atf']:<30} p={c['p']:.4f}{extra}{src}")
            if explain:
                print("       why: " + (', '.join(f"{s['sign']} {s['drop']:+.2f}" for s in top_saliency(c['saliency']))
                                        or 'no context sign'))
        if 'answer' in g:
            a = g['answer']
            where = (f"rank {a['rank']}" if a['in_candidates'] else
                     f"not among the {len(g['candidates'])} candidates above (rank {a['rank']} or worse)")
            print(f"  answer {a['atf']}: {where}, p={a['p']:.3g}")
        if g.get('context_matches'):
            m = g['context_matches']
            print(f"  exact context matches in train ({m['left_atf'] or '^'} [...] {m['right_atf'] or '$'}): "
                  + ', '.join(f"{f['atf']} x{f['count']}" for f in m['fillings']))
            for e in m['examples']:
                print(f"    {e['doc']} @{e['offset']}: {m['left_atf']} [{e['atf']}] {m['right_atf']}")
        elif parallels:
            print("  exact context matches in train: none")
    if explain:
        print("why = how much a candidate's log-probability drops when that context sign is hidden (occlusion); the 5 largest")
    print(f"best: {res['best']}")
    if res['parallels']:
        print(f"parallels (the {len(res['parallels'])} train passages closest to this line, cosine of mean-pooled "
              "encoder states):")
        for k, p in enumerate(res['parallels'], 1):
            print(f"  {k}. {p['doc']}  cos={p['cosine']:.3f}  {p['text']}")


def read_input_texts():
    """--input -> (the file's text or None, raw lines or None, [edition.Text]). ATF is read by edition.read_edition
    (every line kept, for writing back); ORACC JSON through atf.parse_corpusjson, each text's signs laid out as
    lines of ten words (the JSON keeps no line breaks)."""
    from edition import read_edition, text_from_signs
    ext = os.path.splitext(input)[1].lower()
    if ext in ('.json', '.zip'):
        from atf import parse_corpusjson
        from corpus import loads_json
        from download import read_member
        import zipfile
        docs = []
        try:
            if ext == '.zip':
                with zipfile.ZipFile(input) as z:
                    names = sorted(n for n in z.namelist() if '/corpusjson/' in n and n.endswith('.json'))
                    for n in names:
                        try:
                            docs.append(parse_corpusjson(loads_json(read_member(z, n).decode('utf-8'))))
                        except ValueError as e:  # an unreadable text of a project: skipped, said here
                            print(f"warning: skipping {input}:{n} ({e})", file=sys.stderr)
            else:
                with open(input, encoding='utf-8') as f:
                    docs.append(parse_corpusjson(loads_json(f.read())))
        except (ValueError, zipfile.BadZipFile) as e:
            die(f"--input={input} is not an ORACC corpusjson text or project zip ({e})")
        return None, None, [text_from_signs(d['id'], d['signs']) for d in docs if d]
    try:
        with open(input, 'rb') as f:
            src = f.read().decode('utf-8')
    except UnicodeDecodeError as e:
        die(f"--input={input} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): save it as UTF-8")
    raws, texts = read_edition(src, restored=restored, name=input)
    return src, raws, texts


def restore_file():
    """--input: every gap of every line of a file, batched, written back as ATF (or --json / --tsv records)."""
    import tempfile
    import time
    from tqdm import tqdm
    from edition import Spelling
    from restorer import edition_out, records_jsonl, records_tsv
    src, raws, texts = read_input_texts()
    sp = Spelling.of(src if src is not None else '')
    r = make_restorer()
    n_gaps = sum(1 for t in texts for l in t.lines for g in l.gaps if (g.length or 1) < r.T - 1)
    unknown = sorted({s for t in texts for s in r.ids(t.tokens)[1]})
    if unknown:
        print(f"warning: {len(unknown)} sign(s) of {input} not in the vocabulary of {data_dir}, read as [UNK]: "
              + ' '.join(unknown[:20]) + (' ...' if len(unknown) > 20 else ''), file=sys.stderr)
    t0 = time.time()
    bar = tqdm(total=n_gaps, unit='gap', desc='restoring', disable=not sys.stderr.isatty() or not n_gaps)
    records = r.texts(texts, explain=explain, progress=bar, spelling=sp)
    bar.close()
    written = 0
    if json_output:
        out = records_jsonl(records)
    elif tsv:
        out = records_tsv(records)
    else:
        out, written = edition_out(raws, texts, records, sp, explain)
    if output:
        tmp = tempfile.NamedTemporaryFile('wb', dir=os.path.dirname(os.path.abspath(output)), delete=False,
                                          prefix='.restore-', suffix='.tmp')
        with tmp:
            tmp.write(out.encode('utf-8'))
        os.replace(tmp.name, output)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(out.encode('utf-8'))
        sys.stdout.flush()
    lines_with = len({id(rec['_line']) for rec in records})
    print(f"restored {n_gaps} gap(s) on {lines_with} line(s) of {len(texts)} text(s) in {time.time() - t0:.1f}s "
          f"({r.scorer} scorer)" + ('' if json_output or tsv else f"; {written} written into the lines, "
                                    f"{n_gaps - written} in the notes only") + (f" -> {output}" if output else ''),
          file=sys.stderr)


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
    if len(ids) > model.cfg.block_size:
        die(f"--text is {len(ids)} tokens, longer than the model's context of {model.cfg.block_size}")
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
    (lambda: arch in ('encoder', 'hf') and meta.get('dataset') == 'akkadian' and bool(input), restore_file),
    (lambda: arch in ('encoder', 'hf') and meta.get('dataset') == 'akkadian', restore_akkadian),  # hf: hf_encoder.py
    (lambda: arch == 'encoder', fill_masks),
    (lambda: True, generate_text),
)
COMMON_OPTIONS = ('out_dir', 'ckpt_name', 'data_dir', 'allow_other_data', 'use_ema', 'seed', 'device', 'json_output', 'json')
MODE_OPTIONS = {generate_text: ('start', 'num_samples', 'max_new_tokens', 'temperature', 'top_k'),
                backpack_intervention: ('start', 'sense_edit', 'show_top'),
                sample_mdlm: ('text', 'num_samples', 'steps', 'sampler', 'length', 'stride'),
                restore_akkadian: ('text', 'candidates', 'beam', 'max_gap_len', 'length_alpha', 'length_model', 'scorer',
                                   'parallels', 'answer', 'explain'),
                restore_file: ('input', 'output', 'tsv', 'restored', 'explain', 'candidates', 'beam', 'max_gap_len',
                               'length_alpha', 'length_model', 'scorer'),
                fill_masks: ('text', 'candidates')}
mode = next(run for applies, run in MODES if applies())
stray = sorted(k for k in given if k not in COMMON_OPTIONS and k not in MODE_OPTIONS[mode])
if stray:  # an option the chosen mode never reads would be dropped without a word
    die(f"{', '.join('--' + k for k in stray)} do(es) not apply to {out_dir} (a {arch} checkpoint: sample.py's "
        f"{mode.__name__}, whose options are {', '.join('--' + k for k in MODE_OPTIONS[mode])})")
mode()
