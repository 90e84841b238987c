"""
What did the model learn? Sparse autoencoders, feature tables and linear probes on the hidden states that
`train.py --save_artifacts=True` saved before and after training.

    python interpret.py --out_dir=out-akkadian                      # TopK SAE, 4 x d latents, k = 16
    python interpret.py --out_dir=out-akkadian --sae=l1 --l1_coeff=0.1 --result_dir=out-akkadian/interpret_l1
    python interpret.py --out_dir=DIR --stages=init,final --data_dir=data/akkadian --expansion=8 --k=32

Input: every out_dir/artifacts_NAME.pt (artifacts.py, written by train.py: token ids, document offsets, the
embedding matrix and float16 hidden states per layer of the fixed eval subset: artifact_docs val documents,
seed 42), `init` and `final` first. Any out_dir whose artifacts have this layout works (a pretrained or
fine-tuned encoder only has to write artifacts_NAME.pt the same way, one state per token of the dataset's
subset, subword states pooled per sign); the token ids must equal those of the subset of data_dir.
Output: out_dir/interpret/ or --result_dir (replaced as a whole, never half-written; an existing folder is replaced
only when it is a result folder of interpret.py, marked by its `.interpret` file: any other folder is refused):
  report.md                    everything below with the pictures, read in that order
  metrics.json                 flat keys: {stage}_L{layer}_{metric}
  sae_by_layer.png             FVU, L0 and the masked-sign losses by layer, one line per stage
  probes_by_layer.png          probe accuracy by layer per stage, with the baselines and controls
  feature_density.png          histogram of the latents' activation densities per layer and stage
  features_{stage}_L{l}.tsv    one row per live latent: density, top signs with context, class shares
  probes.tsv                   every probe score
  saes.pt                      the SAE weights (weights_only-loadable)

1. SAEs (sae.py: TopK, Gao et al. 2024, by default; L1, Bricken et al. 2023, with --sae=l1), one per stage
   and layer, n_latents = expansion x d, trained on the clean saved states of the training part of the
   subset (its documents minus a held-out share, `heldout`), scored on the held-out documents: fraction of
   variance unexplained (FVU), L0; dead (never active) and dense (active on more than dense_threshold of the
   tokens) shares of the latents over the whole subset.
2. Downstream check (needs a checkpoint of this toolkit for the stage: init.pt for init, last.pt for final,
   NAME.pt otherwise; an encoder): 15% of the target signs of the subset (atf.py is_target) are
   replaced by [MASK] with a fixed seed, in the same block_size pieces write_artifacts used, and the
   encoder's cross-entropy on them is measured clean, with layer l's states replaced by the SAE
   reconstruction, and with them replaced by their mean over the subset (mean ablation); the rest of the
   pass runs from layer l on (model.py Trunk.forward from_layer). The saved states are of the clean input,
   so the states of the masked input are recomputed here: the SAE, trained on clean states, is applied to
   states it never saw at the [MASK] positions (fvu_masked says how well it fits them). Loss recovered =
   (mean-ablation - SAE) / (mean-ablation - clean), left out when the mean ablation costs under 0.02 nats (an
   untrained model, whose output hardly depends on its input). Before any of this the checkpoint must reproduce the
   saved states, or the stage's downstream check is skipped with a line saying so.
3. Feature tables: per live latent its top_n activating tokens with their context (the words around,
   written as ATF; the bins keep word but not line boundaries), its density, and the share of its top
   activations in each class of the data's own labels: determinative, logogram, syllabic, number, special
   or gap token, word-initial / medial / final sign, one-sign word, index-bearing reading (ša2, E2, {lu2}),
   a damaged or restored sign, a sign next to a damaged, restored or missing one, and the source (the
   project part of the document id). The best class is the one whose share exceeds its base rate (its share
   among all tokens) the most.
4. Probes (probes.py) per stage and layer on the real signs: sign class (determinative / logogram /
   syllabic / number), position in the word (1st, 2nd, 3rd, later), word-final sign, and the word's length
   in signs (1..4, 5+); trained on the training part, scored on the held-out part, each beside the
   majority class, the sign-identity baseline (each sign's most frequent label) and the shuffled-label
   control.
"""
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from artifacts import load_artifacts, STAGE_CHECKPOINT
from atf import FLAG_DAMAGED, FLAG_MISSING, FLAG_RESTORED, FLAG_SIGN, FLAG_STATE, FLAG_WORD_START, is_target
from checkpoint import check_data, check_device, load_checkpoint, torch_load
from configurator import check_values, configure
from corpus import check_dataset, die, documents, fixed_subset, load_meta
from objectives import objective
from probes import probe_scores
from sae import dead_dense, density, encode_all, fvu, pca_fvu, SAE_KINDS, sae_metrics, train_sae

# ----------------------------------------------------------------------------- defaults
out_dir = ''
stages = ''                   # comma-separated artifact names (artifacts_NAME.pt); '' = all in out_dir, init and final first
result_dir = ''               # where the results go; '' = out_dir/interpret (e.g. out_dir/interpret_l1 to keep both SAEs)
data_dir = ''                 # default: the run's training data (its checkpoint's config)
sae = 'topk'                  # topk (Gao et al. 2024) | l1 (Bricken et al. 2023)
expansion = 4                 # latents = expansion x d_model
k = 16                        # active latents per token of the TopK SAE
l1_coeff = 0.1                # L1 SAE: lambda of ||x - x_hat||^2 + lambda ||z||_1 (states scaled to unit mean
                              # variance; 0.1 gives L0 ~ 15 on the quickstart run's states)
sae_steps = 600               # Adam steps per SAE
sae_batch = 256               # tokens per step
sae_lr = 3e-3
dense_threshold = 0.1         # a latent active on more than this share of the tokens is dense
heldout = 0.3                 # share of the subset's documents held out for the SAE's FVU / L0 and the probes
mask_rate = 0.15              # downstream check: share of the target signs masked
probe_weight_decay = 1e-4
top_n = 10                    # top activations per latent in the feature tables
report_features = 6           # feature rows per layer shown in report.md
seed = 0
device = 'cpu'
num_threads = 0               # CPU threads; 0 = torch's default
# -----------------------------------------------------------------------------

PROBE_TASKS = {  # name: (description, class names)
    'sign_class': ('sign class', ('determinative', 'logogram', 'syllabic', 'number')),
    'word_position': ('position in the word', ('1st', '2nd', '3rd', '4th+')),
    'word_final': ('word-final sign', ('not final', 'final')),
    'word_length': ("the word's length in signs", ('1', '2', '3', '4', '5+')),
}
SIGN_CLASSES = ('determinative', 'logogram', 'syllabic', 'number', 'special')
MIN_ABLATION_EFFECT = 0.02  # nats: below this the mean ablation barely hurts and 'loss recovered' is not reported
RESULT_MARKER = '.interpret'  # in every result folder: the mark that lets the next run replace it
RESULT_FILES = re.compile(r'report\.md|metrics\.json|probes\.tsv|saes\.pt|features_.+\.tsv|[a-z_]+\.png')


def check_result_dir(final_dir, out):
    """A result folder may be replaced only when interpret.py wrote it: it holds RESULT_MARKER (or, written before
    the marker, it lies in the run's folder and holds nothing but interpret's own files, report.md, metrics.json
    and saes.pt among them). Any other folder (a user's, the run's own out_dir or one above it) ends the program
    with one line before any work."""
    final, run = final_dir.resolve(), out.resolve()
    if final == run or final in run.parents:
        die(f"--result_dir={final_dir} is the run's folder {out} or holds it: the results replace their folder as a "
            f"whole; choose a new folder such as {out / 'interpret'}")
    if final_dir.is_symlink() or (final_dir.exists() and not final_dir.is_dir()):
        die(f"--result_dir={final_dir} exists and is not a folder: choose another --result_dir")
    if not final_dir.exists():
        return
    names = [p.name for p in final_dir.iterdir()]
    ours = (RESULT_MARKER in names or
            (final.parent == run and {'report.md', 'metrics.json', 'saes.pt'} <= set(names)
             and all(RESULT_FILES.fullmatch(n) for n in names)))
    if names and not ours:
        other = sorted(n for n in names if not RESULT_FILES.fullmatch(n)) or sorted(names)
        die(f"--result_dir={final_dir} is not a result folder of interpret.py (it holds {other[0]!r}"
            f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}) and would be replaced as a whole: "
            f"choose a new or empty folder")


# ----------------------------------------------------------------------------- labels of the data

def sign_class(tok):
    """determinative {d} | logogram (upper case: KUR, E2, |A.AN|) | number (3, 1/2, 1(u)) | syllabic | special ([GAP], [UNK])."""
    if tok.startswith('[') and tok.endswith(']'):
        return 'special'
    if tok.startswith('{'):
        return 'determinative'
    if tok[:1].isdigit():
        return 'number'
    if any(c.isupper() for c in tok):
        return 'logogram'
    return 'syllabic'


def index_bearing(tok):
    """A reading with a homophone index (ša2, E2, {lu2}, tuₓ) - atf.py normalize_sign writes them as digits."""
    core = tok.strip('{}+')
    return sign_class(tok) not in ('special', 'number') and bool(re.search(r'[^\d\W]\d+$|ₓ$', core))


def token_table(ids, flags, offsets, vocab, sources):
    """Per-token labels of the subset: dict of numpy arrays (N,) - see the module docstring, item 3."""
    N = len(ids)
    toks = [vocab[i] if i < len(vocab) else '[UNK]' for i in ids]
    cls = np.array([sign_class(t) for t in toks])
    state = flags & FLAG_STATE
    doc = np.zeros(N, dtype=np.int64)
    start = (flags & FLAG_WORD_START) != 0
    for d, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        doc[a:b] = d
        start[a] = True  # a document starts a word
    word = np.cumsum(start) - 1
    word_first = np.flatnonzero(start)
    wlen = np.diff(np.append(word_first, N))[word]
    pos = np.arange(N) - word_first[word]
    bad = np.isin(state, (FLAG_DAMAGED, FLAG_RESTORED, FLAG_MISSING))
    near = np.zeros(N, dtype=bool)
    same_left = np.r_[False, doc[1:] == doc[:-1]]
    near[1:] |= bad[:-1] & same_left[1:]
    near[:-1] |= bad[1:] & same_left[1:]
    real = ((flags & FLAG_SIGN) != 0) & (cls != 'special')
    return {'tok': np.array(toks, dtype=object), 'cls': cls, 'doc': doc, 'word': word, 'pos': pos, 'wlen': wlen,
            'final': pos == wlen - 1, 'index': np.array([index_bearing(t) for t in toks]),
            'damaged': np.isin(state, (FLAG_DAMAGED, FLAG_RESTORED)) & ((flags & FLAG_SIGN) != 0),
            'near_damage': near, 'real': real, 'state': state,
            'source': np.array([sources[d] for d in doc], dtype=object)}


def feature_classes(tt):
    """{class name: bool array (N,)}: the labels a feature's top activations are counted in."""
    c = {name: tt['cls'] == name for name in SIGN_CLASSES}
    c.update({'word-initial': (tt['pos'] == 0) & (tt['wlen'] > 1),
              'word-medial': (tt['pos'] > 0) & ~tt['final'],
              'word-final': tt['final'] & (tt['wlen'] > 1),
              'one-sign word': tt['wlen'] == 1,
              'index-bearing': tt['index'], 'damaged/restored': tt['damaged'], 'next to damage': tt['near_damage']})
    for s in sorted(set(tt['source'])):
        c[f'source {s}'] = tt['source'] == s
    return c


def probe_labels(tt):
    """{task: int64 array (N,)} over all tokens (only tt['real'] positions are used)."""
    cls_id = {n: i for i, n in enumerate(PROBE_TASKS['sign_class'][1])}
    return {'sign_class': np.array([cls_id.get(c, -1) for c in tt['cls']]),
            'word_position': np.minimum(tt['pos'], 3),
            'word_final': tt['final'].astype(np.int64),
            'word_length': np.minimum(tt['wlen'], 5) - 1}


def render_context(tt, i, words=2):
    """The words around token i in its document, as ATF (signs joined by '-', determinatives attached),
    token i marked «thus»."""
    d, w = tt['doc'][i], tt['word'][i]
    js = np.flatnonzero((tt['doc'] == d) & (np.abs(tt['word'] - w) <= words))
    out, prev_word, prev_tok = [], None, None
    for j in js:
        t = {'[GAP]': 'x', '[GAPN]': '...'}.get(tt['tok'][j], tt['tok'][j])
        if tt['state'][j] == FLAG_RESTORED:
            t = f'[{t}]'
        elif tt['state'][j] == FLAG_DAMAGED:
            t += '#'
        if j == i:
            t = f'«{t}»'
        if tt['word'][j] != prev_word:
            out.append(' ' if out else '')
        elif not (t.lstrip('«[').startswith('{') or prev_tok.rstrip('»#]').endswith('}')):
            out.append('-')
        out.append(t)
        prev_word, prev_tok = tt['word'][j], t
    return ''.join(out)


# ----------------------------------------------------------------------------- inputs

def find_stages(out, names):
    found = sorted(p.name[len('artifacts_'):-len('.pt')] for p in out.glob('artifacts_*.pt'))
    if names:
        want = [s for s in names.split(',') if s]
        missing = [s for s in want if s not in found]
        if missing:
            die(f"no artifacts_{missing[0]}.pt in {out} (found: {', '.join(found) or 'none'})")
        return want
    if not found:
        die(f"no artifacts_*.pt in {out}: train with --save_artifacts=True (python train.py config/X.py "
            f"--save_artifacts=True) or pass --out_dir of such a run")
    order = {'init': 0, 'final': 1}
    return sorted(found, key=lambda s: (order.get(s, 2), s))


def stage_checkpoint(out, stage, art):
    return out / art.get('checkpoint', STAGE_CHECKPOINT.get(stage, f'{stage}.pt'))


def resolve_data_dir(out, stage_names, arts):
    if data_dir:
        return data_dir
    for s in stage_names:
        p = stage_checkpoint(out, s, arts[s])
        if p.exists():
            cfg = torch_load(p).get('config', {})
            if cfg.get('data_dir') or cfg.get('dataset'):
                return cfg.get('data_dir') or os.path.join('data', cfg['dataset'])
    die(f"cannot tell which data the artifacts of {out} belong to (no checkpoint of this toolkit beside them): "
        f"pass --data_dir=data/NAME")


def subset_of(ddir, art):
    """(ids, flags, offsets, sources, split) of the data subset the artifacts were computed on, checked id by id."""
    split = art.get('split', 'val')
    n_docs = len(art['doc_offsets']) - 1
    if not (Path(ddir) / f'{split}.bin').exists():
        die(f"{ddir}/{split}.bin not found: prepare the data first (python prepare/NAME.py) or pass --data_dir")
    all_docs = documents(ddir, split)
    # fixed_subset(n) with n = the number of documents in the artifacts picks the same documents as
    # train.py's artifact_docs did: all of them when the split has no more, else exactly that draw
    docs = fixed_subset(ddir, split, n_docs, seed=art.get('seed', 42))
    data = np.fromfile(Path(ddir) / f'{split}.bin', dtype=np.uint16).astype(np.int64)
    fpath = Path(ddir) / f'{split}.flags.bin'
    if not fpath.exists():
        die(f"{fpath} not found: the labels need the damage/word flags of prepare/akkadian.py")
    fl = np.fromfile(fpath, dtype=np.uint8)
    ids = np.concatenate([data[a:b] for a, b in docs]) if docs else np.zeros(0, np.int64)
    if not np.array_equal(ids, art['token_ids'].numpy().astype(np.int64)):
        die(f"the artifacts' token ids are not those of the {n_docs}-document {split} subset of {ddir}: "
            f"pass the --data_dir the run was trained on")
    flags = np.concatenate([fl[a:b] for a, b in docs])
    meta = load_meta(ddir)
    names = meta.get('splits', {}).get(split, [])
    index = {s: i for i, s in enumerate(all_docs)}
    sources = []
    for span in docs:
        name = names[index[span]] if len(names) == len(all_docs) else ''
        sources.append(name.split('/')[0] if '/' in name else (name or meta.get('source', '?')))
    return ids, flags, art['doc_offsets'].numpy().astype(np.int64), sources, split


def heldout_split(n_docs, offsets, share, rng_seed):
    """Boolean (N,) mask of held-out tokens: a share of the documents (at least one, and one left to train on);
    with a single document, its last share of tokens. Returns (mask, description)."""
    N = int(offsets[-1])
    held = np.zeros(N, dtype=bool)
    if n_docs >= 2:
        n_held = min(n_docs - 1, max(1, round(share * n_docs)))
        pick = np.sort(np.random.default_rng(rng_seed).choice(n_docs, n_held, replace=False))
        for d in pick:
            held[offsets[d]:offsets[d + 1]] = True
        return held, f"{n_held} of {n_docs} documents held out (ids {', '.join(map(str, pick))})"
    held[int(round(N * (1 - share))):] = True
    return held, f"one document: its last {share:.0%} of tokens held out"


# ----------------------------------------------------------------------------- downstream check

def pieces_of(offsets, T):
    """(start, end) token spans of the block_size pieces write_artifacts ran the model on."""
    return [(s, min(s + T, b)) for a, b in zip(offsets[:-1], offsets[1:]) for s in range(int(a), int(b), T)]


@torch.no_grad()
def run_pieces(model, x, spans, layers=None, replace=None):
    """Run the encoder on every piece (batched by length). replace = (l, fn): fn maps the states of layer l
    (n, d) to their replacement and the pass continues from there. Returns (logits (N, V), {layer: (N, d)})."""
    by_len = {}
    for s, e in spans:
        by_len.setdefault(e - s, []).append((s, e))
    N = int(spans[-1][1]) if spans else 0
    dev = next(model.parameters()).device
    logits, hidden = None, {}
    for n, group in by_len.items():
        idx = torch.stack([x[s:e] for s, e in group]).to(dev)
        want = set(layers or ()) | ({replace[0]} if replace else set())
        if replace:  # the replacement (an SAE) runs on the CPU, in float32
            _, hs = model.trunk(idx, None, {replace[0]})
            h = hs[replace[0]]
            h = replace[1](h.reshape(-1, h.shape[-1]).float().cpu()).reshape(h.shape).to(h.device, h.dtype)
            lg, _, hs = model(idx, hidden_layers=want, from_layer=(replace[0], h))
        else:
            lg, _, hs = model(idx, hidden_layers=want)
        if logits is None:
            logits = torch.empty(N, lg.shape[-1])
        for b, (s, e) in enumerate(group):
            logits[s:e] = lg[b].float().cpu()
            for l in layers or ():
                hidden.setdefault(l, torch.empty(N, hs[l].shape[-1]))[s:e] = hs[l][b].float().cpu()
    return logits, hidden


def masked_input(ids, flags, spans, mask_id, n_lead, rate, rng_seed):
    """15% (rate) of the target signs of every piece replaced by [MASK], chosen with a fixed seed, as the
    masked-sign metric of evals/akkadian.py does. Returns (x int64 (N,), chosen bool (N,))."""
    rng = np.random.default_rng(rng_seed)
    chosen = np.zeros(len(ids), dtype=bool)
    for s, e in spans:
        chosen[s:e] = is_target(flags[s:e]) & (ids[s:e] >= n_lead) & (rng.random(e - s) < rate)
    x = ids.copy()
    x[chosen] = mask_id
    return torch.from_numpy(x), chosen


def masked_loss(logits, ids, chosen):
    """Mean cross-entropy (nats, float64) of the true signs at the masked positions."""
    c = torch.from_numpy(chosen)
    return float(F.cross_entropy(logits[c].double(), torch.from_numpy(ids)[c], reduction='mean'))


def states_match(saved, recomputed):
    """float16 artifacts vs float32 states of the checkpoint: equal up to float16 rounding (and a little slack)."""
    scale = saved.abs().max().clamp_min(1e-6)
    return float((saved - recomputed).abs().max() / scale) < 1e-2


# ----------------------------------------------------------------------------- output

def fmt(v, nd=3):
    return '–' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{nd}f}'


def feature_rows(z, tt, classes, top):
    """One dict per live latent: density, max activation, top signs, contexts, best class and shares."""
    dens = density(z).numpy()
    base = {c: float(m.mean()) for c, m in classes.items()}
    rows = []
    nz = (z > 0)
    for j in np.flatnonzero(dens > 0):
        col = z[:, j]
        n_act = int(nz[:, j].sum())
        order = torch.argsort(col, descending=True)[:min(top, n_act)].numpy()
        signs = Counter(tt['tok'][order])
        shares = {c: float(m[order].mean()) for c, m in classes.items()}
        best = max(shares, key=lambda c: (shares[c] - base[c], shares[c]))
        rows.append({'feature': int(j), 'density': float(dens[j]), 'max_act': float(col.max()), 'n_top': len(order),
                     'top_signs': ' '.join(f'{s}×{n}' for s, n in signs.most_common(4)),
                     'top_sign_share': signs.most_common(1)[0][1] / len(order),
                     'best_class': best, 'best_share': shares[best], 'best_base': base[best],
                     'contexts': [render_context(tt, int(i)) for i in order[:3]], 'shares': shares})
    rows.sort(key=lambda r: -r['density'])
    return rows


def write_feature_tsv(path, rows, class_names):
    head = ['feature', 'density', 'max_act', 'n_top', 'top_signs', 'top_sign_share', 'best_class', 'best_share',
            'best_base_rate', 'contexts'] + [f'share {c}' for c in class_names]
    lines = ['\t'.join(head)]
    for r in rows:
        lines.append('\t'.join([str(r['feature']), f"{r['density']:.4f}", f"{r['max_act']:.3f}", str(r['n_top']),
                                r['top_signs'], f"{r['top_sign_share']:.2f}", r['best_class'], f"{r['best_share']:.2f}",
                                f"{r['best_base']:.2f}", ' | '.join(r['contexts'])]
                               + [f"{r['shares'][c]:.2f}" for c in class_names]))
    Path(path).write_text('\n'.join(lines) + '\n', encoding='utf-8')


def plot_all(tmp, stage_names, layers, M, probes, dens):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    palette = ('tab:blue', 'tab:red', 'tab:green', 'tab:purple', 'tab:orange', 'tab:brown', 'tab:pink', 'tab:olive')
    colors = {s: palette[i % len(palette)] for i, s in enumerate(stage_names)}

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in stage_names:
        c = colors[s]
        axes[0].plot(layers, [M[f'{s}_L{l}_fvu'] for l in layers], marker='o', color=c, label=f'{s} (held-out)')
        axes[0].plot(layers, [M[f'{s}_L{l}_fvu_train'] for l in layers], ls=':', color=c, label=f'{s} (training part)')
        axes[0].plot(layers, [M[f'{s}_L{l}_fvu_pca'] for l in layers], ls='-.', color=c, alpha=0.6,
                     label=f'{s} PCA, L0 components')
        axes[1].plot(layers, [M[f'{s}_L{l}_l0'] for l in layers], marker='o', color=c, label=s)
        if M.get(f'{s}_L{layers[0]}_loss_clean') is not None:
            axes[2].plot(layers, [M[f'{s}_L{l}_loss_sae'] for l in layers], marker='o', color=c, label=f'{s} SAE')
            axes[2].plot(layers, [M[f'{s}_L{l}_loss_mean_ablation'] for l in layers], ls=':', marker='x', color=c,
                         label=f'{s} mean ablation')
            axes[2].axhline(M[f'{s}_L{layers[0]}_loss_clean'], ls='--', color=c, lw=1, label=f'{s} clean')
    axes[0].set_yscale('log')
    axes[1].set_ylim(0, 1.2 * max(M[f'{s}_L{l}_l0'] for s in stage_names for l in layers) + 1e-9)
    for ax, t in zip(axes, ('FVU of the SAE (held-out, log scale)', 'L0 (active latents per token)',
                            'masked-sign loss (nats)')):
        ax.set_title(t)
        ax.set_xlabel('layer (0 = embedding output)')
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(tmp / 'sae_by_layer.png', dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(PROBE_TASKS), figsize=(4.2 * len(PROBE_TASKS), 4.2))
    for ax, (task, (desc, _)) in zip(axes, PROBE_TASKS.items()):
        for s in stage_names:
            ax.plot(layers, [probes[(s, l, task)]['probe'] for l in layers], marker='o', color=colors[s], label=f'{s} probe')
            ax.plot(layers, [probes[(s, l, task)]['shuffled'] for l in layers], ls=':', color=colors[s],
                    label=f'{s} shuffled labels')
        p0 = probes[(stage_names[0], layers[0], task)]
        ax.axhline(p0['majority'], color='grey', ls='--', lw=1, label='majority class')
        ax.axhline(p0['identity'], color='black', ls='-.', lw=1, label='sign identity')
        ax.set_title(desc)
        ax.set_xlabel('layer')
        ax.set_xticks(layers)
        ax.set_ylabel('held-out accuracy')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(tmp / 'probes_by_layer.png', dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.4), sharey=True, squeeze=False)
    bins = np.linspace(-4, 0, 25)
    for ax, l in zip(axes[0], layers):
        for s in stage_names:
            d = dens[(s, l)]
            live = d[d > 0]
            ax.hist(np.log10(live), bins=bins, alpha=0.5, color=colors[s], label=f'{s} ({int((d == 0).sum())} dead)')
        ax.set_title(f'layer {l}')
        ax.set_xlabel('log10 activation density')
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel('latents')
    fig.tight_layout()
    fig.savefig(tmp / 'feature_density.png', dpi=110)
    plt.close(fig)


def md_table(head, rows):
    def numeric(c):
        return all(re.fullmatch(r'[-+]?(\d[\d,]*\.?\d*|–)', r[c]) for r in rows)
    align = ['---:' if rows and numeric(c) else '---' for c in range(len(head))]
    return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '|'.join(align) + '|'] + ['| ' + ' | '.join(r) + ' |' for r in rows])


def write_report(tmp, info, stage_names, layers, M, probes, feats, summaries):
    stage_list = ', '.join('`%s` (iter %s)' % (s, info['iters'][s]) for s in stage_names)
    L = [f"# What did the model learn? `{info['out_dir']}`", '',
         f"Stages: {stage_list}. Data: `{info['data_dir']}`, "
         f"the {info['n_docs']}-document {info['split']} subset of the artifacts ({info['n_tokens']:,} tokens, "
         f"{info['n_real']:,} real signs); {info['heldout']}. Layers {', '.join(map(str, layers))} (0 = embedding output, "
         f"l = output of block l), d = {info['d']}.", '',
         f"SAE: {info['sae_desc']}, {info['n_latents']} latents ({info['expansion']} x d), {info['sae_steps']} Adam steps of "
         f"{info['sae_batch']} tokens (lr {info['sae_lr']}), trained on the clean saved states of the training part. "
         f"Wall time {info['seconds']:.0f} s ({info['threads']} thread(s)).", '',
         '## Sparse autoencoders, per layer', '',
         'mean norm: of the states; eff. dim: their effective dimension (participation ratio of the covariance '
         'eigenvalues, (sum l)^2 / sum l^2). FVU and L0 on the held-out documents (FVU of the training part beside it, '
         'and FVU PCA: the held-out FVU of the top-L0 principal components of the training part, a dense code of as '
         'many numbers per token); dead / dense (active on more than '
         f"{info['dense_threshold']:.0%} of tokens) over the whole subset. Masked-sign loss: {info['mask_desc']}",
         '']
    head = ['stage', 'layer', 'mean norm', 'eff. dim', 'FVU', 'FVU train', 'FVU PCA', 'L0', 'dead', 'dense', 'loss clean',
            'loss SAE', 'loss mean-abl.', 'recovered', 'FVU masked in.']
    rows = []
    for s in stage_names:
        for l in layers:
            g = lambda key: M.get(f'{s}_L{l}_{key}')
            rows.append([s, str(l), fmt(g('state_norm'), 1), fmt(g('eff_dim'), 1), fmt(g('fvu')), fmt(g('fvu_train')),
                         fmt(g('fvu_pca')), fmt(g('l0'), 1), fmt(g('dead')), fmt(g('dense')),
                         fmt(g('loss_clean')), fmt(g('loss_sae')), fmt(g('loss_mean_ablation')), fmt(g('loss_recovered')),
                         fmt(g('fvu_masked'))])
    L += [md_table(head, rows), '', '![SAE metrics by layer](sae_by_layer.png)', '']
    for s, why in info['downstream_skipped'].items():
        L += [f"Downstream check of `{s}` skipped: {why}.", '']

    L += ['## Probes', '', 'Held-out accuracy of a linear probe (multinomial logistic regression, probes.py) on the real '
          'signs, per layer; beside it the same probe trained on shuffled labels (control), the majority class and the '
          "sign-identity baseline (each sign's most frequent label in the training part: what the sign alone tells).", '']
    for task, (desc, names) in PROBE_TASKS.items():
        p0 = probes[(stage_names[0], layers[0], task)]
        head = ['layer'] + [f'{s} probe' for s in stage_names] + [f'{s} shuffled' for s in stage_names]
        rows = [[str(l)] + [fmt(probes[(s, l, task)]['probe']) for s in stage_names]
                + [fmt(probes[(s, l, task)]['shuffled']) for s in stage_names] for l in layers]
        L += [f"**{desc}** ({' / '.join(names)}; majority {fmt(p0['majority'])}, sign identity {fmt(p0['identity'])}, "
              f"{p0['n_test']} held-out signs)", '', md_table(head, rows), '']
    L += ['![probe accuracy by layer](probes_by_layer.png)', '']

    L += ['## Features', '', f"Per live latent (features_STAGE_L*.tsv): its top {info['top_n']} activations over the whole "
          'subset, the share of them in each class of the data, and the best class (the largest share above its base '
          'rate). Below: per stage and layer the number of live latents, the mean share of their top activations in '
          'their best class and in their single most frequent sign (a high sign share means token-identity features), '
          'and the most frequent best classes.', '']
    head = ['stage', 'layer', 'live latents', 'mean best-class share', 'mean top-sign share', 'most frequent best classes']
    L += [md_table(head, [[s, str(l), str(summaries[(s, l)]['live']), fmt(summaries[(s, l)]['best_share'], 2),
                           fmt(summaries[(s, l)]['sign_share'], 2), summaries[(s, l)]['classes']]
                          for s in stage_names for l in layers]), '']
    L += [f"A few latents per layer: of those active on at least {info['top_n']} tokens, the ones whose best class is "
          'the most over-represented among their top activations (share minus base rate; ties by density; at most two '
          'per class). Context: '
          'the words around the top activation, the sign marked «».', '']
    for s in stage_names:
        for l in layers:
            rows = [r for r in feats[(s, l)] if r['n_top'] >= info['top_n']]
            rows, per_class = sorted(rows, key=lambda r: (r['best_base'] - r['best_share'], -r['density'])), Counter()
            rows = [r for r in rows if per_class.update([r['best_class']]) or per_class[r['best_class']] <= 2]
            rows = rows[:info['report_features']]
            if not rows:
                continue
            L += [f"**{s}, layer {l}**", '', md_table(
                ['latent', 'density', 'top signs', 'best class (share / base)', 'top activation in context'],
                [[str(r['feature']), f"{r['density']:.3f}", r['top_signs'],
                  f"{r['best_class']} ({r['best_share']:.2f} / {r['best_base']:.2f})", r['contexts'][0]] for r in rows]), '']
    L += ['![feature density](feature_density.png)', '']
    (tmp / 'report.md').write_text('\n'.join(L) + '\n', encoding='utf-8')


# ----------------------------------------------------------------------------- main

def main():
    t0 = time.time()
    if num_threads:
        torch.set_num_threads(num_threads)
    if not out_dir:
        die("give --out_dir=DIR: a run trained with --save_artifacts=True (python train.py config/X.py --save_artifacts=True)")
    if sae not in SAE_KINDS:
        die(f"--sae must be one of {', '.join(SAE_KINDS)}, got {sae!r}")
    if expansion < 1 or sae_steps < 1 or sae_batch < 1 or top_n < 1 or (sae == 'topk' and k < 1):
        die("--expansion, --k, --sae_steps, --sae_batch and --top_n must be at least 1")
    if not 0 < heldout < 1 or not 0 < mask_rate < 1:
        die("--heldout and --mask_rate must lie strictly between 0 and 1")
    check_values(globals(), at_least={'l1_coeff': 0, 'sae_lr': 0, 'dense_threshold': 0, 'probe_weight_decay': 0,
                                      'report_features': 0, 'num_threads': 0, 'seed': 0})
    check_device(device)
    out = Path(out_dir)
    if not out.is_dir():
        die(f"{out} is not a directory: pass --out_dir of a training run")
    final_dir = Path(result_dir) if result_dir else out / 'interpret'
    check_result_dir(final_dir, out)
    stage_names = find_stages(out, stages)
    arts = {s: load_artifacts(out / f'artifacts_{s}.pt') for s in stage_names}
    layers = sorted(set.intersection(*(set(int(l) for l in a['layers']) for a in arts.values())))
    if not layers:
        die("the stages' artifacts share no layer")
    for s, a in arts.items():
        if sorted(a['layers']) != layers:
            print(f"{s}: using layers {layers} (the layers all stages have)")
    ddir = resolve_data_dir(out, stage_names, arts)
    check_dataset(ddir)
    ref = arts[stage_names[0]]
    for s, a in arts.items():
        if not torch.equal(a['token_ids'], ref['token_ids']):
            die(f"artifacts_{s}.pt holds other tokens than artifacts_{stage_names[0]}.pt: they are not of one subset")
    ids, flags, offsets, sources, split = subset_of(ddir, ref)
    meta = load_meta(ddir)
    vocab = meta.get('vocab')
    if meta.get('tokenizer') != 'vocab' or not vocab:
        die(f"{ddir}: the labels need a sign vocabulary (meta.json tokenizer 'vocab', prepare/akkadian.py)")
    tt = token_table(ids, flags, offsets, vocab, sources)
    classes = feature_classes(tt)
    plabels = probe_labels(tt)
    held, held_desc = heldout_split(len(offsets) - 1, offsets, heldout, seed)
    train_mask = ~held
    d = ref['hidden'][str(layers[0])].shape[1]
    n_latents = expansion * d
    if sae == 'topk' and k > n_latents:
        die(f"--k={k} active latents of {n_latents} (expansion {expansion} x d {d}): choose k <= {n_latents}")
    print(f"interpret: {out}, stages {', '.join(stage_names)}, layers {layers}, {len(ids):,} tokens of {len(offsets) - 1} "
          f"{split} documents ({held_desc}); {sae} SAE with {n_latents} latents")

    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f'.{final_dir.name}.{os.getpid()}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / RESULT_MARKER).write_text("written by interpret.py: the next run with this --result_dir replaces this "
                                     "folder as a whole\n")
    try:
        M, probes, feats, summaries, dens_all, saes, sae_models, skipped = {}, {}, {}, {}, {}, {}, {}, {}
        from tqdm import tqdm
        bar = tqdm(total=len(stage_names) * len(layers) * sae_steps, desc='SAEs', unit='step', disable=None)
        for s in stage_names:
            for l in layers:
                x = arts[s]['hidden'][str(l)].float()
                model_sae, tinfo = train_sae(x[torch.from_numpy(train_mask)], n_latents, sae, k, l1_coeff, sae_steps,
                                             sae_batch, sae_lr, seed, progress=bar)
                m_held, _ = sae_metrics(model_sae, x[torch.from_numpy(held)], dense_threshold)
                m_train, _ = sae_metrics(model_sae, x[torch.from_numpy(train_mask)], dense_threshold)
                z = encode_all(model_sae, x)
                dens = density(z)
                dead, dense = dead_dense(dens, dense_threshold)
                rank = max(1, round(m_held['l0']))
                ev = torch.linalg.svdvals((x - x.mean(0)).double()).pow(2)
                M.update({f'{s}_L{l}_fvu': m_held['fvu'], f'{s}_L{l}_fvu_train': m_train['fvu'],
                          f'{s}_L{l}_fvu_pca': pca_fvu(x[torch.from_numpy(train_mask)], x[torch.from_numpy(held)], rank),
                          f'{s}_L{l}_eff_dim': float(ev.sum() ** 2 / ev.pow(2).sum()),  # participation ratio of the covariance
                          f'{s}_L{l}_state_norm': float(x.norm(dim=1).mean()),
                          f'{s}_L{l}_l0': m_held['l0'], f'{s}_L{l}_l0_train': m_train['l0'],
                          f'{s}_L{l}_dead': dead, f'{s}_L{l}_dense': dense})
                dens_all[(s, l)] = dens.numpy()
                saes[f'{s}_L{l}'] = {k2: v.detach().clone() for k2, v in model_sae.state_dict().items()}
                feats[(s, l)] = rows = feature_rows(z, tt, classes, top_n)
                write_feature_tsv(tmp / f'features_{s}_L{l}.tsv', rows, list(classes))
                best = Counter(r['best_class'] for r in rows)
                summaries[(s, l)] = {'live': len(rows),
                                     'best_share': float(np.mean([r['best_share'] for r in rows])) if rows else float('nan'),
                                     'sign_share': float(np.mean([r['top_sign_share'] for r in rows])) if rows else float('nan'),
                                     'classes': ', '.join(f'{c} {n}' for c, n in best.most_common(3))}
                M[f'{s}_L{l}_live_latents'] = len(rows)
                M[f'{s}_L{l}_mean_best_class_share'] = summaries[(s, l)]['best_share']
                M[f'{s}_L{l}_mean_top_sign_share'] = summaries[(s, l)]['sign_share']
                sae_models[(s, l)] = model_sae
        bar.close()

        # downstream check: the masked-sign loss with a layer replaced
        mask_desc = (f"{mask_rate:.0%} of the target signs replaced by [MASK] (seed {seed}), cross-entropy of the true signs; "
                     "the states of this masked input are recomputed (the saved ones are of the clean input) and the "
                     "SAE, trained on clean states, replaces them.")
        for s in stage_names:
            ck = stage_checkpoint(out, s, arts[s])
            if not ck.exists():
                skipped[s] = f"no checkpoint {ck.name} of this toolkit beside the artifacts"
                continue
            model, ckpt = load_checkpoint(str(ck), device)
            check_data(ckpt, ddir, False, str(ck))
            if ckpt['model_args'].get('arch') == 'hf':  # hf_encoder.py: states pooled per sign, no pass from a layer on
                skipped[s] = "the layer-replacement check needs a model.py encoder (an hf model's states are pooled pieces)"
                continue
            if objective(ckpt['model_args'].get('arch', 'gpt')) != 'mlm':
                skipped[s] = "the masked-sign loss needs an encoder checkpoint"
                continue
            T = ckpt['model_args']['block_size']
            spans = pieces_of(offsets, T)
            x_clean = torch.from_numpy(ids)
            _, h_clean = run_pieces(model, x_clean, spans, layers)
            bad = [l for l in layers if not states_match(arts[s]['hidden'][str(l)].float(), h_clean[l])]
            if bad:
                skipped[s] = f"{ck.name} does not reproduce the saved states of layer(s) {bad}"
                continue
            sp = meta['special_ids']
            x_m, chosen = masked_input(ids, flags, spans, sp['[MASK]'], len(sp), mask_rate, seed)
            if not chosen.any():
                skipped[s] = "no target sign to mask in the subset"
                continue
            logits, h_masked = run_pieces(model, x_m, spans, layers)
            clean = masked_loss(logits, ids, chosen)
            for l in tqdm(layers, desc=f'downstream {s}', disable=None):
                mod = sae_models[(s, l)]
                with torch.no_grad():
                    recon = mod(h_masked[l])[0]
                mean = h_masked[l].mean(0)
                l_sae = masked_loss(run_pieces(model, x_m, spans, replace=(l, lambda h, m=mod: m(h)[0]))[0], ids, chosen)
                l_mean = masked_loss(run_pieces(model, x_m, spans, replace=(l, lambda h, mu=mean: mu.expand_as(h)))[0],
                                     ids, chosen)
                M.update({f'{s}_L{l}_loss_clean': clean, f'{s}_L{l}_loss_sae': l_sae, f'{s}_L{l}_loss_mean_ablation': l_mean,
                          f'{s}_L{l}_loss_recovered': ((l_mean - l_sae) / (l_mean - clean) if l_mean - clean >= MIN_ABLATION_EFFECT
                                                        else float('nan')),
                          f'{s}_L{l}_fvu_masked': fvu(h_masked[l], recon)})
            M[f'{s}_masked_signs'] = int(chosen.sum())
        for s, why in skipped.items():
            print(f"downstream check of {s} skipped: {why}")

        # probes
        real = tt['real']
        tr_idx, te_idx = np.flatnonzero(real & train_mask), np.flatnonzero(real & held)
        ids_t = torch.from_numpy(ids)
        rows_tsv = ['stage\tlayer\ttask\tprobe\tshuffled\tmajority\tidentity\tn_train\tn_test']
        for s in tqdm(stage_names, desc='probes', disable=None):
            for l in layers:
                x = arts[s]['hidden'][str(l)].float()
                for task, (_, names) in PROBE_TASKS.items():
                    y = torch.from_numpy(plabels[task])
                    ok_tr, ok_te = tr_idx[plabels[task][tr_idx] >= 0], te_idx[plabels[task][te_idx] >= 0]
                    r = probe_scores(x[ok_tr], y[ok_tr], x[ok_te], y[ok_te], ids_t[ok_tr], ids_t[ok_te], len(names),
                                     seed, probe_weight_decay)
                    r.update({'n_train': len(ok_tr), 'n_test': len(ok_te)})
                    probes[(s, l, task)] = r
                    for key in ('probe', 'shuffled', 'majority', 'identity'):
                        M[f'{s}_L{l}_probe_{task}_{key}'] = r[key]
                    rows_tsv.append('\t'.join([s, str(l), task] + [f"{r[key]:.4f}" for key in
                                                                   ('probe', 'shuffled', 'majority', 'identity')]
                                              + [str(len(ok_tr)), str(len(ok_te))]))
        (tmp / 'probes.tsv').write_text('\n'.join(rows_tsv) + '\n', encoding='utf-8')

        plot_all(tmp, stage_names, layers, M, probes, dens_all)
        seconds = time.time() - t0
        info = {'out_dir': str(out), 'data_dir': str(ddir), 'split': split, 'n_docs': len(offsets) - 1,
                'n_tokens': len(ids), 'n_real': int(real.sum()), 'heldout': held_desc, 'd': d, 'n_latents': n_latents,
                'expansion': expansion, 'sae_steps': sae_steps, 'sae_batch': sae_batch, 'sae_lr': sae_lr,
                'sae_desc': (f'TopK (Gao et al. 2024), k = {k}' if sae == 'topk' else
                             f'L1 (Bricken et al. 2023), lambda = {l1_coeff}'),
                'iters': {s: arts[s].get('iter', '?') for s in stage_names}, 'dense_threshold': dense_threshold,
                'mask_desc': mask_desc, 'downstream_skipped': skipped, 'top_n': top_n,
                'report_features': report_features, 'seconds': seconds, 'threads': torch.get_num_threads()}
        write_report(tmp, info, stage_names, layers, M, probes, feats, summaries)
        M.update({'seconds': seconds, 'tokens': len(ids), 'n_latents': n_latents, 'sae': sae})
        (tmp / 'metrics.json').write_text(json.dumps({k2: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                                      for k2, v in M.items()}, indent=1) + '\n')
        torch.save({'kind': sae, 'k': k, 'layers': layers, 'stages': stage_names, 'state_dicts': saes}, tmp / 'saes.pt')
        old = final_dir.parent / f'.{final_dir.name}.{os.getpid()}.old'
        if final_dir.exists():
            check_result_dir(final_dir, out)  # again: it may have changed while the SAEs trained
            final_dir.rename(old)
        tmp.rename(final_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_summary(stage_names, layers, M, probes)
    print(f"wrote {final_dir}/report.md (+ plots, feature tables, metrics.json) in {time.time() - t0:.0f} s")


def print_summary(stage_names, layers, M, probes):
    print('\nstage layer    FVU    PCA     L0   dead  dense  loss clean / SAE / mean-abl.')
    for s in stage_names:
        for l in layers:
            g = lambda key: M.get(f'{s}_L{l}_{key}')
            print(f"{s:>5} {l:>5} {fmt(g('fvu')):>6} {fmt(g('fvu_pca')):>6} {fmt(g('l0'), 1):>6} {fmt(g('dead')):>6} {fmt(g('dense')):>6}  "
                  f"{fmt(g('loss_clean'))} / {fmt(g('loss_sae'))} / {fmt(g('loss_mean_ablation'))}")
    print('\nprobe accuracy (held-out) by layer; [majority, sign identity]')
    for task, (desc, _) in PROBE_TASKS.items():
        p0 = probes[(stage_names[0], layers[0], task)]
        print(f"  {desc} [{fmt(p0['majority'])}, {fmt(p0['identity'])}]")
        for s in stage_names:
            print(f"    {s:>5}: " + '  '.join(f"L{l} {fmt(probes[(s, l, task)]['probe'])} (shuf {fmt(probes[(s, l, task)]['shuffled'])})"
                                          for l in layers))


if __name__ == '__main__':
    configure(globals())
    main()
