"""
Masked diffusion (mdlm) metrics: the plain MDLM NELBO of a split, the unigram entropy of the train split and
each split's cross-entropy under it, and the generative perplexity of unconditional samples under a causal gpt
trained on the same data (with the samples' unigram entropy beside it).
"""
import math
import os

import numpy as np
import torch

from checkpoint import load_checkpoint
from corpus import die, load_meta, load_tokenizer
from evals.lm import print_metrics
from objectives import diffusion_noise, nelbo


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
    """Plain MDLM NELBO of a split (objectives.nelbo with uniform masks, float64 sums): non-overlapping windows of
    block_size tokens, n_rep (t, mask) draws per window, t stratified over all windows of the split
    (objectives.diffusion_noise)."""
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
            nats += nelbo(model, x0, t_all[b0:b0 + len(chunk)], u_all[b0:b0 + len(chunk)])[0].sum().item()
            count += chunk.size
            nbytes += tbytes[np.minimum(chunk, len(tbytes) - 1)].sum()
    per_token = nats / count
    return {f'{split_name}_nelbo': per_token, f'{split_name}_ppl_bound': math.exp(min(per_token, 700)),
            f'{split_name}_bpb': nats / math.log(2) / max(nbytes, 1), f'{split_name}_tokens': int(count / n_rep)}


@torch.no_grad()
def generative_ppl(model, gpt_path, data_dir, n_samples=8, steps=128, seed=42, device='cpu', batch_size=8, judge=''):
    """Generative perplexity of unconditional MDLM samples (ddpm_cache, float64), exp(mean -log p) of the
    sampled tokens, under a judge: with judge=PATH a local Hugging Face causal LM (MDLM's gpt2-large, MDLM
    diffusion.py L514-573): the samples are decoded to text and re-tokenized with the judge's tokenizer, each
    scored after its end-of-text token in windows of its context; else the project's gpt at gpt_path trained
    on the same data (same tokenizer), each sample scored after the document separator. Always with the
    samples' unigram entropy (mean over samples of the entropy of their token frequencies, nats):
    low-temperature, repetitive samples get a low gen ppl and a low entropy (Zheng et al. 2024)."""
    from sampling import mdlm_sample
    if judge:
        score = hf_judge(judge, load_tokenizer(data_dir), device)
        judge_name = f'hf:{judge}'
    else:
        if not os.path.exists(gpt_path):
            die(f"{gpt_path} not found: train the causal baseline first (python train.py config/gpt_wikitext_cpu.py)")
        gpt, gck = load_checkpoint(gpt_path, device)
        if gck['model_args']['arch'] != 'gpt':
            die(f"{gpt_path} is a {gck['model_args']['arch']} checkpoint; --gen_ppl_ckpt needs a gpt one")
        if load_meta(data_dir).get('vocab_size') != gck['model_args']['vocab_size']:
            die(f"{gpt_path} was trained with another vocabulary; train it on {data_dir}")
        sep, Tg = load_meta(data_dir)['sep_id'], gck['model_args']['block_size']
        judge_name = f'gpt:{gpt_path}'

        def score(x):
            seq = torch.cat([torch.full((x.shape[0], 1), sep, dtype=torch.long, device=device), x], dim=1)
            nll = 0.0
            for c in range(0, x.shape[1], Tg):  # windows of the gpt's context, each with the tokens before it as targets
                inp, tgt = seq[:, c:c + Tg], seq[:, c + 1:c + Tg + 1]
                logits, _ = gpt(inp[:, :tgt.shape[1]], all_logits=True)
                nll -= torch.log_softmax(logits.double(), -1).gather(-1, tgt[..., None])[..., 0].sum().item()
            return nll, x.numel()
    T = model.cfg.block_size
    g = torch.Generator().manual_seed(seed)
    nll = count = 0.0
    ents, saved, calls = [], 0, 0
    for b0 in range(0, n_samples, batch_size):
        nb = min(batch_size, n_samples - b0)
        z = torch.full((nb, T), model.mask_id, dtype=torch.long, device=device)
        x, st = mdlm_sample(model, z, steps, True, g)
        saved, calls = saved + st['rows_saved'], calls + st['row_calls']
        a, b = score(x)
        nll, count = nll + a, count + b
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
    ppl = math.exp(nll / count)
    print(f"gen_ppl {ppl:.2f} (judge: {judge_name}; {n_samples} samples, {steps} steps)")
    return {'gen_ppl': ppl, 'gen_unigram_entropy': float(np.mean(ents)),
            'data_window_unigram_entropy': float(np.mean(ref)), 'gen_samples': n_samples,
            'gen_steps': steps, 'gen_row_calls': calls, 'gen_rows_saved': saved,
            'gen_judge_hf': int(bool(judge))}


def hf_judge(path, tok, device):
    """score(x) -> (nll, tokens) of MDLM samples x under a local Hugging Face causal LM at `path` (e.g. a
    downloaded gpt2-large): decode with the data's tokenizer, re-tokenize with the judge's, prefix its
    end-of-text token, score in windows of its context. transformers is imported only here."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        die("--gen_ppl_judge needs the `transformers` package, which is not installed (pip install transformers); "
            "or score with the project's gpt: --gen_ppl_ckpt=out-.../ckpt.pt")
    if not os.path.isdir(path):
        die(f"--gen_ppl_judge={path} is not a directory: give a local Hugging Face checkpoint (config.json, weights, tokenizer)")
    from hf_encoder import refuse_remote_code
    refuse_remote_code(path)  # a judge whose config names custom code is refused: nothing it ships is run
    try:
        jtok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        judge = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False).to(device).eval()
    except Exception as e:  # missing files, an architecture transformers lacks, ...: one line
        die(f"--gen_ppl_judge={path}: cannot load it ({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]})")
    n_ctx = getattr(judge.config, 'n_positions', None) or getattr(judge.config, 'max_position_embeddings', 1024)
    bos = jtok.bos_token_id if jtok.bos_token_id is not None else jtok.eos_token_id

    def score(x):
        nll, count = 0.0, 0
        for row in x.tolist():
            ids = [bos] + jtok.encode(tok.decode(row))
            for c in range(0, len(ids) - 1, n_ctx - 1):
                inp = torch.tensor([ids[c:c + n_ctx]], device=device)
                logits = judge(inp).logits.double()
                lp = torch.log_softmax(logits[0, :-1], -1).gather(-1, inp[0, 1:, None])[:, 0]
                nll, count = nll - lp.sum().item(), count + lp.numel()
        return nll, count
    return score


def applies(ckpt, meta, opts):
    return ckpt['model_args']['arch'] == 'mdlm'


def evaluate(model, ckpt, data_dir, splits, opts):
    """The plain NELBO of each split whatever the training options, the unigram baselines and, when a judge is
    given (gen_ppl_ckpt / gen_ppl_judge), the generative perplexity of unconditional samples."""
    res = {}
    for s in splits:
        res.update(evaluate_mdlm_split(model, ckpt, data_dir, s, opts['device'], opts['max_tokens'],
                                       opts['batch_size'], opts['seed'], opts['nelbo_samples']))
    res.update(unigram_stats(data_dir, splits))
    if opts['gen_ppl_ckpt'] or opts['gen_ppl_judge']:
        res.update(generative_ppl(model, opts['gen_ppl_ckpt'], data_dir, opts['gen_samples'], opts['gen_steps'],
                                  opts['seed'], opts['device'], judge=opts['gen_ppl_judge']))
    print_metrics(res)
    return res
