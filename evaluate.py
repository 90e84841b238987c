"""
Metrics of a checkpoint, and comparisons of runs. evaluate.py loads the run and hands its options to every
metric module of evals/ that applies to the checkpoint (lm, mdlm, akkadian, europarl, turkish, literature: each
module's applies() says when), then writes what they return to eval.json.

    python evaluate.py --out_dir=out-shakespeare-char              # val and test -> out_dir/eval.json
    python evaluate.py --out_dir=DIR --split=test --max_tokens=200000
    python evaluate.py --compare=out-a,out-b --plot=compare.png   # markdown table + loss curves

Loss is measured over the whole split (or its first max_tokens tokens) in non-overlapping windows of
block_size: mean cross-entropy in nats per token, perplexity exp(loss), bits per byte
(total bits / total UTF-8 bytes of the predicted tokens, comparable across tokenizers), and top-1
token accuracy. For a masked-LM checkpoint the loss is over masked positions (mask_rate of the
maskable ones, chosen with a fixed seed), and bits per byte are over the masked tokens' bytes.
Sums are accumulated in float64.

An encoder checkpoint of the Akkadian data (meta.json dataset 'akkadian'; evals/akkadian.py) also gets the
restoration metrics, on 'subset' (subset_size val fragments, seed 42) and 'test' (the whole test split):
masked-sign top-1/5/10 and MRR (hit@k as Lazar et al. 2021) with 15% of the target signs masked;
span restoration of L = 1..max_gap_len consecutive signs by beam search (restoration.beam_fill): top-1 and
top-5 exact match of the whole span and the sign error rate, by length and overall; the same on the
silver set of editor-restored signs; the same spans with the length hidden (unk_exact, unk_exact5,
unk_len_acc); each for the encoder alone (test_top1, ...), the default restoration scorer (test_restore_top1,
...: the product of the encoder, the n-gram and the infini-gram, weights chosen on val: restore_weight_*)
and the count baselines fit on the train split: unigram, bidirectional n-gram, infini-gram (the same search,
another scorer). Printed as a markdown table, stored in eval.json as test_top1, test_restore_top5,
test_ngram_top5, subset_span3_exact, test_unigram_span_ser, test_restore_unk_len_acc, test_silver_count, ...
(test_nll: the masked signs' cross-entropy, nats per sign). An hf checkpoint (a Hugging Face masked LM fine-tuned on
the signs, hf_encoder.py) gets the same metrics over whole signs, so --compare puts both models in one table.

An mdlm checkpoint (masked diffusion; evals/mdlm.py) reports the plain MDLM NELBO whatever its training options: windows
of block_size, one t per window stratified over the split, uniform log-linear masking, float64 sums:
{split}_nelbo (nats/token), {split}_ppl_bound = exp(nelbo) (an upper bound on perplexity),
{split}_bpb; beside them the unigram entropy of the train split and the split's cross-entropy under it.
--gen_ppl_ckpt=out-wiki-gpt/ckpt.pt (a gpt trained on the same data) adds the generative perplexity of
gen_samples unconditional samples (gen_steps steps, ddpm_cache, float64) under that gpt, always with the
samples' unigram entropy: gen_ppl, gen_unigram_entropy (nats; a low entropy means repetitive samples),
and data_window_unigram_entropy, the same measure on real windows of the same length.
--gen_ppl_judge=DIR scores them instead with a local Hugging Face causal LM (MDLM's judge is gpt2-large; the
samples are decoded and re-tokenized with its tokenizer; `transformers` is imported only then); the judge is
printed beside the number (gen_judge_hf 1 in eval.json).

A causal checkpoint (gpt or backpack) of the EN-FR data (meta.json dataset 'europarl', prepare/europarl.py)
also gets per-language perplexity / bits per byte ({split}_en_ppl, {split}_fr_bpb), translation of the
held-out pairs by prompting `<en> EN <fr>` (translate_greedy_bleu / _chrf / _exact / _word_acc / _char_acc,
the same for beam), word similarity (ws_simlex999_emb_spearman, ..._min_, ..._single, coverage counts),
cross-lingual similarity (xling_*) and, for a backpack, sense tables (printed and in out_dir/senses.txt);
see evals/europarl.py for the definitions.

A causal checkpoint of the Turkish data (meta.json dataset 'turkish') also gets the TurkMorfBench core
forced-choice accuracy (turkmorfbench_acc, _n, _chance, by group; evals/turkish.py; off with --turkmorfbench_on=False).

A causal checkpoint (atlas or gpt) of the literature data (prepare/literature.py; evals/literature.py) also gets the
masked word accuracy ({split}_masked_word_acc), the retrieval loss beyond the attention window, and for atlas the
memory-reset control ({split}_loss_no_memory, _bpb_no_memory, _retrieval_loss_no_memory) and the per-layer
memory and gate diagnostics (mem{l}_*; printed as a table). `--compare_keys=bpb,word_acc` narrows --compare.
"""
import json
import os
import sys

import numpy as np

from checkpoint import check_device, load_run, read_metrics, torch_load, write_text_atomic
from configurator import check_values, config_keys, configure
from corpus import die, load_meta, read_json
from evals import akkadian, europarl, literature, lm, mdlm, turkish

# ----------------------------------------------------------------------------- defaults
out_dir = ''
ckpt_name = 'ckpt.pt'
data_dir = ''                 # default: the checkpoint's training data
allow_other_data = False      # True: evaluate on data_dir although it is not the run's data (same tokenizer only)
use_ema = True                # the checkpoint's EMA weights when it has them (train.py ema_decay > 0); False: the raw weights
split = 'all'                 # val | test | all (every held-out split present)
max_tokens = 0                # 0 = the whole split
batch_size = 32
seed = 42
device = 'cpu'
compare = ''                  # DIR1,DIR2,...: markdown table + PNG of loss curves
compare_keys = ''             # comma-separated substrings: only metrics whose name contains one (default: all)
plot = 'compare.png'
# Akkadian restoration metrics (encoder checkpoints of data whose meta.json says dataset 'akkadian')
n_spans = 100                 # spans sampled per gap length 1..max_gap_len (and silver runs per length)
beam = 20                     # beam width of the span search
max_gap_len = 10              # longest span restored
subset_size = 500             # the 'subset' eval set: this many val fragments, chosen with seed 42
# mdlm checkpoints
nelbo_samples = 2             # (t, mask) draws per window for the NELBO
gen_ppl_ckpt = ''             # a gpt checkpoint trained on the same data: generative perplexity of samples
gen_ppl_judge = ''            # a local Hugging Face causal LM directory (e.g. gpt2-large) as the judge instead (transformers)
gen_samples = 8               # unconditional samples scored for gen_ppl
gen_steps = 128               # their denoising steps
# EN-FR checkpoints (data of prepare/europarl.py; gpt and backpack)
translate_n = 200             # europarl: held-out pairs translated (the first n that fit the context)
translate_beam = 4            # europarl: beam width (0 = greedy only)
translate_max_new = 64        # europarl: most generated tokens per translation
turkmorfbench_on = True       # turkish: TurkMorfBench core forced-choice accuracy of causal checkpoints (False = off;
                              # not named `turkmorfbench`, which is the scoring function of evals/turkish.py)
sense_words = 'file,window,table,key,open,print,right,cell,fichier,fenêtre,touche,ouvrir'  # backpack sense tables
# -----------------------------------------------------------------------------
# the options of one evaluation, with their defaults: run_eval(out_dir, ckpt_name, **overrides) hands them to every
# metric module explicitly (evals/*.py, each says when it applies), in this order:
OPTIONS = {k: globals()[k] for k in config_keys(globals()) if k not in ('out_dir', 'ckpt_name', 'compare', 'compare_keys', 'plot')}
EVALS = (lm, mdlm, akkadian, europarl, turkish, literature)
# options read by one metric module only: given for a checkpoint that module does not apply to, they are named
MODULE_OPTIONS = {akkadian: ('n_spans', 'beam', 'max_gap_len', 'subset_size'),
                  mdlm: ('nelbo_samples', 'gen_ppl_ckpt', 'gen_ppl_judge', 'gen_samples', 'gen_steps'),
                  europarl: ('translate_n', 'translate_beam', 'translate_max_new', 'sense_words'),
                  turkish: ('turkmorfbench_on',)}


def check_options(opts):
    """The values evaluate.py cannot use: one line (exit 2) before anything is loaded."""
    check_values(opts, choices={'split': ('val', 'test', 'all')},
                 at_least={'batch_size': 1, 'max_tokens': 0, 'n_spans': 1, 'beam': 1, 'max_gap_len': 1,
                           'subset_size': 1, 'nelbo_samples': 1, 'gen_samples': 1, 'gen_steps': 1, 'translate_n': 0,
                           'translate_beam': 0, 'translate_max_new': 1, 'seed': 0})
    check_device(opts['device'])


def run_eval(out_dir, ckpt_name='ckpt.pt', given=(), **overrides):
    """Every metric that applies to the checkpoint out_dir/ckpt_name -> out_dir/eval.json (eval_<data>.json
    for other data). overrides: evaluate.py's options by name (split, max_tokens, batch_size, device, ...);
    given: the options set on the command line, of which those no applicable metric reads are named in a note.
    Returns the metrics."""
    unknown = sorted(set(overrides) - set(OPTIONS))
    if unknown:
        raise TypeError(f"run_eval got unknown options {unknown}; known: {', '.join(OPTIONS)}")
    opts = {**OPTIONS, **overrides, 'out_dir': out_dir, 'ckpt_name': ckpt_name}
    check_options(opts)
    model, ckpt, data_dir = load_run(out_dir, ckpt_name, opts['device'], opts['data_dir'], opts['allow_other_data'],
                                     opts['use_ema'])
    meta = load_meta(data_dir)
    split = opts['split']
    names = [s for s in ('val', 'test') if os.path.exists(os.path.join(data_dir, f'{s}.bin'))] if split == 'all' else [split]
    for s in names:
        if not os.path.exists(os.path.join(data_dir, f'{s}.bin')):
            die(f"{data_dir} has no {s} split ({s}.bin): choose --split=val, test or all")
    res = {'iter': ckpt['iter_num'], 'params': model.num_params(), 'params_non_embedding': model.num_params(True),
           'best_val_loss': ckpt['best_val_loss'], 'ema_weights': int(ckpt['weights'] == 'ema')}
    evals_logged = [r for r in read_metrics(os.path.join(out_dir, 'metrics.jsonl')) if r.get('kind') == 'eval' and r.get('train_val_gap') is not None]
    if evals_logged:  # the held-out side of any memorisation / grokking claim, from training's own evaluations
        res['train_val_gap_last'] = evals_logged[-1]['train_val_gap']
        res['train_val_gap_min'] = min(r['train_val_gap'] for r in evals_logged)
    lm.print_metrics(res)
    unused = [k for ev, keys in MODULE_OPTIONS.items() if not ev.applies(ckpt, meta, opts) for k in keys if k in given]
    if unused:
        print(f"note: {', '.join('--' + k for k in unused)} did not apply to {out_dir} (a {ckpt['model_args'].get('arch')} "
              f"checkpoint of {meta.get('dataset', data_dir)} data): no metric of it reads them", file=sys.stderr)
    for ev in EVALS:
        if ev.applies(ckpt, meta, opts):
            res.update(ev.evaluate(model, ckpt, data_dir, names, opts))
    path = eval_path(out_dir, data_dir, ckpt)
    write_text_atomic(path, json.dumps(res, indent=1))
    print(f"wrote {path}")
    return res


def eval_path(out_dir, data_dir, ckpt):
    """out_dir/eval.json for the run's own data; out_dir/eval_<data>.json for other data (--allow_other_data)."""
    own = ckpt.get('own_data', True)
    return os.path.join(out_dir, 'eval.json' if own else f"eval_{os.path.basename(os.path.normpath(data_dir))}.json")


def seed_groups(dirs, results, configs, keys):
    """Runs whose configs differ only in seed (and out_dir; keys some run's config lacks are ignored) form one arm:
    print each metric's mean ± sample sd over its seeds, one column per arm."""
    groups = {}
    shared = set.intersection(*(set(configs[d]) for d in dirs))  # a key newer than a run's train.py is not compared
    for d in dirs:
        key = tuple(sorted((k, repr(configs[d][k])) for k in shared if k not in ('seed', 'out_dir')))
        groups.setdefault(key, []).append(d)
    arms = [g for g in groups.values() if len(g) > 1]
    if not arms:
        return
    print('\nmean ± sd over seeds (runs whose configs differ only in seed):')
    print('| metric | ' + ' | '.join(f'{g[0]} (n={len(g)})' for g in arms) + ' |\n|---|' + '---|' * len(arms))
    for k in keys:
        cells = []
        for g in arms:
            v = [results[d][k] for d in g if isinstance(results[d].get(k), (int, float))]
            cells.append(f'{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}' if len(v) > 1 else '')
        if any(cells):
            print(f'| {k} | ' + ' | '.join(cells) + ' |')


def compare_runs(dirs, plot_path, opts=None, given=()):
    """The runs' eval.json side by side (a run without one is evaluated now, with every option of this invocation:
    opts), the config keys that differ, and the loss curves -> plot_path. given: the options set on the command
    line, named when an existing eval.json is used instead (it was measured with the options of its own run)."""
    opts = {**OPTIONS, **(opts or {})}
    results, configs = {}, {}
    for d in dirs:
        if not os.path.isdir(d):
            die(f"--compare: {d} is not a directory (give training runs' out_dirs, separated by commas)")
        p = os.path.join(d, 'eval.json')
        if not os.path.exists(p) or opts['data_dir']:
            print(f"{p} missing: evaluating {d} now" if not os.path.exists(p) else f"evaluating {d} on {opts['data_dir']}")
            results[d] = run_eval(d, ckpt_name, given, **opts)
        else:
            results[d] = read_json(p, f"delete it to evaluate {d} again")
            if not isinstance(results[d], dict):
                die(f"{p} is not an object of metrics: delete it to evaluate {d} again")
            used = sorted(set(given) & set(OPTIONS))
            if used:
                print(f"{p}: the existing evaluation is shown; --{', --'.join(used)} apply only to runs evaluated "
                      f"now (delete {p} to evaluate again with them)")
        ck = os.path.join(d, ckpt_name)
        configs[d] = torch_load(ck)['config'] if os.path.exists(ck) else {}
    keys = sorted({k for r in results.values() for k in r})
    if compare_keys:
        keys = [k for k in keys if any(s in k for s in compare_keys.split(','))]
    lines = ['| metric | ' + ' | '.join(dirs) + ' |', '|---|' + '---|' * len(dirs)]
    for k in keys:
        vals = [results[d].get(k) for d in dirs]
        lines.append(f'| {k} | ' + ' | '.join('' if v is None else (f'{v:.4f}' if isinstance(v, float) else str(v)) for v in vals) + ' |')
    print('\n'.join(lines))
    seed_groups(dirs, results, configs, keys)
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
        rows = read_metrics(os.path.join(d, 'metrics.jsonl'))
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
    given = set()
    config = configure(globals(), given=given)
    check_options(config)
    if compare and out_dir:
        die("give --out_dir=DIR (one run) or --compare=DIR1,DIR2 (several), not both")
    if compare:
        if os.path.isdir(plot) or not os.path.isdir(os.path.dirname(plot) or '.'):
            die(f"--plot={plot} is a directory or in a folder that does not exist: give the path of a PNG file to write")
        dirs = [d for d in compare.split(',') if d.strip()]
        if not dirs:
            die("--compare needs the out_dirs of training runs, separated by commas: --compare=out-a,out-b")
        compare_runs(dirs, plot, {k: config[k] for k in OPTIONS}, given)
    else:
        if not out_dir:
            die("give --out_dir=DIR (a training run) or --compare=DIR1,DIR2")
        res = run_eval(out_dir, ckpt_name, given, **{k: config[k] for k in OPTIONS})
