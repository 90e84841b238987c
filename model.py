"""
Every architecture of the toolkit, in one file. `ModelConfig.arch` picks the class:

    gpt      causal decoder (nanoGPT); the baseline of every comparison
    encoder  bidirectional RoPE encoder, the Aeneas torso (Assael et al., Nature 2025):
             pre-norm RMSNorm, no biases, GeGLU, head size d_kv free of d_model, and a 2-layer MLP
             restoration head tied to the embedding
    mdlm     the denoiser of a masked diffusion LM (Sahoo et al. 2024): a DiT backbone with adaLN-zero, and
             the importance estimator of the importance-aware options (objective: objectives.py; samplers:
             sampling.py)
    backpack Backpack LM (Hewitt et al. 2023): sense vectors + k-head contextualisation
    atlas    causal LM with Atlas long-term memory (Behrouz et al. 2025) beside sliding-window attention
    attention='agglutinative' (gpt, backpack): morphology-aware attention biases

The shared blocks (norms, rotary embedding, attention through F.scaled_dot_product_attention with
causal / bidirectional / document / sliding-window masks, GELU / GeGLU / SwiGLU MLPs, the
transformer trunk) are written once below; an architecture composes them.

The objectives are objectives.py's (which one an arch trains with, its batches, its loss): a causal or masked-LM
model returns nanoGPT's (logits, cross-entropy) when given targets; MDLM is a pure denoiser, z_t -> logits, and its
NELBO and importance loss are computed there. This file imports nothing of objectives.py. It reads top to bottom:
the config, the shared blocks, then one section per architecture, and the MODELS registry at the end.
"""
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


try:  # FlexAttention (torch >= 2.5): block-sparse masks and score modifications in one fused kernel on CUDA
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:
    BlockMask = create_block_mask = flex_attention = None


@dataclass
class ModelConfig:
    arch: str = 'gpt'           # gpt | encoder | mdlm | backpack | atlas
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
    activation_checkpointing: bool = False  # recompute each block in backward (non-reentrant): less memory, ~1/3 more compute
    window: int = 0             # sliding-window attention: query i sees keys i - window < j <= i (0 = all)
    attn_impl: str = 'auto'     # masked attention (documents, window, agglutinative): sdpa (dense mask, the
                                # reference) | flex (FlexAttention) | auto (flex on CUDA, sdpa elsewhere)
    # morphology-aware causal attention (see the agglutinative section after attention_mask)
    attention: str = 'standard'     # standard | agglutinative (causal trunks only: gpt, backpack)
    agglu_input_emb: bool = False   # + zero-init embeddings of token class and position in word (Segatron style)
    canon: int = 0              # > 0: each block's input gets a short depthwise convolution over the sequence
                                # (kernel `canon`, centred in an encoder, causal otherwise), added as a residual and
                                # kept inside documents when doc_mask: Canon layers (see Canon)
    # encoder: in training, logits only at a fixed budget of positions, the targets first (see Encoder)
    mlm_logit_budget: float = 0.0   # fraction of the micro-batch's positions (0 = every position); must exceed
                                    # the fraction that can be targets, or the loss drops the excess
    # mdlm (masked diffusion, DiT backbone): see the mdlm section below
    mask_id: int = -1           # id of [MASK]; -1 -> vocab_size - 1 (a mask token added to the vocabulary)
    cond_dim: int = 128         # timestep-embedding width feeding adaLN
    time_cond: bool = False     # condition on sigma(t) (MDLM default: off, which makes ddpm_cache valid)
    importance: bool = False    # train an importance estimator jointly (the importance-aware options)
    imp_n_layer: int = 2
    imp_n_embd: int = 256
    imp_n_head: int = 4
    # ... and the options of its objective (objectives.diffusion_loss reads them here, so a run's model_args keep them)
    importance_weight: float = 1.0   # weight of the estimator's MSE in the training loss
    adaptive_masking: bool = False   # per-token mask probabilities biased by importance, mean 1 - alpha_t
    adaptive_strength: float = 1.0   # logit slope of that bias
    curriculum: bool = False         # move the bias from easy to hard tokens over training
    curriculum_phases: str = '0.3,0.7'  # fractions of max_iters: easy until the first, hard after the second
    # backpack (sense vectors + contextualisation): see the backpack section below
    n_senses: int = 16          # k sense vectors per token (Hewitt et al. 2023)
    # atlas (deep long-term memory, Omega rule; Behrouz et al. 2025): see the atlas section below
    atlas_mode: str = 'mag'     # mag: memory and sliding-window attention in parallel, gated | mal: memory, then SWA
    mem_depth: int = 2          # 1: linear memory M(z) = W z; 2: MLP memory M(z) = W_out GELU(W_in z) (+ z)
    mem_key_dim: int = 0        # key/query width per head before the feature map; 0 -> head size
    mem_hidden: int = 0         # hidden width of the MLP memory; 0 -> head size
    mem_poly: int = 2           # degree p of the polynomial feature map phi_p; 0 = no map (Titans)
    mem_window: int = 4         # c: the Omega rule's sliding window of past keys (1 = delta rule)
    mem_chunk: int = 16         # b: chunk size of the parallel update (gradients at the chunk-start state)
    mem_muon: bool = True       # Newton-Schulz on the momentum before the write (Atlas)
    mem_ns_steps: int = 5       # Newton-Schulz iterations (Atlas, Muon: 5)
    mem_muon_scope: str = 'token'   # token: NS on every token's momentum S_t (Atlas eq. 33) | chunk: one NS per
                                    # chunk on the chunk's weighted momentum (docs/atlas.md, The cost of the Muon step)
    mem_lr: float = 0.05        # eta_max: the inner learning rate is eta_t = mem_lr * sigmoid(.)
    mem_conv: int = 4           # causal depthwise convolution on q, k, v (Titans); 1 = none

    def __post_init__(self):
        for k in ('vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if not self.d_kv and self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head} (heads of "
                             f"{self.n_embd / self.n_head:g}); choose sizes that divide, or set d_kv (the head size)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ('standard', 'agglutinative'):
            raise ValueError(f"unknown attention {self.attention!r}; choose standard or agglutinative")
        if self.attn_impl not in ('auto', 'sdpa', 'flex'):
            raise ValueError(f"unknown attn_impl {self.attn_impl!r}; choose auto, sdpa or flex")
        if self.attn_impl == 'flex' and flex_attention is None:
            raise ValueError("attn_impl='flex' needs torch >= 2.5 (FlexAttention); use attn_impl='sdpa'")
        if self.attn_impl == 'flex' and self.dropout > 0:
            raise ValueError(f"attn_impl='flex' has no attention dropout (dropout={self.dropout}); "
                             "set dropout=0 or attn_impl='auto' (which keeps sdpa while dropout is on)")
        if not 0.0 <= self.mlm_logit_budget <= 1.0:
            raise ValueError(f"mlm_logit_budget is a fraction of positions in [0, 1], got {self.mlm_logit_budget}")
        if self.mem_muon_scope not in ('token', 'chunk'):
            raise ValueError(f"unknown mem_muon_scope {self.mem_muon_scope!r}; choose token or chunk")
        if self.mem_ns_steps < 1:
            raise ValueError(f"mem_ns_steps must be at least 1, got {self.mem_ns_steps}")
        if self.atlas_mode not in ('mag', 'mal'):
            raise ValueError(f"unknown atlas_mode {self.atlas_mode!r}; choose mag or mal")
        if self.canon < 0 or (self.canon and self.arch == 'mdlm'):
            raise ValueError(f"canon is a kernel size >= 0 (0 = no Canon layers) for the transformer trunks, not the "
                             f"MDLM's DiT; got canon={self.canon} with arch {self.arch!r}")
        if self.attention != 'standard' and self.arch not in ('gpt', 'backpack'):
            raise ValueError(f"attention={self.attention!r} is causal-only (gpt, backpack), not arch {self.arch!r}")

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


# ----------------------------------------------------------------------------- shared blocks

class RMSNorm(nn.Module):
    """T5 'LayerNorm': x / rms(x) * g, no mean subtraction, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # one fused kernel (F.rms_norm, torch >= 2.4) in float32, like x / sqrt(mean(x^2) + eps) * g
        y = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return y.to(torch.promote_types(x.dtype, self.weight.dtype))


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, dim, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def run_block(cfg, block, x, *args):
    """block(x, *args), recomputed in the backward pass instead of keeping its activations when
    cfg.activation_checkpointing is on (torch.utils.checkpoint, non-reentrant) and gradients are needed."""
    if cfg.activation_checkpointing and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint
        return checkpoint(block, x, *args, use_reentrant=False)
    return block(x, *args)


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


def use_flex(cfg, device, training):
    """Whether this forward's masked attention goes through FlexAttention: attn_impl 'flex', or 'auto' on
    CUDA unless attention dropout is active (FlexAttention has none, and on the CPU it has no backward)."""
    if cfg.attn_impl == 'sdpa' or flex_attention is None:
        return False
    if cfg.attn_impl == 'flex':
        return True
    return torch.device(device).type == 'cuda' and (cfg.dropout == 0.0 or not training)


def flex_block_mask(doc=None, causal=True, window=0, T=None, device=None):
    """The same rule as attention_mask as a FlexAttention BlockMask (B or None, None, T, T): built once per
    forward and shared by every layer; fully masked 128 x 128 tiles are skipped, not computed."""
    if doc is not None:
        T, device = doc.shape[1], doc.device

    def mask_mod(b, h, qi, ki):
        m = qi >= ki if causal else qi == qi
        if window:
            m = m & ((qi - ki).abs() < window)
        if doc is not None:
            m = m & (doc[b, qi] == doc[b, ki])
        return m
    return create_block_mask(mask_mod, doc.shape[0] if doc is not None else None, None, T, T, device=device)


def layer_mask(cfg, doc, causal, window, T, device, training, always=False):
    """The attention mask of one forward, shared by all its layers: None when SDPA's is_causal (or no mask)
    is exact -- unless `always` (agglutinative attention needs the causal mask explicitly) --, else a
    FlexAttention BlockMask when use_flex, else the dense boolean mask of attention_mask."""
    doc = doc if cfg.doc_mask else None
    if doc is None and not window and not always:
        return None
    if use_flex(cfg, device, training):
        return flex_block_mask(doc, causal, window, T, device)
    if doc is None and not window:
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
    return attention_mask(doc, causal, window, T, device)


_flex_compiled = None


def run_flex(q, k, v, score_mod, block_mask):
    """flex_attention, compiled on CUDA (its fused kernel; eager FlexAttention materialises every score);
    eager on the CPU, where it runs forward only. Inside a compiled model the call is traced as it is."""
    global _flex_compiled
    if not q.is_cuda or torch.compiler.is_compiling():
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled(q, k, v, score_mod=score_mod, block_mask=block_mask)


# ----------------------------------------------------------------------------- agglutinative attention
# MorphBias (docs/agglutinative.md). Per head h, query i, key j <= i:
#     logit = q.k/sqrt(d) + a_h 1[w_i = w_j] + c_h[tau_j] - g_h m_h (w_i - w_j),   m_h = 2^(-8h/H)
# w_t = cumsum(word_start)_t - 1 (word index), tau_t the token class: 0 word-initial, 1 suffix-like,
# 2 other word-internal, 3 digit/punctuation/special. Both come from two vocabulary lookup tables
# (meta.json 'word_start', 'token_class', written by prepare/turkish.py), so they depend only on the token
# and its predecessors (cumsum is causal) -- never on a whole-word analysis (no leakage of where the word
# ends). a, c, g are zero-initialised: at step 0 the model equals standard attention.

AGGLU_CLASSES = 4       # word-initial, suffix-like, other word-internal, digit/punct/special
AGGLU_MAX_INWORD = 7    # position in word is capped at 7 for the input embedding


def alibi_slopes(n_head):
    """m_h = 2^(-8h/H), h = 1..H (Press et al. 2022)."""
    return torch.tensor([2.0 ** (-8.0 * h / n_head) for h in range(1, n_head + 1)])


def word_signals(idx, word_start, token_class):
    """idx (B, T) -> word index w (B, T), class tau (B, T), position in word p (B, T), all int64, by table
    lookups and cumulative ops only (causal: position t depends on idx[:, :t+1] only). A window that starts
    inside a word gives its first tokens w = -1 (only differences of w are used)."""
    flat = idx.reshape(-1)
    s = word_start.index_select(0, flat).view_as(idx).long()
    tau = token_class.index_select(0, flat).view_as(idx).long()
    w = s.cumsum(1) - 1
    t = torch.arange(idx.shape[1], device=idx.device).expand_as(idx)
    last_start = torch.cummax(torch.where(s > 0, t, torch.zeros_like(t)), dim=1).values
    return w, tau, t - last_start


def agglutinative_inputs(idx, word_start, token_class, base_mask):
    """Everything the per-layer biases need, computed once per forward and shared by all layers:
    same-word indicator and word distance (B, 1, T, T) float, key class one-hot (B, T, 4), and the additive
    base mask (0 allowed, -inf not: causal and, if given, documents). With a FlexAttention BlockMask as
    base_mask only the per-token signals are kept (w, tau (B, T)): each layer's score_mod reads them."""
    w, tau, p = word_signals(idx, word_start, token_class)
    if BlockMask is not None and isinstance(base_mask, BlockMask):
        return {'w': w, 'tau': tau, 'inword': p}
    same = (w[:, :, None] == w[:, None, :]).float()[:, None]
    dist = (w[:, :, None] - w[:, None, :]).clamp(min=0).float()[:, None]
    onehot = F.one_hot(tau, AGGLU_CLASSES).float()
    base = torch.zeros(base_mask.shape, device=idx.device).masked_fill(~base_mask, float('-inf'))
    return {'same': same, 'dist': dist, 'class': onehot, 'base': base, 'tau': tau, 'inword': p}


def agglutinative_biases(model):
    """The learned biases per layer and head, as plain lists: {layer: {'same_word': [H], 'class': [H][4]
    (word-initial, suffix, internal, other), 'gain': [H], 'word_slope': [H] (= g_h m_h, the penalty per word
    of distance)}}; {} for a model without agglutinative attention."""
    out, layer = {}, 0
    for mod in model.modules():
        if isinstance(mod, Attention) and mod.agglu:
            layer += 1
            out[layer] = {'same_word': mod.agglu_same.tolist(),
                          'class': mod.agglu_class.detach().view(mod.n_head, AGGLU_CLASSES).tolist(),
                          'gain': mod.agglu_gain.tolist(),
                          'word_slope': (mod.agglu_gain.detach() * mod.agglu_slopes).tolist()}
    return out


def format_agglutinative_biases(model):
    """A printable table of agglutinative_biases (one line per layer and head)."""
    rows = ['layer head  same_word   c[init]  c[suffix]  c[intern]  c[other]    gain  word_slope']
    for layer, b in agglutinative_biases(model).items():
        for h in range(len(b['same_word'])):
            c = b['class'][h]
            rows.append(f"{layer:5d} {h:4d} {b['same_word'][h]:10.4f} " + ' '.join(f"{v:9.4f}" for v in c)
                        + f" {b['gain'][h]:8.4f} {b['word_slope'][h]:11.5f}")
    return '\n'.join(rows)


class Attention(nn.Module):
    """Multi-head self-attention; q/k/v project d_model -> n_head * d_kv, the output back."""

    def __init__(self, cfg, causal):
        super().__init__()
        self.n_head, self.head_dim, self.causal = cfg.n_head, cfg.head_dim, causal
        inner = cfg.n_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * inner, bias=cfg.bias)
        self.proj = nn.Linear(inner, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.agglu = causal and getattr(cfg, 'attention', 'standard') == 'agglutinative'
        if self.agglu:  # 1-D zero parameters: no RNG drawn, untouched by _init_weights, no weight decay
            H = cfg.n_head
            self.agglu_same = nn.Parameter(torch.zeros(H))                    # a_h
            self.agglu_class = nn.Parameter(torch.zeros(H * AGGLU_CLASSES))   # c_h[tau], viewed (H, 4)
            self.agglu_gain = nn.Parameter(torch.zeros(H))                    # g_h on the word-distance slope
            self.register_buffer('agglu_slopes', alibi_slopes(H), persistent=False)

    def agglu_bias(self, ag):
        """Additive float bias (B, H, T, T) of this layer from the shared agglutinative_inputs."""
        H = self.n_head
        c = (ag['class'] @ self.agglu_class.view(H, AGGLU_CLASSES).t()).permute(0, 2, 1)[:, :, None, :]
        return (ag['base'] + self.agglu_same.view(1, H, 1, 1) * ag['same'] + c
                - (self.agglu_gain * self.agglu_slopes).view(1, H, 1, 1) * ag['dist'])

    def agglu_score_mod(self, ag):
        """The same bias as agglu_bias as a FlexAttention score_mod, from the per-token word index and class
        (B, T): score + a_h 1[w_i = w_j] + c_h[tau_j] - g_h m_h (w_i - w_j) (the causal and document -inf are
        the BlockMask's)."""
        w, tau = ag['w'], ag['tau']
        a, c = self.agglu_same, self.agglu_class.view(self.n_head, AGGLU_CLASSES)
        slope = self.agglu_gain * self.agglu_slopes

        def score_mod(score, b, h, qi, ki):
            wq, wk = w[b, qi], w[b, ki]
            same = torch.where(wq == wk, a[h], torch.zeros_like(a[h]))
            return score + same + c[h, tau[b, ki]] - slope[h] * (wq - wk).clamp(min=0)
        return score_mod

    def forward(self, x, rope=None, mask=None, agglu=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if BlockMask is not None and isinstance(mask, BlockMask):  # FlexAttention (no dropout: see use_flex)
            score_mod = self.agglu_score_mod(agglu) if (agglu is not None and self.agglu) else None
            return self.proj(run_flex(q, k, v, score_mod, mask).transpose(1, 2).reshape(B, T, -1))
        if agglu is not None and self.agglu:  # the bias carries the causal (and document) -inf
            mask = self.agglu_bias(agglu).to(q.dtype)
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


def shift(x, o):
    """y[:, t] = x[:, t + o] along dim 1 of x (B, T, ...), zero where t + o falls outside 0..T-1."""
    if o == 0:
        return x
    T = x.shape[1]
    pad = [0, 0] * (x.dim() - 2) + [max(-o, 0), max(o, 0)]
    return F.pad(x, pad)[:, max(-o, 0) + o:max(-o, 0) + o + T]


class Canon(nn.Module):
    """A Canon layer (Allen-Zhu 2025, "Physics of Language Models: Part 4.1", Canon-A): h_t + sum_o w_o * h_{t+o}, a
    depthwise convolution over a few neighbouring positions (offsets -(k-1)..0 in a causal trunk, -(k//2)..k-1-k//2 in
    an encoder) added to the block's input; a neighbour in another document (doc ids) or beyond the sequence counts
    as zero. Neighbours mix from the first step, where attention must first learn where to look: a masked-sign
    encoder learns the local statistics of a small corpus much sooner (docs/akkadian.md, At real scale)."""

    def __init__(self, cfg, causal):
        super().__init__()
        k = cfg.canon
        self.offsets = list(range(-(k - 1), 1)) if causal else list(range(-(k // 2), k - k // 2))
        self.weight = nn.Parameter(torch.empty(k, cfg.n_embd))  # (offsets, channels): N(0, 0.02) by LM._init_weights

    def forward(self, x, same=None):
        """same: {offset: (B, T, 1) bool, the neighbour at that offset is in the same document} or None."""
        out = x
        for w, o in zip(self.weight, self.offsets):
            h = shift(x, o)
            if same is not None and o != 0:
                h = h * same[o].to(x.dtype)
            out = out + w * h
        return out


def same_document(doc, offsets):
    """{offset: (B, T, 1) bool}: position t + offset holds the same document id as t (None without doc ids)."""
    if doc is None:
        return None
    return {o: (shift(doc, o) == doc)[..., None] for o in offsets if o != 0}


class Block(nn.Module):
    """Pre-norm residual block: x + Drop(Attn(Norm(x))), then x + Drop(MLP(Norm(x)))."""

    def __init__(self, cfg, causal):
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), Attention(cfg, causal)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None, agglu=None):
        x = x + self.drop(self.attn(self.norm1(x), rope, mask, agglu))
        return x + self.drop(self.mlp(self.norm2(x)))


class Trunk(nn.Module):
    """Token embedding (+ learned positions or RoPE) -> blocks -> final norm. Shared by every arch."""

    def __init__(self, cfg, causal, emb_norm=False, block=None):
        super().__init__()
        self.cfg, self.causal = cfg, causal
        block = block or Block
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == 'learned' else None
        self.rope = Rotary(cfg.head_dim, cfg.rope_base, cfg.block_size) if cfg.pos == 'rope' else None
        self.emb_norm = LayerNorm(cfg.n_embd, bias=cfg.bias) if emb_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([block(cfg, causal) for _ in range(cfg.n_layer)])
        self.canon = nn.ModuleList([Canon(cfg, causal) for _ in range(cfg.n_layer)]) if cfg.canon > 0 else None
        self.norm = make_norm(cfg)
        self.agglu = cfg.attention == 'agglutinative'
        if self.agglu:
            if not causal:
                raise ValueError("attention='agglutinative' needs a causal trunk")
            # vocabulary lookup tables (persistent: they travel with checkpoints); until set_token_tables()
            # every token starts a word and has class 0 (the bias then reduces to ALiBi on token distance)
            self.register_buffer('agglu_word_start', torch.ones(cfg.vocab_size, dtype=torch.long))
            self.register_buffer('agglu_token_class', torch.zeros(cfg.vocab_size, dtype=torch.long))
            if cfg.agglu_input_emb:  # flat zero parameters viewed (4, d) and (8, d): no RNG, no re-init
                self.agglu_type_emb = nn.Parameter(torch.zeros(AGGLU_CLASSES * cfg.n_embd))
                self.agglu_inword_emb = nn.Parameter(torch.zeros((AGGLU_MAX_INWORD + 1) * cfg.n_embd))

    def set_token_tables(self, word_start, token_class):
        """word_start, token_class: sequences over the vocabulary (meta.json); ids beyond them (padded
        vocabularies, an added [MASK]) count as word-starting class 3 (special)."""
        if not self.agglu:
            return
        ws, tc = torch.ones_like(self.agglu_word_start), torch.full_like(self.agglu_token_class, 3)
        n = min(len(word_start), ws.numel())
        ws[:n] = torch.as_tensor(list(word_start)[:n], dtype=torch.long)
        tc[:n] = torch.as_tensor(list(token_class)[:n], dtype=torch.long)
        if tc.min() < 0 or tc.max() >= AGGLU_CLASSES:
            raise ValueError(f"token classes must lie in 0..{AGGLU_CLASSES - 1}")
        self.agglu_word_start.copy_(ws.clamp(0, 1))
        self.agglu_token_class.copy_(tc)

    def forward(self, idx, doc=None, hidden_layers=None, from_layer=None):
        """Returns the final hidden states (B, T, d) and, if hidden_layers is given, a dict
        {layer: hidden} where layer 0 is the embedding output and layer i the output of block i.
        from_layer=(l, h) continues the forward pass from given states h (B, T, d) of layer l: h replaces
        the output of block l (l = 0: the embedding output) and only blocks l+1.. run (idx still gives the
        masks); the interpretability checks (interpret.py) put SAE reconstructions or ablations there."""
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
        mask = layer_mask(self.cfg, doc, self.causal, self.cfg.window, T, idx.device, self.training, always=self.agglu)
        agglu = None
        if self.agglu:  # one set of word signals per forward, shared by every layer's own a/c/g
            agglu = agglutinative_inputs(idx, self.agglu_word_start, self.agglu_token_class, mask)
            if self.cfg.agglu_input_emb:
                d = self.cfg.n_embd
                x = x + self.agglu_type_emb.view(AGGLU_CLASSES, d)[agglu['tau']] \
                    + self.agglu_inword_emb.view(AGGLU_MAX_INWORD + 1, d)[agglu['inword'].clamp(max=AGGLU_MAX_INWORD)]
        first = 0
        if from_layer is not None:
            first, x = from_layer
            if not 0 <= first <= len(self.blocks) or x.shape != (B, T, self.cfg.n_embd):
                raise ValueError(f"from_layer: layer {first} of 0..{len(self.blocks)} with states of shape "
                                 f"{(B, T, self.cfg.n_embd)}, got {tuple(x.shape)}")
        same = same_document(doc if self.cfg.doc_mask else None, self.canon[0].offsets) if self.canon is not None else None
        hidden = {}
        if hidden_layers is not None and first in hidden_layers:
            hidden[first] = x
        for i, block in enumerate(self.blocks, 1):
            if i <= first:
                continue
            if self.canon is not None:
                x = self.canon[i - 1](x, same)
            x = run_block(self.cfg, block, x, rope, mask, agglu)
            if hidden_layers is not None and i in hidden_layers:
                hidden[i] = x
        return self.norm(x), hidden


# ----------------------------------------------------------------------------- architectures

def gpt2_init_(module, n_layer):
    """GPT-2 init of `module`'s parameters: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer),
    biases zero (1-D weights, e.g. norm gains, are left as they are)."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith('proj.weight') else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith('bias'):
            nn.init.zeros_(p)


class LM(nn.Module):
    """What every architecture shares: init, parameter counts, the loss."""
    causal = True

    def _init_weights(self, n_layer):
        gpt2_init_(self, n_layer)

    def set_token_tables(self, word_start, token_class):
        """Hand the vocabulary tables of agglutinative attention (meta.json 'word_start', 'token_class')
        to every trunk that uses it; a no-op for standard attention."""
        for mod in self.modules():
            if isinstance(mod, Trunk):
                mod.set_token_tables(word_start, token_class)

    def num_params(self, non_embedding=False):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for name, p in self.named_parameters() if name.split('.')[-2] in ('wte', 'wpe'))
        return n

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward), nanoGPT's estimate (PaLM appendix B):
        6N for the matmuls of N parameters (position embeddings excluded) plus 12 L H Q T for the
        attention scores and weighted sums of L layers, H heads of size Q, context T."""
        cfg = self.cfg
        T = T or cfg.block_size
        n = self.num_params() - sum(p.numel() for name, p in self.named_parameters() if name.endswith('wpe.weight'))
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T

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


def budget_positions(h, targets, budget):
    """The K = ceil(budget * B * T), rounded up to a multiple of 64 (at most B * T), positions of the flattened
    batch with targets first (stable sort: in position order), as h (K, d) and targets (K,) with -1 where a
    budget slot holds no target. K depends on the shapes only (no host sync, static shapes for compile); if
    more than K positions are targets, the last ones are left out of the loss."""
    N = targets.numel()
    K = min(N, -(-math.ceil(budget * N) // 64) * 64)
    flat = targets.reshape(N)
    keep = torch.sort((flat < 0).to(torch.uint8), stable=True).indices[:K]
    return h.reshape(N, h.shape[-1])[keep], flat[keep]


class Encoder(LM):
    """The Aeneas torso: a bidirectional pre-norm RMSNorm encoder with RoPE, no biases, GeGLU and
    d_kv independent of d_model; the embedding goes through a LayerNorm; restoration head
    Dense -> GELU -> LayerNorm -> Dense, logits = h E^T tied to the embedding
    (docs/akkadian.md, Model and training). Aeneas divides these logits by sqrt(d); with
    N(0, 0.02) embeddings that keeps every logit near 0 and held our small runs on the unigram plateau
    for hundreds of steps (Akkadian, 3x128: val loss 5.35 vs 4.79 after 1500 steps), so we drop it."""
    causal = False

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg, causal=False, emb_norm=True)
        d = cfg.n_embd
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Dropout(cfg.dropout), nn.Linear(d, d))
        self._init_weights(cfg.n_layer)

    def forward(self, idx, targets=None, doc=None, hidden_layers=None, from_layer=None):
        """(logits (B, T, V), loss). In training with targets and mlm_logit_budget > 0, the head runs only on
        a fixed number K of positions (budget_positions) and logits are (K, V); the loss is the same mean over
        the targets as long as they fit the budget. Evaluation and restoration (eval mode, or no targets) get
        every position."""
        h, hidden = self.trunk(idx, doc, hidden_layers, from_layer)
        if targets is not None and self.training and self.cfg.mlm_logit_budget > 0:
            h, targets = budget_positions(h, targets, self.cfg.mlm_logit_budget)
        logits = F.linear(self.head(h), self.trunk.wte.weight)
        loss = self.loss(logits, targets) if targets is not None else None
        if hidden_layers is not None:
            return logits, loss, hidden
        return logits, loss


# ----------------------------------------------------------------------------- mdlm: masked diffusion LM (DiT)
# MDLM (Sahoo et al., NeurIPS 2024, arXiv 2406.07524; docs/mdlm.md). The denoiser of absorbing-state diffusion:
# it reads z_t (x0 with some tokens replaced by [MASK]) and returns logits of x0 with the SUBS parameterisation:
# the [MASK] logit is -inf (unmasked positions carry over in the NELBO). The schedule, the masking, the NELBO and
# the importance estimator's loss are the objective's (objectives.py), as MDLM's diffusion.py wraps its DiT. The
# backbone is a DiT: the shared Attention (RoPE, bidirectional) and MLP, each wrapped in adaLN-zero modulation from
# a timestep embedding.


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding (256 dims, max period 1e4) -> Linear -> SiLU -> Linear (DiT; MDLM dit.py)."""

    def __init__(self, cond_dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma):
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class DiTBlock(nn.Module):
    """x + gate_msa * Attn(modulate(Norm(x))), then x + gate_mlp * MLP(modulate(Norm(x))); the six
    (shift, scale, gate) vectors come from a zero-initialised Linear of the condition (adaLN-zero,
    Peebles & Xie 2023), so every block starts as the identity. Attention and MLP are the shared ones."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), Attention(cfg, causal=False)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.adaLN = nn.Linear(cfg.cond_dim, 6 * cfg.n_embd)

    def forward(self, x, c, rope=None, mask=None):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c)[:, None].chunk(6, dim=-1)
        x = x + g1 * self.drop(self.attn(modulate(self.norm1(x), sh1, sc1), rope, mask))
        return x + g2 * self.drop(self.mlp(modulate(self.norm2(x), sh2, sc2)))


class ImportanceEstimator(nn.Module):
    """Small bidirectional transformer (the shared Trunk) reading the clean tokens x0; a sigmoid score
    per token in (0, 1). The objective trains it on the backbone's DETACHED per-token error
    (objectives.importance_loss), never on its own output, and uses it only to bias which tokens are masked
    during training."""

    def __init__(self, cfg):
        super().__init__()
        from dataclasses import replace
        small = replace(cfg, n_layer=cfg.imp_n_layer, n_embd=cfg.imp_n_embd, n_head=cfg.imp_n_head, d_kv=0, d_ff=0)
        self.trunk = Trunk(small, causal=False)
        self.head = nn.Linear(small.n_embd, 1)

    def forward(self, x0):
        h, _ = self.trunk(x0)
        return torch.sigmoid(self.head(h).squeeze(-1).float())


class MDLM(LM):
    """The DiT denoiser: forward(z, doc, sigma) -> SUBS logits (B, T, V) of x0 given the noisy z, nothing else (no
    masking, no loss: objectives.diffusion_loss). With cfg.importance it also holds the importance estimator
    (self.importance), which the objective calls on x0."""
    causal = False

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.mask_id = cfg.mask_id if cfg.mask_id >= 0 else cfg.vocab_size - 1
        d = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.rope = Rotary(cfg.head_dim, cfg.rope_base, cfg.block_size)
        self.sigma_map = TimestepEmbedder(cfg.cond_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = make_norm(cfg)
        self.adaLN_f = nn.Linear(cfg.cond_dim, 2 * d)
        self.head = nn.Linear(d, cfg.vocab_size)   # untied (MDLM), zero-initialised
        self.importance = ImportanceEstimator(cfg) if cfg.importance else None
        # MDLM's own initialisation (dit.py), not the GPT-2 N(0, 0.02) of the other archs: PyTorch's default
        # Linear init, a kaiming-uniform embedding, adaLN and output layer zero. With time conditioning off the
        # condition c = SiLU(sigma_map(0)) is one constant vector, and each adaLN gate and shift g = W c + b
        # learns at a speed set by |c|; under N(0, 0.02) with zero biases |c| is ~30x smaller at width 128, so
        # the zero-initialised gates stayed near 0 for thousands of steps (docs/mdlm.md, The unigram plateau).
        nn.init.kaiming_uniform_(self.wte.weight, a=math.sqrt(5))
        for m in [b.adaLN for b in self.blocks] + [self.adaLN_f, self.head]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if self.importance is not None:  # our own addition: the GPT-2 init of the shared Trunk
            gpt2_init_(self.importance, cfg.imp_n_layer)

    def forward(self, z, doc=None, sigma=None):
        """SUBS logits (B, T, V) float32 of x0 given the noisy z: the [MASK] logit is -inf (zero masking).
        sigma: (B,) noise level -log alpha_t, used only with time_cond (MDLM zeroes it by default)."""
        B, T = z.shape
        if sigma is None or not self.cfg.time_cond:
            sigma = torch.zeros(B, device=z.device)
        c = F.silu(self.sigma_map(sigma))
        x = self.drop(self.wte(z))
        rope = self.rope(T)
        mask = layer_mask(self.cfg, doc, False, 0, T, z.device, self.training) if doc is not None else None
        for block in self.blocks:
            x = run_block(self.cfg, block, x, c, rope, mask)
        shift, scale = self.adaLN_f(c)[:, None].chunk(2, dim=-1)
        logits = self.head(modulate(self.norm_f(x), shift, scale)).float()
        logits[..., self.mask_id] = float('-inf')
        return logits


# ----------------------------------------------------------------------------- backpack: sense vectors + contextualisation
# Backpack language models (Hewitt, Thickstun, Manning, Liang, ACL 2023, arXiv 2305.16765; docs/backpack.md).
# Each token x gets k non-contextual sense vectors C(x) = FF(E x) in R^{k x d} (eq. 1, 10); the causal
# Trunk (with positions) gives h_{1:n}, and a k-head key-query attention without values gives the weights
# alpha_l = softmax(h K_l^T Q_l h^T / sqrt(d/k)) (eq. 3, 11, 12), causal, normalised per sense l. The output
# o_i = sum_{j<=i} sum_l alpha_{l,i,j} C(x_j)_l (eq. 2) goes through the tied head, logits = E o (eq. 9).
# The sense network runs once per id: on the vocabulary when it is no larger than the batch (static shapes), else
# on the batch's distinct ids (Backpack.senses); the senses are the values of one F.scaled_dot_product_attention
# call (q/k head size d/k, value size d, one head per sense), summed over heads. `decompose` keeps the explicit alpha for diagnostics.

class SenseNetwork(nn.Module):
    """C(x) = FF(E x) as HF BackpackSenseNetwork (App. A.1; docs/backpack.md):
    r = Drop(E x); h = LN0(r); r = h + r; h = LN1(r); r = MLP1(h) + r (d -> 4d -> d); h = LN2(r);
    senses = MLP2(h) (d -> 4d -> k d), laid out (k, d) per token. GELU is the tanh form (GPT-2's gelu_new).
    No positions and no other tokens: a token's senses are a function of its id alone."""

    def __init__(self, cfg):
        super().__init__()
        d, self.k = cfg.n_embd, cfg.n_senses
        self.drop = nn.Dropout(cfg.dropout)
        self.ln0, self.ln1, self.ln2 = LayerNorm(d), LayerNorm(d), LayerNorm(d)
        self.fc1, self.proj1 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.fc2, self.proj2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, self.k * d)

    def forward(self, e):
        """e: (..., d) input embeddings -> senses (..., k, d)."""
        r = self.drop(e)
        r = self.ln0(r) + r
        r = r + self.drop(self.proj1(F.gelu(self.fc1(self.ln1(r)), approximate='tanh')))
        s = self.drop(self.proj2(F.gelu(self.fc2(self.ln2(r)), approximate='tanh')))
        return s.view(*e.shape[:-1], self.k, e.shape[-1])


class Backpack(GPT):
    """Backpack LM over the shared causal Trunk; `gpt` with the same config is the comparison: the only
    extra parameters are the sense network and the weight network (Linear d -> 2d)."""

    def __init__(self, cfg):
        LM.__init__(self)
        if cfg.n_senses < 1 or cfg.n_embd % cfg.n_senses:
            raise ValueError(f"n_embd {cfg.n_embd} must be a multiple of n_senses {cfg.n_senses}")
        self.cfg = cfg
        self.trunk = Trunk(cfg, causal=True)
        self.sense_net = SenseNetwork(cfg)
        self.sense_weights = nn.Linear(cfg.n_embd, 2 * cfg.n_embd)   # K_l, Q_l of every sense, stacked
        self._init_weights(cfg.n_layer)

    def senses(self, idx):
        """C(x) for a batch of ids (any shape) -> (*idx.shape, k, d), computed once per distinct id: over the
        whole vocabulary when it is no larger than the batch (a static shape, no host sync), else over the
        batch's distinct ids (torch.unique, whose output size needs a sync)."""
        if self.cfg.vocab_size <= idx.numel():
            return self.sense_net(self.trunk.wte.weight)[idx]
        uniq, inv = torch.unique(idx, return_inverse=True)
        return self.sense_net(self.trunk.wte(uniq))[inv]

    def sense_table(self, ids):
        """C(x) of chosen ids (1-D) -> (n, k, d), for analysis."""
        return self.sense_net(self.trunk.wte(torch.as_tensor(ids, device=self.trunk.wte.weight.device)))

    def _qk(self, h):
        B, T, d = h.shape
        k = self.cfg.n_senses
        q, kk = self.sense_weights(h).view(B, T, 2, k, d // k).permute(2, 0, 3, 1, 4)  # (B, k, T, d/k) each
        return q, kk

    def _mask(self, doc, T, device):
        return attention_mask(doc, True, T=T, device=device) if (self.cfg.doc_mask and doc is not None) else None

    def forward(self, idx, targets=None, doc=None, all_logits=False, sense_scale=None):
        """sense_scale: optional (B, T, k) factors delta_{l,j} on the senses of the token at position j
        (the control of eq. 15 with delta independent of i, which lets it enter as scaled values)."""
        B, T = idx.shape
        h, _ = self.trunk(idx, doc)
        C = self.senses(idx)                                    # (B, T, k, d)
        if sense_scale is not None:
            C = C * sense_scale[..., None].to(C.dtype)
        q, kk = self._qk(h)
        mask = self._mask(doc, T, idx.device)
        # o_i = sum_l sum_{j<=i} alpha_{l,i,j} C(x_j)_l (eq. 2): SDPA with the senses as values (head size d),
        # its default scale 1/sqrt(d/k) (eq. 12), causal, then the sum over the k heads
        o = F.scaled_dot_product_attention(q, kk, C.transpose(1, 2).to(q.dtype), attn_mask=mask,
                                           is_causal=mask is None).sum(1)
        if targets is None and not all_logits:
            o = o[:, -1:]
        logits = F.linear(o, self.trunk.wte.weight)             # eq. 9, E tied
        return logits, (self.loss(logits, targets) if targets is not None else None)

    def decompose(self, idx, doc=None):
        """The explicit path: alpha (B, k, T, T), senses C (B, T, k, d), logits (B, T, V) = E^T sum alpha C."""
        B, T = idx.shape
        h, _ = self.trunk(idx, doc)
        C = self.senses(idx)
        q, kk = self._qk(h)
        scores = q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
        mask = self._mask(doc, T, idx.device)
        if mask is None:
            mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        alpha = torch.softmax(scores.masked_fill(~mask, float('-inf')), dim=-1)
        o = torch.einsum('blij,bjld->bid', alpha, C)
        return alpha, C, F.linear(o, self.trunk.wte.weight)


# keys of the HF state dict that are aliases or buffers, not parameters of their own


# ----------------------------------------------------------------------------- atlas
# Atlas (Behrouz et al. 2025, "ATLAS: Learning to Optimally Memorize the Context at Test Time"; docs/atlas.md).
# Per layer and head a deep memory M_W maps feature-mapped keys to values and is trained *at test time*:
#   Omega rule (eq. 9):    min_W  sum_{i=t-c+1..t} gamma_i 1/2 ||M_W(phi(k_i)) - v_i||^2
#   Atlas (eq. 32-33):     S_t = theta_t S_{t-1} + grad_t,   W_t = alpha_t W_{t-1} - eta_t NS_5(S_t)
# (the descent-consistent signs of docs/atlas.md; NS_5 = Newton-Schulz, off with mem_muon=False:
# W_t = alpha_t W_{t-1} - eta_t S_t). Every gate is input-dependent and raw: alpha retention, eta inner lr
# (eta_max * sigmoid), theta momentum, gamma window admission, each a sigmoid of a linear map of x_t.
# Chunked parallel form (Titans section 3.2, Atlas section 5): inside a chunk of b tokens every gradient is
# taken at the chunk-start state W_n, the window is a banded 0/1 mask times gamma, momentum and retention are
# scalar products over the chunk, so the chunk's update is a few einsums over rank-1 gradients; only the
# chunk-end state is materialised (with NS_5, every S_t of the chunk is). Reads of chunk n use W_n, the
# state after chunk n-1: no prediction reads memory written by its own or a later token.
# With c = 1, no feature map, no NS and eta = 1 it is the Titans update (Behrouz et al. 2025a, eq. 13-14):
#   S'_t = eta'_t S'_{t-1} - theta'_t grad,  M_t = (1 - alpha'_t) M_{t-1} + S'_t
# with S' = -S, eta' = theta (momentum), theta' = gamma (lr on the gradient) and alpha' = 1 - alpha.
# Differences from the public code (docs/atlas.md): writes are differentiable (the outer loss trains
# W_K, W_V and every gate through them); the window sums raw per-token gradients; NS acts on the momentum.

NS_COEFFS = (3.4445, -4.7750, 2.0315)   # Muon's quintic Newton-Schulz coefficients


def newton_schulz5(G, steps=5, eps=1e-7):
    """NS_5(G): the orthogonal factor of G (approximately U V^T of its SVD), batched over leading dims."""
    a, b, c = NS_COEFFS
    X = G / (G.flatten(-2).norm(dim=-1)[..., None, None] + eps)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.transpose(-1, -2)
    for _ in range(steps):
        A = X @ X.transpose(-1, -2)
        X = a * X + (b * A + c * A @ A) @ X
    return X.transpose(-1, -2) if tall else X


def poly_monomials(d, p):
    """For phi_p: the index tuples of every monomial of degree 2..p in d variables and the weights
    sqrt(multinomial) that make phi(q).phi(k) = sum_i a_i (q.k)^i exactly."""
    from itertools import combinations_with_replacement
    out = []
    for deg in range(2, p + 1):
        idx = list(combinations_with_replacement(range(d), deg))
        w = [math.sqrt(math.factorial(deg) / math.prod(math.factorial(t.count(j)) for j in set(t))) for t in idx]
        out.append((torch.tensor(idx), torch.tensor(w, dtype=torch.float64)))
    return out


def poly_dim(d, p):
    """Width of phi_p(x) for x in R^d: C(d + p, p) (p = 0: no map, width d)."""
    return math.comb(d + p, p) if p else d


def poly_features(x, log_a, monomials):
    """phi_p(x) = [sqrt(a_0), sqrt(a_1) x, sqrt(a_i) x^beta for |beta| = i >= 2] (Atlas section 3.2: the
    Taylor approximation of exp(q.k) with learnable a_i, initialised to 1/i!)."""
    a = log_a.exp().sqrt().to(x.dtype)
    parts = [a[0].expand(*x.shape[:-1], 1), a[1] * x]
    for i, (idx, w) in enumerate(monomials, 2):
        parts.append(a[i] * x[..., idx].prod(-1) * w.to(x.dtype))
    return torch.cat(parts, dim=-1)


def gelu_grad(a):
    """d GELU(a) / da for the exact (erf) GELU: Phi(a) + a phi(a)."""
    return 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0))) + a * torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def memory_apply(W, z, residual):
    """M_W(z) for a batch of states. W: list of (B, H, out, in) in forward order ([W] linear, [W_in, W_out]
    MLP); z: (B, H, n, D). Returns the output (B, H, n, dv) and the pre-activation of the MLP (or None)."""
    if len(W) == 1:
        y, a = z @ W[0].transpose(-1, -2), None
    else:
        a = z @ W[0].transpose(-1, -2)
        y = F.gelu(a) @ W[1].transpose(-1, -2)
    return (y + z if residual else y), a


def memory_grads(W, z, v, residual):
    """Per-token gradients of 1/2 ||M_W(z_i) - v_i||^2 as rank-1 factors: for each weight matrix a pair
    (u_i, w_i) with grad_i = u_i w_i^T. Also returns the errors e_i = M_W(z_i) - v_i."""
    y, a = memory_apply(W, z, residual)
    e = y - v
    if len(W) == 1:
        return [(e, z)], e
    delta = (e @ W[1]) * gelu_grad(a)               # back through W_out and the GELU
    return [(delta, z), (e, F.gelu(a))], e


def omega_scan(k, v, q, log_alpha, eta, log_theta, gamma, W0, chunk, window, muon=True, residual=False,
               write=True, diag=None, ns_steps=5, muon_scope='token'):
    """The Atlas memory over a sequence, chunk by chunk (module comment above).

    muon_scope='token' orthogonalises every token's momentum (Atlas eq. 33: W_t = alpha_t W_{t-1} -
    eta_t NS(S_t), every S_t of the chunk materialised); 'chunk' makes one Muon step per chunk:
    W_end = A W_start - C NS(sum_t c_t S_t / C), c_t = eta_t prod_{s>t} alpha_s, C = sum_t c_t -- the same
    total step size, the direction of the chunk's weighted mean momentum (the per-token update for chunks
    of one token), with no per-token state. The memory states W and S stay float32 when q, k, v are bfloat16 (autocast).

    k, q: (B, H, T, D) feature-mapped keys / queries;  v: (B, H, T, dv)
    log_alpha, log_theta: (B, H, T) log retention / log momentum (<= 0);  eta, gamma: (B, H, T) in [0, 1+]
    W0: list of (H, out, in) initial weights (learned).  write=False reads W0 everywhere (memory-reset control).
    diag: a dict to fill with storage losses (pre / post write) and the final state, or None.
    Returns the reads (B, H, T, dv)."""
    B, H, T, _ = k.shape
    b, c = max(1, min(chunk, T)), max(1, window)
    n = -(-T // b)
    pad = n * b - T
    valid = torch.ones(B, H, T + pad, dtype=k.dtype, device=k.device)
    if pad:  # tail padding: no retention decay, no writes, outside every window
        valid[..., T:] = 0
        k, v, q = (F.pad(t, (0, 0, 0, pad)) for t in (k, v, q))
        log_alpha, log_theta, eta, gamma = (F.pad(t, (0, pad)) for t in (log_alpha, log_theta, eta, gamma))
    # c - 1 zero keys in front, so every window has c slots; their gamma is 0
    kw, vw = F.pad(k, (0, 0, c - 1, 0)), F.pad(v, (0, 0, c - 1, 0))
    gw = F.pad(gamma, (c - 1, 0))
    m = b + c - 1
    ti, si = torch.arange(b, device=k.device)[:, None], torch.arange(m, device=k.device)[None, :]
    band = ((si >= ti) & (si <= ti + c - 1)).to(k.dtype)            # token t's window: slots t .. t + c - 1
    tril = torch.ones(b, b, dtype=torch.bool, device=k.device).tril()
    W = [w.to(torch.promote_types(w.dtype, torch.float32)).unsqueeze(0).expand(B, *w.shape) for w in W0]  # >= fp32
    S = [torch.zeros_like(w) for w in W]
    dt = k.dtype
    reads, pre, post = [], [], []
    for j in range(n):
        t0 = j * b
        sl = slice(t0, t0 + b)
        reads.append(memory_apply(W, q[:, :, sl], residual)[0])
        if not write or (j == n - 1 and diag is None):  # the last chunk's write is never read
            continue
        keep_S = j < n - 2 or diag is not None       # S feeds the next chunk's write only
        z, vv = kw[:, :, t0:t0 + m], vw[:, :, t0:t0 + m]
        grads, err = memory_grads(W, z, vv, residual)
        G = gw[:, :, None, t0:t0 + m] * band.to(gw.dtype) * valid[:, :, sl, None].to(gw.dtype)  # (B, H, b, m)
        ct = log_theta[:, :, sl].cumsum(-1)                                # log prod_{s<=t} theta_s
        L = (ct[..., :, None] - ct[..., None, :]).masked_fill(~tril, float('-inf')).exp()  # prod_{j<s<=t} theta_s
        LG = L @ G                                                         # S_t = p_t S_prev + sum_i LG[t,i] g_i
        p = ct.exp()
        ca = log_alpha[:, :, sl].cumsum(-1)
        A = ca[..., -1].exp()                                              # prod_t alpha_t
        coef = eta[:, :, sl] * (ca[..., -1:] - ca).exp()                   # eta_t prod_{s>t} alpha_s
        W_new, S_new = [], []
        for l, (u, w) in enumerate(grads):
            if muon and muon_scope == 'token':
                St = p[..., None, None] * S[l][:, :, None] + torch.einsum('bhti,bhiu,bhiw->bhtuw', LG.to(dt), u, w)
                W_new.append(A[..., None, None] * W[l] - torch.einsum('bht,bhtuw->bhuw', coef.to(dt),
                                                                       newton_schulz5(St.to(dt), ns_steps)))
                S_new.append(St[:, :, -1] if keep_S else None)
                continue
            # everything is linear in the rank-1 gradients: no per-token state is materialised
            wW = (coef[..., None] * LG).sum(-2)
            kappa = (coef * p).sum(-1)
            U = kappa[..., None, None] * S[l] + torch.einsum('bhi,bhiu,bhiw->bhuw', wW.to(dt), u, w)  # sum_t c_t S_t
            if muon:  # one Muon step for the chunk: size sum_t c_t, direction NS(the c-weighted mean momentum)
                csum = coef.sum(-1)[..., None, None]
                U = csum * newton_schulz5((U / csum.clamp_min(1e-12)).to(dt), ns_steps)
            W_new.append(A[..., None, None] * W[l] - U)
            S_new.append(p[..., -1, None, None] * S[l] + torch.einsum('bhi,bhiu,bhiw->bhuw', LG[:, :, -1].to(dt), u, w)
                         if keep_S else None)
        if diag is not None:  # storage loss of this chunk's own tokens, before and after its write
            with torch.no_grad():
                own, vo = slice(c - 1, m), vv[:, :, c - 1:]
                norm_v = vo.pow(2).sum(-1).clamp_min(1e-12)
                e_post = memory_apply(W_new, z[:, :, own], residual)[0] - vo
                keep = valid[:, :, sl]
                pre.append(((err[:, :, own].pow(2).sum(-1) / norm_v) * keep).sum() / keep.sum().clamp_min(1))
                post.append(((e_post.pow(2).sum(-1) / norm_v) * keep).sum() / keep.sum().clamp_min(1))
        W, S = W_new, S_new
    if diag is not None:
        diag['W'], diag['S'] = [w.detach() for w in W], [s.detach() for s in S]
        if pre:
            diag['storage_pre'] = torch.stack(pre).mean().item()
            diag['storage_post'] = torch.stack(post).mean().item()
    return torch.cat(reads, dim=2)[:, :, :T]


class AtlasMemory(nn.Module):
    """One layer's long-term memory: q/k/v projections + causal depthwise conv (size mem_conv), L2-normalised
    q, k and v, the polynomial feature map, the four gates, omega_scan, a per-head
    RMS-normalised read and the output projection."""

    def __init__(self, cfg):
        super().__init__()
        H, d = cfg.n_head, cfg.n_embd
        self.cfg, self.H = cfg, H
        self.dk, self.dv = cfg.mem_key_dim or cfg.head_dim, cfg.head_dim
        self.hidden = cfg.mem_hidden or cfg.head_dim
        self.D = poly_dim(self.dk, cfg.mem_poly)
        self.qkv = nn.Linear(d, H * (2 * self.dk + self.dv), bias=False)
        C = H * (2 * self.dk + self.dv)
        self.conv = nn.Conv1d(C, C, cfg.mem_conv, groups=C, bias=False) if cfg.mem_conv > 1 else None
        self.gates = nn.Linear(d, 4 * H)  # alpha, eta, theta, gamma (raw logits; sigmoid, never floored)
        self.poly_log_a = (nn.Parameter(torch.tensor([-math.lgamma(i + 1) for i in range(cfg.mem_poly + 1)]))
                           if cfg.mem_poly else None)
        self.monomials = poly_monomials(self.dk, cfg.mem_poly) if cfg.mem_poly else []
        for i, (idx, w) in enumerate(self.monomials):
            self.register_buffer(f'mono_idx{i}', idx, persistent=False)
            self.register_buffer(f'mono_w{i}', w, persistent=False)
        shapes = [(self.dv, self.D)] if cfg.mem_depth == 1 else [(self.hidden, self.D), (self.dv, self.hidden)]
        if cfg.mem_depth not in (1, 2):
            raise ValueError(f"mem_depth must be 1 (linear) or 2 (MLP), not {cfg.mem_depth}")
        self.mem_w0 = nn.ParameterList([nn.Parameter(torch.empty(H, o, i)) for o, i in shapes])
        self.residual = self.D == self.dv
        self.read_norm = RMSNorm(self.dv)
        self.proj = nn.Linear(H * self.dv, d, bias=cfg.bias)
        self.write, self.diag = True, None   # memory-reset control; diagnostics dict when collecting

    def reset_memory_parameters(self):
        """Called after the LM's generic init: identity-like conv (the current token passes through), W0 with
        1/sqrt(fan_in) scale (so GELU is not stuck at 0), gate biases alpha 0.98, eta 0.5 eta_max, theta 0.5,
        gamma 0.88 at the start."""
        with torch.no_grad():
            if self.conv is not None:
                self.conv.weight.zero_()
                self.conv.weight[..., -1] = 1.0
            for w in self.mem_w0:
                nn.init.normal_(w, std=1.0 / math.sqrt(w.shape[-1]))
            self.gates.bias.view(4, self.H).copy_(torch.tensor([4.0, 0.0, 0.0, 2.0])[:, None])

    def features(self, x):
        if self.poly_log_a is None:  # mem_poly = 0: no feature map (mem_poly = 1 has no monomials but a_0, a_1)
            return x
        mono = [(getattr(self, f'mono_idx{i}'), getattr(self, f'mono_w{i}')) for i in range(len(self.monomials))]
        return poly_features(x, self.poly_log_a, mono).to(x.dtype)   # autocast runs prod in float32

    def forward(self, x):
        B, T, _ = x.shape
        H, dk, dv = self.H, self.dk, self.dv
        h = self.qkv(x)
        if self.conv is not None:  # causal: left-pad by size - 1
            h = self.conv(F.pad(h.transpose(1, 2), (self.conv.kernel_size[0] - 1, 0))).transpose(1, 2)
        q, k, v = h.view(B, T, H, 2 * dk + dv).transpose(1, 2).split([dk, dk, dv], dim=-1)
        # q, k L2-normalised (Titans 3.1); v too, so the inner step size does not depend on the scale of the
        # residual stream (unnormalised values let the plain-gradient write diverge as activations grow; the
        # read is RMS-normalised below, so no information a read needs is lost)
        # the scan runs in the projections' dtype (bfloat16 under autocast: F.normalize returns float32 there,
        # hence the explicit cast); the gates' cumulative products and the memory state stay float32
        dt = h.dtype
        q, k, v = F.normalize(q, dim=-1).to(dt), F.normalize(k, dim=-1).to(dt), F.normalize(v, dim=-1).to(dt)
        g = self.gates(x).view(B, T, 4, H).permute(2, 0, 3, 1)            # (4, B, H, T) raw logits
        g = g.to(torch.promote_types(g.dtype, torch.float32))
        if self.diag is not None:
            self.diag['gates'] = torch.sigmoid(g).detach()
        reads = omega_scan(self.features(k), v, self.features(q), F.logsigmoid(g[0]),
                           self.cfg.mem_lr * torch.sigmoid(g[1]), F.logsigmoid(g[2]),
                           torch.sigmoid(g[3]), list(self.mem_w0), self.cfg.mem_chunk, self.cfg.mem_window,
                           self.cfg.mem_muon, self.residual, self.write, self.diag,
                           self.cfg.mem_ns_steps, self.cfg.mem_muon_scope)
        return self.proj(self.read_norm(reads).transpose(1, 2).reshape(B, T, H * dv))


class AtlasBlock(nn.Module):
    """A pre-norm block with memory and sliding-window attention (window = cfg.window), Titans section 4:
      mag: x + g * SWA(n(x)) + (1 - g) * Mem(n(x)), g = sigmoid(W_g n(x)) per channel; then the MLP
      mal: x + Mem(n(x)), then x + SWA(n(x)); then the MLP."""

    def __init__(self, cfg, causal=True):
        super().__init__()
        self.mode = cfg.atlas_mode
        self.norm1, self.attn = make_norm(cfg), Attention(cfg, causal=True)
        self.norm_m = make_norm(cfg) if self.mode == 'mal' else None
        self.mem = AtlasMemory(cfg)
        self.mix = nn.Linear(cfg.n_embd, cfg.n_embd) if self.mode == 'mag' else None
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None, agglu=None):
        if self.mode == 'mag':
            h = self.norm1(x)
            g = torch.sigmoid(self.mix(h))
            if self.mem.diag is not None:
                self.mem.diag['mix'] = g.detach().float()
            x = x + self.drop(g * self.attn(h, rope, mask) + (1 - g) * self.mem(h))
        else:
            x = x + self.drop(self.mem(self.norm_m(x)))
            x = x + self.drop(self.attn(self.norm1(x), rope, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class Atlas(GPT):
    """Causal LM whose blocks are AtlasBlocks (memory + sliding-window attention); `gpt` with the same
    config (same window) is the baseline without the memory."""

    def __init__(self, cfg):
        LM.__init__(self)
        if cfg.mem_window < 1 or cfg.mem_chunk < 1:
            raise ValueError("mem_window and mem_chunk must be >= 1")
        self.cfg = cfg
        self.trunk = Trunk(cfg, causal=True, block=AtlasBlock)
        self._init_weights(cfg.n_layer)
        for mem in self.memories():
            mem.reset_memory_parameters()

    def memories(self):
        return [blk.mem for blk in self.trunk.blocks]

    def set_memory_writes(self, on):
        """False: every read sees the learned initial state W0 (the memory-reset control)."""
        for mem in self.memories():
            mem.write = bool(on)

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward) of what runs: 6N for the parameter matmuls (without the
        position embeddings and the memory's initial state W0, which is no per-token matmul), 12 L H Q T for
        attention (the dense reference computes every score; FlexAttention skips the tiles outside the window,
        so on CUDA this term is an upper bound), and 3x the memory's forward matmuls per layer and head
        (omega_scan): with chunks of b tokens, m = b + c - 1 window slots and P = sum of the memory's matrix
        sizes, per chunk the read 2bP, the gradient pass at the chunk-start state 2mP (+ 2m dv h back through
        W_out), the momentum weights L @ G 2b^2 m, and then
          no Muon / per-chunk Muon: the two rank-1 accumulations 4mP (+ one Newton-Schulz per matrix),
          per-token Muon: every S_t 2bmP, b Newton-Schulz per matrix and their weighted sum 2bP
        (the last chunk writes nothing: no read sees it),
        a Newton-Schulz step of an (o, i) matrix costing 4 s^2 t + 2 s^3 (s = min, t = max: X X^T, A A, (.) X).
        tests/test_atlas_flops.py checks this against torch.utils.flop_counter."""
        cfg = self.cfg
        T = T or cfg.block_size
        mem = self.memories()[0]
        shapes = [tuple(w.shape[1:]) for w in mem.mem_w0]
        n = self.num_params() - sum(p.numel() for name, p in self.named_parameters()
                                    if name.endswith('wpe.weight') or '.mem_w0.' in name)
        P = sum(o * i for o, i in shapes)
        b = max(1, min(cfg.mem_chunk, T))
        m = b + max(1, cfg.mem_window) - 1
        ns = sum(cfg.mem_ns_steps * (4 * min(o, i) ** 2 * max(o, i) + 2 * min(o, i) ** 3) for o, i in shapes)
        n_chunks = -(-T // b)
        write = 2 * m * P + (2 * m * shapes[1][0] * shapes[1][1] if len(shapes) == 2 else 0) + 2 * b * b * m
        if cfg.mem_muon and cfg.mem_muon_scope == 'token':
            write += 2 * b * m * P + b * ns + 2 * b * P
            momentum = 0                       # S_t comes out of the per-token states
        else:
            write += 2 * m * P + (ns if cfg.mem_muon else 0)
            momentum = 2 * m * P               # the chunk-end S, needed by the next chunk's write
        # the last chunk writes nothing (never read) and the one before it keeps no S (omega_scan)
        per_seq = n_chunks * 2 * b * P + max(0, n_chunks - 1) * write + max(0, n_chunks - 2) * momentum
        return (6 * n + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T
                + 3 * cfg.n_layer * cfg.n_head * per_seq / T)


MODELS = {'gpt': GPT, 'encoder': Encoder, 'mdlm': MDLM, 'backpack': Backpack, 'atlas': Atlas}


def build_model(cfg):
    if cfg.arch not in MODELS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {', '.join(MODELS)}")
    return MODELS[cfg.arch](cfg)


def optimizer_groups(model, weight_decay):
    """AdamW parameter groups: weight decay on matrices (dim >= 2) only, never on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
            {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
