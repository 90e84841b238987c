"""
A pretrained Hugging Face masked-LM encoder (mmBERT, ModernBERT, XLM-R, mBERT: AutoModelForMaskedLM) fine-tuned
and scored over the same signs as the from-scratch encoder (docs/pretrained.md, Phase 2).

    python hf_encoder.py tiny --out=out-hf-tiny-base [--data_dir=data/akkadian]   # a tiny local ModernBERT + tokenizer
    python hf_encoder.py audit --model=out-hf-tiny-base [--data_dir=data/akkadian] # tokenization audit -> out-audit/
    python train.py config/finetune_hf_tiny_cpu.py                                 # fine-tune it through train.py
    python train.py config/finetune_mmbert_akkadian.py                             # mmBERT-small (hub or a local copy)

The data stays the sign-level corpus. Every sign is re-tokenised alone with the pretrained model's tokenizer, as
the text " " + sign (so a sign boundary is always a piece boundary and a sign maps to its pieces); the model sees
the signs of a line separated by spaces, the same information the from-scratch encoder gets (no word boundaries).
Lost signs ([GAP]) are the ATF `x`, gaps of unknown length ([GAPN]) the ATF `...`, the separator is the
tokenizer's separator, and every fragment is one row [CLS] pieces [SEP], so attention never crosses fragments.

Training (HFSignEncoder.forward with targets): train.py masks signs exactly as for the encoder (objectives.py);
a masked sign becomes all of its pieces masked (whole-word masking, Devlin et al. 2019's later release), a sign
replaced by a random sign becomes as many random pieces, and the loss is the cross-entropy of the true pieces
(nats per masked piece: not comparable with the encoder's val_loss; the comparable numbers are evaluate.py's).

Scoring (HFSignEncoder.forward without targets, the score_fn interface of restoration.py): at every [MASK] sign the
log-probability of each candidate sign c of the sign vocabulary, from the pieces' joint score for c's piece count:
for each piece count k, every [MASK] becomes k mask pieces and
    log s(c | x) = sum_{j=1..k} log p_theta(piece_j(c) | x with k masks at the gap),   k = |pieces(c)|,
the pieces taken as conditionally independent given the context (one forward pass per piece count). A model
fine-tuned with whole-sign masking has learnt that k masks hide a k-piece sign, so s says nothing about k itself:
the piece count is an unknown of the same kind as a gap's length, and is treated as restoration.restore_gaps
treats lengths, with the train split's distribution P(k) of the signs' piece counts:
    log p(c | x) = log P(k_c) + log s(c | x) - log sum_{c': k_c' = k_c} s(c' | x)
(count_logprior; without it, the raw joint scores of all candidates are normalised together, which in the tiny
CPU run of docs/pretrained.md ranked a one-piece sign first at 372 of 453 masked signs, 22% being one piece).
Both models are thus ranked over the same candidates, in the same units (restoration.encoder_scorer's
log_softmax leaves this distribution unchanged).

transformers is imported here only, and only when an hf: model is used. Nothing it loads may run code: every load
passes trust_remote_code=False, and a model folder or a checkpoint whose stored config or tokenizer config names
custom code (`auto_map`) is refused with one line before transformers sees it.
"""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from atf import FLAG_SIGN, FLAG_WORD_START
from corpus import check_dataset, die, excerpt, load_meta, loads_json

HF_PREFIX = 'hf:'
# padded (R, L, d) states through every layer: HFSignEncoder._only indexes the decoder's input by (row, column);
# ModernBERT's flash-attention path would hand it unpadded (N, d) states instead
ATTN = 'sdpa'
GAP_TEXT = {'[GAP]': 'x', '[GAPN]': '...'}  # the ATF a lost sign and a gap of unknown length are written in


def sign_text(sign):
    """The text a sign is tokenised as: one space-led word."""
    return ' ' + GAP_TEXT.get(sign, sign)


def piece_specials(tok):
    """{'pad', 'unk', 'cls', 'sep', 'mask'}: piece ids of the tokenizer's specials ([CLS]/[SEP] fall back to
    BOS/EOS, as in XLM-R's <s> </s>). A tokenizer without a mask token cannot do masked LM: one line."""
    sp = {'pad': tok.pad_token_id, 'unk': tok.unk_token_id, 'cls': tok.cls_token_id, 'sep': tok.sep_token_id,
          'mask': tok.mask_token_id}
    sp['cls'] = sp['cls'] if sp['cls'] is not None else tok.bos_token_id
    sp['sep'] = sp['sep'] if sp['sep'] is not None else tok.eos_token_id
    if sp['mask'] is None:
        die(f"the tokenizer of {tok.name_or_path} has no mask token: it is not a masked-LM tokenizer")
    if sp['pad'] is None:
        sp['pad'] = sp['sep'] if sp['sep'] is not None else sp['mask']
    return sp


def sign_pieces(tok, itos, n_lead):
    """Piece ids of every sign of the sign vocabulary `itos` (ids < n_lead are its specials): a real sign is
    tokenised as sign_text(sign) with no special tokens; [PAD] [UNK] [CLS] [SEP] [MASK] are the tokenizer's own."""
    sp = piece_specials(tok)
    fixed = {'[PAD]': sp['pad'], '[UNK]': sp['unk'], '[CLS]': sp['cls'], '[SEP]': sp['sep'], '[MASK]': sp['mask']}
    out = []
    for i, s in enumerate(itos):
        if i < n_lead and s in fixed and fixed[s] is not None:
            out.append([int(fixed[s])])
            continue
        ids = tok(sign_text(s), add_special_tokens=False)['input_ids']
        out.append([int(t) for t in ids] or [int(sp['unk'] if sp['unk'] is not None else sp['mask'])])
    return out


class HFSignConfig:
    """What the toolkit reads of a model's cfg (block_size in signs, n_layer, doc_mask, ...)."""

    def __init__(self, block_size, vocab_size, n_layer, n_embd, n_head, doc_mask=True):
        self.arch, self.block_size, self.vocab_size = 'hf', block_size, vocab_size
        self.n_layer, self.n_embd, self.n_head, self.doc_mask = n_layer, n_embd, n_head, doc_mask
        self.head_dim = n_embd // max(n_head, 1)


class HFSignEncoder(nn.Module):
    """A Hugging Face masked LM behind model.Encoder's interface over sign ids (see the module docstring):
    forward(idx, targets) -> (None, piece-level MLM loss); forward(idx) -> (B, T, V) sign scores at the [MASK]
    signs (the joint piece score of every candidate; 0 elsewhere); trunk(idx, doc, layers) -> hidden states
    pooled per sign (mean of its pieces), aligned position by position with the encoder's."""

    def __init__(self, hf, pieces, n_lead, mask_sign, specials, block_size, doc_mask=True, max_positions=0,
                 count_logprior=None):
        super().__init__()
        self.hf = hf
        self.pieces = [list(p) for p in pieces]
        self.count_logprior = {int(k): float(v) for k, v in count_logprior.items()} if count_logprior else None
        self.n_lead, self.mask_sign, self.sp = n_lead, mask_sign, dict(specials)
        c = hf.config
        self.cfg = HFSignConfig(block_size, len(pieces), getattr(c, 'num_hidden_layers', 0),
                                getattr(c, 'hidden_size', 0), getattr(c, 'num_attention_heads', 0), doc_mask)
        self.max_positions = max_positions or getattr(c, 'max_position_embeddings', 0) or 0
        n_piece = hf.get_input_embeddings().weight.shape[0]
        special = {v for v in self.sp.values() if v is not None}
        self.register_buffer('rand_pool', torch.tensor([i for i in range(n_piece) if i not in special]), persistent=False)
        # candidates grouped by piece count: k -> (sign ids, (n_k, k) piece ids); real signs only
        by_len = {}
        for s in range(n_lead, len(pieces)):
            by_len.setdefault(len(pieces[s]), []).append(s)
        self.piece_counts = sorted(by_len)
        for k in self.piece_counts:
            self.register_buffer(f'cand_{k}', torch.tensor(by_len[k]), persistent=False)
            self.register_buffer(f'cand_pieces_{k}', torch.tensor([pieces[s] for s in by_len[k]]), persistent=False)

    @property
    def device(self):
        return self.hf.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ signs -> piece rows
    def rows(self, idx, targets=None, doc=None, k_mask=None):
        """Piece rows of a batch of sign windows. Each window is cut at its document boundaries (doc, when the
        model uses document masks) and every part becomes one row [CLS] pieces [SEP], padded.
        With targets (training): a target sign (targets >= 0) takes the length of its true pieces: all masked if
        the input there is [MASK], its own pieces if kept, random pieces if replaced; labels = its true pieces.
        With k_mask (scoring): every [MASK] sign becomes k_mask mask pieces.
        Returns (input_ids (R, L), attention_mask (R, L), labels (R, L) or None, owner (R, L): b * T + t of the
        sign each piece belongs to, -1 for [CLS] [SEP] and padding)."""
        idx = idx.cpu()
        B, T = idx.shape
        tg = targets.cpu() if targets is not None else None
        cut = doc is not None and self.cfg.doc_mask
        dc = doc.cpu() if cut else None
        sp = self.sp
        rows, labs, owners = [], [], []
        for b in range(B):
            xb = idx[b].tolist()
            yb = tg[b].tolist() if tg is not None else None
            starts = [0] + ([t for t in range(1, T) if dc[b, t] != dc[b, t - 1]] if cut else []) + [T]
            for s0, s1 in zip(starts[:-1], starts[1:]):
                ids, lab, own = [sp['cls']], [-100], [-1]
                for t in range(s0, s1):
                    x = xb[t]
                    if yb is not None and yb[t] >= 0:
                        true = self.pieces[yb[t]]
                        if x == self.mask_sign:
                            p = [sp['mask']] * len(true)
                        elif x == yb[t]:
                            p = true
                        else:  # a random sign: as many random pieces (BERT's random replacement, per piece)
                            p = self.rand_pool[torch.randint(len(self.rand_pool), (len(true),))].tolist()
                        lab += true
                    else:
                        p = [sp['mask']] * k_mask if (k_mask and x == self.mask_sign) else self.pieces[x]
                        lab += [-100] * len(p)
                    ids += p
                    own += [b * T + t] * len(p)
                ids.append(sp['sep'])
                lab.append(-100)
                own.append(-1)
                rows.append(ids)
                labs.append(lab)
                owners.append(own)
        L = max(len(r) for r in rows)
        if self.max_positions and L > self.max_positions:
            die(f"a window of {T} signs is {L} pieces, more than the {self.max_positions} positions of the pretrained "
                f"model: lower block_size")
        pad = lambda r, v: r + [v] * (L - len(r))
        ids = torch.tensor([pad(r, sp['pad']) for r in rows])
        att = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows])
        own = torch.tensor([pad(o, -1) for o in owners])
        lab = torch.tensor([pad(l, -100) for l in labs]) if targets is not None else None
        dev = self.device
        return ids.to(dev), att.to(dev), (lab.to(dev) if lab is not None else None), own.to(dev)

    @contextmanager
    def _only(self, where):
        """Compute the output layer (the MLM decoder over the piece vocabulary) only at positions `where`
        ((rows, cols) index tensors): the logits are then (N, V_pieces) instead of (R, L, V_pieces), which for
        mmBERT's 256k pieces is the difference between megabytes and tens of gigabytes."""
        out = self.hf.get_output_embeddings()
        if out is None:  # no separate decoder: the full logits are computed and indexed afterwards
            yield False
            return
        def only(mod, args):
            if args[0].dim() != 3:
                raise RuntimeError(f"the output layer of {type(self.hf).__name__} got states of shape {tuple(args[0].shape)}, "
                                   f"not (rows, pieces, d): load it with attn_implementation={ATTN!r}")
            return (args[0][where],) + tuple(args[1:])
        h = out.register_forward_pre_hook(only)
        try:
            yield True
        finally:
            h.remove()

    def _logits_at(self, ids, att, where):
        with self._only(where) as sparse:
            logits = self.hf(input_ids=ids, attention_mask=att).logits
        return logits if sparse else logits[where]

    # ------------------------------------------------------------------ the toolkit's interface
    def forward(self, idx, targets=None, doc=None, **_):
        if targets is not None:
            ids, att, lab, _ = self.rows(idx, targets, doc)
            where = torch.nonzero(lab >= 0, as_tuple=True)
            if len(where[0]) == 0:  # nothing masked in this batch: a zero loss that still has a graph
                return None, self.hf.get_input_embeddings().weight.sum() * 0.0
            logits = self._logits_at(ids, att, where)
            return None, F.cross_entropy(logits.float(), lab[where])
        return self.sign_scores(idx, doc), None

    @torch.no_grad()
    def sign_scores(self, idx, doc=None):
        """(B, T, V) float32: at every [MASK] sign, log p(c | x) of each real sign c (the module docstring: the joint
        piece score, normalised within each piece count and weighted by P(k) when count_logprior is set, else
        the raw joint score); -inf for the specials; 0 at every other position (rows no search reads)."""
        B, T = idx.shape
        V = len(self.pieces)
        out = torch.zeros(B, T, V, device=self.device)
        masked = torch.nonzero(idx.cpu() == self.mask_sign, as_tuple=False)
        if len(masked) == 0:
            return out
        mb, mt = masked[:, 0].to(self.device), masked[:, 1].to(self.device)
        rows_m = torch.full((len(masked), V), float('-inf'), device=self.device)
        for k in self.piece_counts:
            ids, att, _, own = self.rows(idx, None, doc, k_mask=k)
            is_mask = (ids == self.sp['mask']) & (own >= 0)
            where = torch.nonzero(is_mask, as_tuple=True)   # row-major: sign by sign (b, t order), piece by piece
            logp = torch.log_softmax(self._logits_at(ids, att, where).float(), -1).view(len(masked), k, -1)
            cand, cp = getattr(self, f'cand_{k}'), getattr(self, f'cand_pieces_{k}')   # (n_k,), (n_k, k)
            # sum_j log p(piece_j(c) | x with k masks): gather piece j of every candidate at mask j
            sc = logp.gather(2, cp.T[None].expand(len(masked), k, len(cand))).sum(1)
            if self.count_logprior is not None:  # log P(k) + log s(c) - log sum over the k-piece signs of s
                sc = sc - torch.logsumexp(sc, 1, keepdim=True) + self.count_logprior[k]
            rows_m[:, cand] = sc
        out[mb, mt] = rows_m
        return out

    @torch.no_grad()
    def trunk(self, idx, doc=None, hidden_layers=None):
        """Hidden states pooled per sign: (final (B, T, d), {layer: (B, T, d)}), layer 0 = the embedding output
        and layer i = the output of block i, as model.Trunk; a sign's state is the mean over its pieces."""
        B, T = idx.shape
        ids, att, _, own = self.rows(idx, None, doc)
        hs = self.hf(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
        keep = own >= 0
        o = own[keep]
        count = torch.zeros(B * T, device=self.device).index_add_(0, o, torch.ones(len(o), device=self.device))

        def pool(h):
            h = h.float()
            s = torch.zeros(B * T, h.shape[-1], device=self.device).index_add_(0, o, h[keep])
            return (s / count.clamp(min=1)[:, None]).view(B, T, -1)
        layers = {l: pool(hs[l]) for l in (hidden_layers or ()) if 0 <= l < len(hs)}
        return pool(hs[-1]), layers

    @torch.no_grad()
    def sign_embeddings(self):
        """(V_signs, d): the input embedding of every sign, the mean of its pieces' input embeddings."""
        E = self.hf.get_input_embeddings().weight.detach().float()
        return torch.stack([E[torch.tensor(p, device=E.device)].mean(0) for p in self.pieces])

    def num_params(self, non_embedding=False):
        n = sum(p.numel() for p in self.parameters())
        return n - (self.hf.get_input_embeddings().weight.numel() if non_embedding else 0)

    def flops_per_token(self, T=None):
        """6N per piece (nanoGPT's estimate without the attention term): bench.py's MFU is approximate here."""
        return 6 * self.num_params()


# ----------------------------------------------------------------------------- building, checkpoints

def _hf_source(init_from):
    src = init_from[len(HF_PREFIX):] if init_from.startswith(HF_PREFIX) else init_from
    if not src:
        die("init_from='hf:' needs a model: hf:jhu-clsp/mmBERT-small (the hub) or hf:PATH (a save_pretrained directory)")
    return src


REMOTE_CODE_FILES = ('config.json', 'tokenizer_config.json', 'processor_config.json', 'preprocessor_config.json')
# sane bounds on a stored Hugging Face config, checked before anything is built (mmBERT: 22 layers, 256k pieces)
HF_LIMITS = {'num_hidden_layers': 1024, 'hidden_size': 65536, 'intermediate_size': 1 << 20, 'vocab_size': 1 << 22,
             'num_attention_heads': 1024, 'max_position_embeddings': 1 << 22}


def remote_code_problem(cfg):
    """Why a Hugging Face config (a dict) would need code from outside transformers, or None."""
    if not isinstance(cfg, dict):
        return f"it is a {type(cfg).__name__}, not a JSON object"
    if cfg.get('auto_map'):
        return f"it names custom code (auto_map: {excerpt(cfg['auto_map'], 80)})"
    return None


def refuse_remote_code(src):
    """A local model folder whose configs name custom code ends the program with one line: this toolkit never runs
    code that comes with a model (transformers would offer to, at a prompt). A hub id is guarded by
    trust_remote_code=False in every from_pretrained."""
    if not os.path.isdir(src):
        return
    for name in REMOTE_CODE_FILES:
        p = Path(src) / name
        if p.is_file():
            try:
                problem = remote_code_problem(loads_json(p.read_text(encoding='utf-8')))
            except (OSError, ValueError) as e:
                problem = f"it is not readable JSON ({str(e).splitlines()[0][:80]})"
            if problem:
                die(f"{p}: refused: {problem}; this toolkit loads only models transformers can build itself")


def check_hf_model_args(margs, what='the checkpoint'):
    """The model_args of an hf: run, checked before anything is built: the stored config is JSON without custom
    code and with sane sizes (HF_LIMITS), the stored tokenizer files are plain file names whose configs name no
    custom code, and the sign table is a list of piece-id lists."""
    try:
        cfg = loads_json(margs['hf_config'])
    except (KeyError, TypeError, ValueError) as e:
        die(f"{what}: its stored Hugging Face config is not readable ({str(e).splitlines()[0][:80]})")
    problem = remote_code_problem(cfg)
    if problem:
        die(f"{what}: refused: its stored Hugging Face config {problem.removeprefix('it ')}; this toolkit loads only "
            f"models transformers can build itself")
    for k, bound in HF_LIMITS.items():
        v = cfg.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= bound):
            die(f"{what}: its stored Hugging Face config has {k}={excerpt(v)}, beyond the sane bound of {bound:,}")
    files = margs.get('hf_tokenizer')
    if not isinstance(files, dict) or not all(_plain_file_name(n) and isinstance(t, torch.Tensor) for n, t in files.items()):
        die(f"{what}: its stored tokenizer files are not plain file names with byte tensors")
    for name in REMOTE_CODE_FILES:
        if name in files:
            try:
                problem = remote_code_problem(loads_json(files[name].numpy().tobytes().decode('utf-8')))
            except (ValueError, UnicodeDecodeError) as e:
                problem = f"it is not readable JSON ({str(e).splitlines()[0][:80]})"
            if problem:
                die(f"{what}: refused: its stored {name} {problem.removeprefix('it ')}")
    pieces = margs.get('sign_pieces')
    if not isinstance(pieces, list) or not all(isinstance(p, list) and p and all(isinstance(i, int) for i in p)
                                               for p in pieces):
        die(f"{what}: its sign_pieces is not a list of piece-id lists")


def _plain_file_name(name):
    return isinstance(name, str) and name not in ('', '.', '..') and os.path.basename(name) == name and '\\' not in name \
        and '\0' not in name


def _files_to_tensors(d):
    return {p.name: torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in sorted(Path(d).iterdir())
            if p.is_file()}


def _tensors_to_files(files, d):
    """Write the stored tokenizer files into the folder d: their names come from a checkpoint, so only plain file
    names are written (never a path that could leave d)."""
    for name, t in files.items():
        if not _plain_file_name(name):
            die(f"refused: a stored tokenizer file is named {excerpt(name)}, not a plain file name")
        (Path(d) / name).write_bytes(t.numpy().tobytes())


def load_tokenizer_hf(src):
    from transformers import AutoTokenizer
    refuse_remote_code(src)
    try:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    except Exception as e:  # hub errors, missing files, ...: one line
        die(f"cannot load the tokenizer of {src!r} ({str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}); "
            f"give a local directory written by save_pretrained, or a hub id reachable from this machine")


def piece_count_logprior(pieces, data_dir, n_lead):
    """{k: log P(k)}: the distribution of piece counts over the real-sign tokens of the train split, add-one
    smoothed over the counts that some sign of the vocabulary has."""
    ids = np.fromfile(os.path.join(data_dir, 'train.bin'), dtype=np.uint16).astype(np.int64)
    fl = np.fromfile(os.path.join(data_dir, 'train.flags.bin'), dtype=np.uint8)
    n_p = np.array([len(p) for p in pieces])
    ks = sorted({int(n_p[s]) for s in range(n_lead, len(pieces))})
    c = np.bincount(n_p[ids[((fl & FLAG_SIGN) != 0) & (ids >= n_lead)]], minlength=max(ks) + 1)
    tot = sum(c[k] + 1 for k in ks)
    return {k: float(np.log((c[k] + 1) / tot)) for k in ks}


def hf_model_args(init_from, data_dir, block_size, doc_mask=True):
    """model_args of an hf: run: the pretrained config and tokenizer files (so a checkpoint rebuilds offline),
    the sign -> pieces table of the data's sign vocabulary, the train split's piece-count prior, and the
    sign-level sizes."""
    from transformers import AutoConfig
    meta = load_meta(data_dir)
    src = _hf_source(init_from)
    tok = load_tokenizer_hf(src)
    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=False)
    except Exception as e:
        die(f"cannot load the config of {src!r} ({(str(e).strip().splitlines() or [''])[0][:160]})")
    if meta.get('tokenizer') != 'vocab':
        die(f"an hf: model fine-tunes on a sign-level (vocab) dataset such as data/akkadian; this one is {meta.get('tokenizer')!r}")
    itos = meta['vocab']
    n_lead = meta.get('n_specials', len(meta.get('special_ids', {})))
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        files = _files_to_tensors(d)
    pieces = sign_pieces(tok, itos, n_lead)
    return {'arch': 'hf', 'hf_source': src, 'hf_config': config.to_json_string(), 'hf_tokenizer': files,
            'sign_pieces': pieces, 'piece_specials': piece_specials(tok),
            'piece_count_logprior': {str(k): v for k, v in piece_count_logprior(pieces, data_dir, n_lead).items()},
            'n_lead': n_lead, 'mask_sign': meta['special_ids']['[MASK]'], 'vocab_size': meta['vocab_size'],
            'block_size': block_size, 'doc_mask': bool(doc_mask)}


def build_hf(model_args, pretrained=None):
    """The HFSignEncoder of model_args: with pretrained (an hf: init_from), the pretrained weights; without, the
    architecture from the stored config (a checkpoint's weights are loaded after this)."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # one 'Loading weights' bar per load would fill the logs
    if pretrained:
        src = _hf_source(pretrained)
        refuse_remote_code(src)
        try:  # float32 weights: train.py's autocast picks the compute dtype
            hf = AutoModelForMaskedLM.from_pretrained(src, dtype=torch.float32, attn_implementation=ATTN,
                                                      trust_remote_code=False)
        except Exception as e:
            die(f"cannot load the masked-LM weights of {src!r} ({(str(e).strip().splitlines() or [''])[0][:160]})")
    else:
        check_hf_model_args(model_args)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / 'config.json').write_text(model_args['hf_config'])
            config = AutoConfig.from_pretrained(d, trust_remote_code=False)
        hf = AutoModelForMaskedLM.from_config(config, attn_implementation=ATTN, trust_remote_code=False)
    return HFSignEncoder(hf, model_args['sign_pieces'], model_args['n_lead'], model_args['mask_sign'],
                         model_args['piece_specials'], model_args['block_size'], model_args.get('doc_mask', True),
                         count_logprior=model_args.get('piece_count_logprior'))


def hf_tokenizer_of(model_args):
    """The tokenizer stored in an hf: checkpoint's model_args (offline)."""
    from transformers import AutoTokenizer
    check_hf_model_args(model_args)
    with tempfile.TemporaryDirectory() as d:
        _tensors_to_files(model_args['hf_tokenizer'], d)
        return AutoTokenizer.from_pretrained(d, trust_remote_code=False)


# ----------------------------------------------------------------------------- a tiny local model (offline path)

def atf_lines(data_dir, split='train'):
    """The lines of a sign-level split as ATF-like text: `-` inside a word, a space before a word start, one
    fragment per line (x for a lost sign, ... for a gap of unknown length)."""
    from restoration import read_fragments
    itos = load_meta(data_dir)['vocab']
    lines = []
    for ids, fl in read_fragments(data_dir, split):
        s = ''
        for i, f in zip(ids.tolist(), fl.tolist()):
            w = GAP_TEXT.get(itos[i], itos[i])
            s += (' ' if s and f & FLAG_WORD_START else ('-' if s else '')) + w
        lines.append(s)
    return lines


def build_tiny(out, data_dir='data/akkadian', text_file='', vocab=256, d=128, layers=2, heads=4, kind='modernbert',
               seed=0):
    """A tiny randomly initialised ModernBERT (or BERT) and a BPE tokenizer (HF tokenizers, Metaspace, [UNK] for
    unseen characters) trained on text_file or on the ATF lines of the data's train split, both written with
    save_pretrained to `out`: the offline stand-in for a hub model (nothing in it is pretrained)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoModelForMaskedLM, BertConfig, ModernBertConfig, PreTrainedTokenizerFast
    if text_file:
        try:
            text = Path(text_file).read_bytes().decode('utf-8-sig').splitlines()
        except (OSError, UnicodeDecodeError) as e:
            die(f"--text_file={text_file} is not a readable UTF-8 text file ({str(e).splitlines()[0][:80]})")
    else:
        text = atf_lines(data_dir)
    if not any(t.strip() for t in text):
        die(f"{text_file or data_dir}: no text to train the tokenizer on")
    specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    t = Tokenizer(models.BPE(unk_token='[UNK]'))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    t.train_from_iterator(text, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token='[PAD]', unk_token='[UNK]', cls_token='[CLS]',
                                  sep_token='[SEP]', mask_token='[MASK]')
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    common = dict(vocab_size=len(tok), hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * d, max_position_embeddings=2048, pad_token_id=ids['[PAD]'])
    if kind == 'modernbert':
        cfg = ModernBertConfig(**common, global_attn_every_n_layers=1, local_attention=128, cls_token_id=ids['[CLS]'],
                               sep_token_id=ids['[SEP]'], bos_token_id=ids['[CLS]'], eos_token_id=ids['[SEP]'],
                               mask_token_id=ids['[MASK]'])
    elif kind == 'bert':
        cfg = BertConfig(**common)
    else:
        die(f"--kind must be modernbert or bert, got {kind!r}")
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(cfg, trust_remote_code=False)
    out = Path(out)
    if tiny_out_problem(out):
        die(tiny_out_problem(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f'.{out.name}.{os.getpid()}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # written beside, then swapped in: never half a model folder
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / TINY_MARKER).write_text("written by hf_encoder.py tiny: the next build into this folder replaces it\n")
        if out.exists():
            shutil.rmtree(out)  # empty, or an earlier tiny model (checked above): nothing a user made
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: a random-init {kind} ({layers} x {d}, {n / 1e6:.2f}M parameters) and a {len(tok)}-piece BPE "
          f"tokenizer trained on {text_file or f'the train split of {data_dir}'} ({len(text)} lines)")


# ----------------------------------------------------------------------------- tokenization audit

def sign_class(s):
    """determinative {d} | index (a value with a homophone index digit: ša2, u2) | logogram (upper case) |
    number | syllabic; specials are not signs."""
    if s.startswith('{') and s.endswith('}'):
        return 'determinative'
    if s[:1].isdigit():
        return 'number'
    if any(ch.isupper() for ch in s):
        return 'logogram'
    if s[-1:].isdigit() or s.endswith('ₓ'):
        return 'index'
    return 'syllabic'


def tokenization_audit(tok, data_dir, split='train', top=15):
    """The Phase-2 tokenization audit of a pretrained tokenizer on the sign-level data (counts over the sign
    tokens of `split`): [UNK] rate, pieces per sign and per word (sign-bounded, as the model sees them, and the
    ATF word tokenised whole), the share of single-piece signs, the most fragmented signs, and how each sign
    class (determinatives, logograms, indexed values such as ša2, numbers, plain syllables) is split."""
    from restoration import read_fragments
    meta = load_meta(data_dir)
    itos, n_lead = meta['vocab'], meta.get('n_specials', len(meta['special_ids']))
    P = sign_pieces(tok, itos, n_lead)
    unk = tok.unk_token_id
    frags = read_fragments(data_dir, split)
    ids = np.concatenate([i for i, _ in frags]) if frags else np.zeros(0, np.int64)
    fl = np.concatenate([f for _, f in frags]) if frags else np.zeros(0, np.uint8)
    real = ((fl & FLAG_SIGN) != 0) & (ids >= n_lead)
    n_p = np.array([len(p) for p in P])
    has_unk = np.array([unk is not None and unk in p for p in P])
    signs = ids[real]
    if len(signs) == 0:
        die(f"{data_dir} {split} has no real signs to audit")
    res = {'tokenizer': tok.name_or_path, 'data_dir': str(data_dir), 'split': split, 'signs': int(len(signs)),
           'sign_types': int(len(np.unique(signs))), 'piece_vocab': len(tok)}
    pieces_tok = n_p[signs]
    res['pieces_per_sign'] = float(pieces_tok.mean())
    res['single_piece_share'] = float((pieces_tok == 1).mean())
    res['single_piece_share_types'] = float((n_p[np.unique(signs)] == 1).mean())
    res['unk_piece_rate'] = float(sum(P[s].count(unk) for s in signs) / pieces_tok.sum()) if unk is not None else 0.0
    res['unk_sign_rate'] = float(has_unk[signs].mean())
    # words: a word starts at a word-start flag; its signs are the sign tokens up to the next word start
    words, cur = [], []
    for i, f in zip(ids.tolist(), fl.tolist()):
        if f & FLAG_WORD_START and cur:
            words.append(cur)
            cur = []
        if f & FLAG_WORD_START or cur:
            cur.append(i)
    if cur:
        words.append(cur)
    words = [w for w in words if all(i >= n_lead for i in w)]
    res['words'] = len(words)
    res['pieces_per_word'] = float(np.mean([sum(n_p[i] for i in w) for w in words])) if words else 0.0
    whole = {}
    for w in words:
        k = '-'.join(itos[i] for i in w)
        if k not in whole:
            whole[k] = len(tok(' ' + k, add_special_tokens=False)['input_ids'])
    res['pieces_per_word_atf'] = float(np.mean([whole['-'.join(itos[i] for i in w)] for w in words])) if words else 0.0
    counts = np.bincount(signs, minlength=len(itos))
    show = lambda s: {'sign': itos[s], 'count': int(counts[s]), 'pieces': tok.convert_ids_to_tokens(P[s])}
    seen = [s for s in np.unique(signs).tolist()]
    res['most_fragmented'] = [show(s) for s in sorted(seen, key=lambda s: (-n_p[s], -counts[s]))[:top]]
    res['classes'] = {}
    for c in ('determinative', 'logogram', 'index', 'number', 'syllabic'):
        cs = [s for s in seen if sign_class(itos[s]) == c]
        if not cs:
            continue
        w = counts[cs]
        res['classes'][c] = {'types': len(cs), 'tokens': int(w.sum()),
                             'pieces_per_sign': float((n_p[cs] * w).sum() / w.sum()),
                             'single_piece_share': float(((n_p[cs] == 1) * w).sum() / w.sum()),
                             'unk_sign_rate': float((has_unk[cs] * w).sum() / w.sum()),
                             'examples': [show(s) for s in sorted(cs, key=lambda s: -counts[s])[:8]]}
    return res


def audit_table(res):
    """The audit as markdown."""
    L = [f"tokenization audit of {res['tokenizer']} ({res['piece_vocab']:,} pieces) on {res['data_dir']} {res['split']}: "
         f"{res['signs']:,} signs ({res['sign_types']:,} types), {res['words']:,} words", '',
         '| measure | value |', '|---|---:|']
    for k in ('unk_piece_rate', 'unk_sign_rate', 'pieces_per_sign', 'single_piece_share', 'single_piece_share_types',
              'pieces_per_word', 'pieces_per_word_atf'):
        L.append(f'| {k} | {res[k]:.3f} |')
    L += ['', '| class | types | tokens | pieces/sign | single-piece share | [UNK] share | most frequent: pieces |',
          '|---|---:|---:|---:|---:|---:|---|']
    for c, r in res['classes'].items():
        ex = '; '.join(f"{e['sign']}: {' '.join(e['pieces'])}" for e in r['examples'][:5])
        L.append(f"| {c} | {r['types']} | {r['tokens']} | {r['pieces_per_sign']:.2f} | {r['single_piece_share']:.3f} | "
                 f"{r['unk_sign_rate']:.3f} | {ex} |")
    L += ['', 'most fragmented signs: ' + '; '.join(f"{e['sign']} (x{e['count']}): {' '.join(e['pieces'])}"
                                                    for e in res['most_fragmented'])]
    return '\n'.join(L)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('tiny', help='build a tiny local ModernBERT/BERT + tokenizer with save_pretrained')
    a.add_argument('--out', required=True)
    a.add_argument('--data_dir', default='data/akkadian')
    a.add_argument('--text_file', default='', help='train the tokenizer on this text instead of the data')
    a.add_argument('--vocab', type=int, default=256)
    a.add_argument('--d', type=int, default=128)
    a.add_argument('--layers', type=int, default=2)
    a.add_argument('--heads', type=int, default=4)
    a.add_argument('--kind', default='modernbert')
    a.add_argument('--seed', type=int, default=0)
    b = sub.add_parser('audit', help='tokenization audit of a pretrained tokenizer on the sign-level data')
    b.add_argument('--model', required=True, help='hub id or local directory (a tokenizer is enough)')
    b.add_argument('--data_dir', default='data/akkadian')
    b.add_argument('--split', default='train')
    b.add_argument('--out', default='', help="JSON file (default: out-audit/tokenization_audit_<model>.json)")
    args = ap.parse_args(argv)
    if args.cmd == 'tiny':
        check_tiny_args(args)
        build_tiny(args.out, args.data_dir, args.text_file, args.vocab, args.d, args.layers, args.heads, args.kind, args.seed)
        return
    if args.split not in ('train', 'val', 'test'):
        die(f"--split must be train, val or test, got {args.split!r}")
    check_sign_data(args.data_dir, args.split)
    out = args.out or os.path.join('out-audit', f"tokenization_audit_{_hf_source(args.model).strip('/').replace('/', '_')}.json")
    if os.path.isdir(out) or (os.path.dirname(out) and os.path.exists(os.path.dirname(out))
                              and not os.path.isdir(os.path.dirname(out))):
        die(f"--out={out} is a directory or lies under a file: give the path of the JSON file to write")
    tok = load_tokenizer_hf(_hf_source(args.model))
    res = tokenization_audit(tok, args.data_dir, args.split)
    print(audit_table(res))
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    tmp = out + f'.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(res, f, indent=1, ensure_ascii=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out}")


def check_sign_data(data_dir, split='train'):
    """A sign-level dataset of prepare/akkadian.py (a vocab tokenizer and damage/word flags) with this split, or
    one line saying what is needed."""
    meta = load_meta(data_dir)
    if meta.get('tokenizer') != 'vocab' or 'flags' not in meta.get('aux', {}):
        die(f"{data_dir} is not a sign-level dataset (a vocab tokenizer with damage/word flags, as prepare/akkadian.py "
            f"writes): pass --data_dir=data/akkadian")
    if not os.path.exists(os.path.join(data_dir, f'{split}.bin')):
        die(f"{data_dir} has no {split} split: choose --split=train, val or test")
    check_dataset(data_dir)


TINY_MARKER = '.tiny_model'  # in every folder build_tiny writes: the mark that lets it rebuild that folder


def tiny_out_problem(out):
    """Why build_tiny may not write `out` (None when it may): only a new or empty folder, or one it wrote itself
    (TINY_MARKER), is ever replaced."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / TINY_MARKER).exists())):
        return (f"{out} exists and is not a folder written by hf_encoder.py tiny (it is a file, or holds files without "
                f"its {TINY_MARKER} mark): choose a new folder")
    return None


def check_tiny_args(args):
    """hf_encoder.py tiny's options, checked before anything is built or written: sizes (the heads must divide d),
    the text file or the sign data, and an output folder that is new, empty or an earlier tiny model (a folder
    with other files is never written into)."""
    for k, low, high in (('vocab', 16, 1 << 16), ('d', 1, 8192), ('layers', 1, 64), ('heads', 1, 256)):
        v = getattr(args, k)
        if not low <= v <= high:
            die(f"--{k} must lie in [{low}, {high}], got {v}")
    if args.d % args.heads:
        die(f"--d={args.d} is not a multiple of --heads={args.heads}: choose sizes that divide")
    if args.kind not in ('modernbert', 'bert'):
        die(f"--kind must be modernbert or bert, got {args.kind!r}")
    if args.text_file:
        if not os.path.isfile(args.text_file):
            die(f"--text_file={args.text_file} not found: give a UTF-8 text file (one line per text)")
    else:
        check_sign_data(args.data_dir)
    if tiny_out_problem(args.out):
        die(f"--out: {tiny_out_problem(args.out)}")


if __name__ == '__main__':
    main()
