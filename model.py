"""
Every architecture of the toolkit, in one file. `ModelConfig.arch` picks the class:

    gpt      causal decoder (nanoGPT); the baseline of every comparison
    encoder  bidirectional RoPE encoder, the Aeneas torso (Assael et al., Nature 2025):
             pre-norm RMSNorm, no biases, GeGLU, head size d_kv free of d_model, and a 2-layer MLP
             restoration head tied to the embedding

The shared blocks (norms, rotary embedding, attention through F.scaled_dot_product_attention with
causal / bidirectional / document / sliding-window masks, GELU / GeGLU / SwiGLU MLPs, the
transformer trunk) are written once below; an architecture composes them.

Objectives follow the arch: `objective(arch)` says which (causal next token, masked LM); the
masked-LM corruption (BERT 80/10/10) lives here too so train.py, evaluate.py and bench.py share it.
"""
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    arch: str = 'gpt'           # gpt | encoder
    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768           # d_model
    d_kv: int = 0               # size of one attention head; 0 -> n_embd // n_head
    d_ff: int = 0               # MLP hidden width (per branch for gated MLPs); 0 -> 4 * n_embd
    dropout: float = 0.0
    bias: bool = True           # biases in Linear layers and LayerNorms
    norm: str = 'layernorm'     # layernorm | rmsnorm
    mlp: str = 'gelu'           # gelu | geglu | swiglu
    pos: str = 'learned'        # learned | rope | none
    rope_base: float = 10000.0
    doc_mask: bool = False      # attention never crosses document boundaries (packed sequences)

    @property
    def head_dim(self):
        return self.d_kv or self.n_embd // self.n_head

    @property
    def ff_dim(self):
        return self.d_ff or 4 * self.n_embd

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self):
        return asdict(self)


def objective(arch):
    """The training objective that goes with an architecture."""
    return {'gpt': 'causal', 'encoder': 'mlm'}[arch]


# ----------------------------------------------------------------------------- shared blocks

class RMSNorm(nn.Module):
    """T5 'LayerNorm': x / rms(x) * g, no mean subtraction, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, dim, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def make_norm(cfg):
    return RMSNorm(cfg.n_embd) if cfg.norm == 'rmsnorm' else LayerNorm(cfg.n_embd, bias=cfg.bias)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34), rotate-half layout over the
    whole head: the score q_m . k_n then depends on positions only through m - n."""

    def __init__(self, head_dim, base=10000.0, max_len=2048):
        super().__init__()
        assert head_dim % 2 == 0, "rotary embeddings need an even head size"
        self.head_dim, self.base = head_dim, base
        self._build(max_len)

    def _build(self, n, device=None):
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        t = torch.arange(n, device=device).float()
        freqs = torch.outer(t, inv_freq)
        self.register_buffer('cos', freqs.cos(), persistent=False)
        self.register_buffer('sin', freqs.sin(), persistent=False)

    def forward(self, T, offset=0):
        if offset + T > self.cos.shape[0]:
            self._build(2 * (offset + T), device=self.cos.device)
        return self.cos[offset:offset + T], self.sin[offset:offset + T]


def apply_rotary(x, cos, sin):
    """x: (B, H, T, D); cos, sin: (T, D/2)."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention_mask(doc=None, causal=True, window=0, T=None, device=None):
    """Boolean mask (B or 1, 1, T, T), True where query i may attend to key j; None when SDPA's
    own is_causal (or no mask) is exact, which keeps the flash kernels usable.
    doc:    (B, T) document id per position; attention never crosses documents.
    window: sliding window, |i - j| < window (0 = unlimited)."""
    if doc is None and not window:
        return None
    if doc is not None:
        T, device = doc.shape[1], doc.device
    i = torch.arange(T, device=device)
    m = torch.ones(T, T, dtype=torch.bool, device=device)
    if causal:
        m = i[:, None] >= i[None, :]
    if window:
        m = m & ((i[:, None] - i[None, :]).abs() < window)
    m = m[None, None]
    if doc is not None:
        m = m & (doc[:, None, :, None] == doc[:, None, None, :])
    return m


class Attention(nn.Module):
    """Multi-head self-attention; q/k/v project d_model -> n_head * d_kv, the output back."""

    def __init__(self, cfg, causal):
        super().__init__()
        self.n_head, self.head_dim, self.causal = cfg.n_head, cfg.head_dim, causal
        inner = cfg.n_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * inner, bias=cfg.bias)
        self.proj = nn.Linear(inner, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x, rope=None, mask=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """gelu: W2 GELU(W1 x); geglu: W2 (GELU(x Wa) * x Wb); swiglu: W2 (SiLU(x Wa) * x Wb)
    (Shazeer 2020, 'GLU variants improve Transformer')."""

    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg.mlp
        gated = cfg.mlp in ('geglu', 'swiglu')
        self.fc = nn.Linear(cfg.n_embd, (2 if gated else 1) * cfg.ff_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ff_dim, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        h = self.fc(x)
        if self.kind == 'gelu':
            h = F.gelu(h)
        else:
            a, b = h.chunk(2, dim=-1)
            h = (F.gelu(a) if self.kind == 'geglu' else F.silu(a)) * b
        return self.proj(h)


class Block(nn.Module):
    """Pre-norm residual block: x + Drop(Attn(Norm(x))), then x + Drop(MLP(Norm(x)))."""

    def __init__(self, cfg, causal):
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), Attention(cfg, causal)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None):
        x = x + self.drop(self.attn(self.norm1(x), rope, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class Trunk(nn.Module):
    """Token embedding (+ learned positions or RoPE) -> blocks -> final norm. Shared by every arch."""

    def __init__(self, cfg, causal, emb_norm=False):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == 'learned' else None
        self.rope = Rotary(cfg.head_dim, cfg.rope_base, cfg.block_size) if cfg.pos == 'rope' else None
        self.emb_norm = LayerNorm(cfg.n_embd, bias=cfg.bias) if emb_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, causal) for _ in range(cfg.n_layer)])
        self.norm = make_norm(cfg)

    def forward(self, idx, doc=None, hidden_layers=None):
        """Returns the final hidden states (B, T, d) and, if hidden_layers is given, a dict
        {layer: hidden} where layer 0 is the embedding output and layer i the output of block i."""
        B, T = idx.shape
        if T > self.cfg.block_size and self.wpe is not None:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.cfg.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        rope = self.rope(T) if self.rope is not None else None
        mask = attention_mask(doc, self.causal) if self.cfg.doc_mask else None
        hidden = {}
        if hidden_layers is not None and 0 in hidden_layers:
            hidden[0] = x
        for i, block in enumerate(self.blocks, 1):
            x = block(x, rope, mask)
            if hidden_layers is not None and i in hidden_layers:
                hidden[i] = x
        return self.norm(x), hidden


# ----------------------------------------------------------------------------- architectures

class LM(nn.Module):
    """What every architecture shares: init, parameter counts, the loss."""
    causal = True

    def _init_weights(self, n_layer):
        # GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith('proj.weight') else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith('bias'):
                nn.init.zeros_(p)

    def num_params(self, non_embedding=False):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for name, p in self.named_parameters() if name.split('.')[-2] in ('wte', 'wpe'))
        return n

    def loss(self, logits, targets):
        """Mean cross-entropy over positions whose target is not -1 (computed in float32)."""
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class GPT(LM):
    """Causal decoder with the embedding tied to the output head (Radford et al. 2019; nanoGPT)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg, causal=True)
        self._init_weights(cfg.n_layer)

    def forward(self, idx, targets=None, doc=None, all_logits=False):
        h, _ = self.trunk(idx, doc)
        if targets is None and not all_logits:
            h = h[:, -1:]  # generation needs only the last position
        logits = F.linear(h, self.trunk.wte.weight)  # tied head
        return logits, (self.loss(logits, targets) if targets is not None else None)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.cfg.block_size:]
            logits, _ = self(ctx)
            logits = logits[:, -1, :].float() / max(temperature, 1e-8)
            if top_k:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('inf')
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return idx


class Encoder(LM):
    """The Aeneas torso: a bidirectional pre-norm RMSNorm encoder with RoPE, no biases, GeGLU and
    d_kv independent of d_model; the embedding goes through a LayerNorm; restoration head
    Dense -> GELU -> LayerNorm -> Dense, logits = h E^T / sqrt(d) tied to the embedding
    (notes/encoder_and_akkadian.md section 1)."""
    causal = False

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg, causal=False, emb_norm=True)
        d = cfg.n_embd
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Dropout(cfg.dropout), nn.Linear(d, d))
        self._init_weights(cfg.n_layer)

    def forward(self, idx, targets=None, doc=None, hidden_layers=None):
        h, hidden = self.trunk(idx, doc, hidden_layers)
        logits = F.linear(self.head(h), self.trunk.wte.weight) / math.sqrt(self.cfg.n_embd)
        loss = self.loss(logits, targets) if targets is not None else None
        if hidden_layers is not None:
            return logits, loss, hidden
        return logits, loss


MODELS = {'gpt': GPT, 'encoder': Encoder}


def build_model(cfg):
    if cfg.arch not in MODELS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {', '.join(MODELS)}")
    return MODELS[cfg.arch](cfg)


def load_checkpoint(path, device='cpu'):
    """Load a checkpoint (weights_only, so no code is unpickled) and rebuild its model in eval mode.
    Returns (model, checkpoint dict)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ModelConfig.from_dict(ckpt['model_args']))
    state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in ckpt['model'].items()}
    model.load_state_dict(state)
    return model.to(device).eval(), ckpt


def optimizer_groups(model, weight_decay):
    """AdamW parameter groups: weight decay on matrices (dim >= 2) only, never on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
            {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]


# ----------------------------------------------------------------------------- objectives

def mlm_mask(x, rng, mask_rate, mask_id, vocab_size, maskable, replace=(0.8, 0.1, 0.1), span_mean=0.0, rand_low=0):
    """BERT masked-LM corruption (Devlin et al. 2019, section 3.1), on CPU with a numpy Generator.

    x:         (B, T) int64 clean tokens
    maskable:  (B, T) bool, positions that may be chosen (real signs, not specials/gaps/restored)
    mask_rate: fraction of maskable positions chosen as targets
    replace:   of the chosen positions, fractions replaced by [MASK], by a random token, kept
    span_mean: 0 for independent positions; > 0 chooses spans with geometric lengths of this mean
               (real gaps are spans) until the budget mask_rate * n_maskable is spent
    rand_low:  random replacements are drawn from ids rand_low..vocab_size-1 (skips leading specials)
    Returns (inputs, targets) with targets = -1 where not chosen."""
    x = np.asarray(x)
    maskable = np.asarray(maskable, dtype=bool)
    B, T = x.shape
    chosen = np.zeros_like(maskable)
    if span_mean > 0:
        p = 1.0 / span_mean
        for b in range(B):
            budget = int(round(mask_rate * maskable[b].sum()))
            cand = np.flatnonzero(maskable[b])
            tries = 0
            while chosen[b].sum() < budget and tries < 4 * T and len(cand):
                tries += 1
                start = cand[rng.integers(len(cand))]
                length = min(int(rng.geometric(p)), budget - int(chosen[b].sum()))
                span = np.arange(start, min(start + length, T))
                chosen[b, span[maskable[b, span]]] = True
    else:
        chosen = maskable & (rng.random((B, T)) < mask_rate)
    targets = np.where(chosen, x, -1)
    r = rng.random((B, T))
    inputs = x.copy()
    to_mask = chosen & (r < replace[0])
    to_rand = chosen & (r >= replace[0]) & (r < replace[0] + replace[1])
    inputs[to_mask] = mask_id
    inputs[to_rand] = rng.integers(rand_low, vocab_size, size=int(to_rand.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(targets)


# ---- restoration (encoder): beam search over gaps
# A scorer is any callable score_fn(x: LongTensor (B, T)) -> log-probs FloatTensor (B, T, V): for an
# encoder, log p(token | x) at every position of the corrupted input. The search below only reads the
# rows of the positions it fills, so sample.py, evaluate.py and the baselines (evaluate.py's n-gram)
# share it: the same search, different scorers.

def encoder_scorer(model, banned_ids=(), doc=None):
    """score_fn of an Encoder: log_softmax of its logits with `banned_ids` (the specials: [PAD] [UNK]
    [MASK] [GAP] ...) set to -inf first, i.e. renormalised over the real signs. doc: optional (T,)
    document ids, used when x keeps that length (the model applies them only if cfg.doc_mask)."""
    banned = torch.tensor(sorted({int(i) for i in banned_ids}), dtype=torch.long)

    @torch.no_grad()
    def score_fn(x):
        d = None if doc is None else torch.as_tensor(doc, device=x.device)[None].expand(x.shape[0], -1)
        logits = model(x, doc=d)[0].float()
        if len(banned):
            logits[..., banned.to(x.device)] = float('-inf')
        return torch.log_softmax(logits, dim=-1)
    return score_fn


@torch.no_grad()
def beam_fill(score_fn, ids, positions, beam=20, banned_ids=(), topk=None):
    """Fill `positions` of the 1-D sequence `ids` (they hold [MASK]) jointly, left to right.
    Round r expands every beam at positions[r] with the scorer's log-probs there, re-running the
    scorer on the partially filled sequences (all beams in one batched call), and keeps the `beam`
    best. The joint score is the chain-rule factorisation
        log p(s_1..s_k) = sum_r log p(s_r | context, s_<r filled, s_>r still masked)
    (the non-sequential decoding of Aeneas / Ithaca's beam search, one position per round). With
    beam >= V^(k-1) no prefix is ever dropped and the result is the exact top of all V^k fillings.
    Returns [(tokens, joint log-prob)] best first, at most topk (default: beam) entries."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    positions = sorted(int(p) for p in positions)
    if not positions:
        return [([], 0.0)]
    banned = sorted({int(i) for i in banned_ids})
    seqs = ids[None].clone()
    scores = torch.zeros(1, dtype=torch.float64, device=ids.device)
    for p in positions:
        logp = score_fn(seqs)[:, p].double()                       # (n_beams, V)
        if banned:
            logp[:, banned] = float('-inf')
        V = logp.shape[1]
        total = (scores[:, None] + logp).reshape(-1)
        n = max(1, min(beam, int(torch.isfinite(total).sum())))
        scores, idx = total.topk(n)
        seqs = seqs[idx // V].clone()
        seqs[:, p] = idx % V
    k = min(topk or beam, len(scores))
    return [(seqs[i, positions].tolist(), scores[i].item()) for i in range(k)]


def _crop(seq, pos, window):
    """A window of `window` tokens of seq centred on the positions pos (all of seq when it fits)."""
    if not window or len(seq) <= window:
        return seq, pos
    mid = (pos[0] + pos[-1]) // 2
    s = min(max(0, mid - window // 2), len(seq) - window)
    return seq[s:s + window], [p - s for p in pos]


def restore_gaps(score_fn, ids, gaps, *, mask_id, max_gap_len=10, beam=20, alpha=1.0, topk=5, banned_ids=(),
                 window=0):
    """Restore every gap of the 1-D token sequence `ids`, one gap at a time.
    gaps: [(start, length)]: `length` lost signs at ids[start:start+length] (a known-length gap, e.g.
          adjacent [GAP]s: decoded jointly), or length None: ids[start] is one gap of unknown length.
    A known-length gap becomes `length` [MASK]s and is filled by beam_fill. An unknown-length gap is
    tried with every length k = 1..max_gap_len (k [MASK]s spliced in place of its token) and all
    candidates of all lengths are ranked by Aeneas's length-normalised score logp / (1 + k)^alpha
    (predictingthepast util/eval.py beam_search_batch, length exponent a).
    While one gap is restored the other gaps keep the tokens the data uses for them ([GAP] per lost
    sign, one [GAPN] per unknown-length gap): that is how lost signs appear in every training context
    (they are never MLM targets), whereas [MASK] only ever stood for exactly one hidden sign.
    window > 0 crops each scored sequence to that many tokens around the gap (the model's block_size).
    Returns per gap [(signs, joint prob, normalised score, length)], best score first, topk entries."""
    ids = [int(i) for i in ids]
    out = []
    for start, length in gaps:
        cands = []
        for k in ([length] if length else range(1, max_gap_len + 1)):
            seq = ids[:start] + [mask_id] * k + ids[start + (length or 1):]
            seq, pos = _crop(seq, list(range(start, start + k)), window)
            for signs, lp in beam_fill(score_fn, seq, pos, beam=beam, banned_ids=banned_ids, topk=topk):
                cands.append((signs, math.exp(lp), lp / (1 + k) ** alpha, k))  # Aeneas length normalisation
        cands.sort(key=lambda c: -c[2])
        out.append(cands[:topk])
    return out
