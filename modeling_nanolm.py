"""
The toolkit's masked-LM encoder (model.py, arch='encoder') for Hugging Face transformers, self-contained: export.py
copies this file into an exported model directory, where config.json's auto_map points AutoConfig and
AutoModelForMaskedLM at it, so that

    AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)

rebuilds the trained model with torch and transformers alone. It imports nothing of this repository, and
tests/test_export.py checks that it reproduces model.Encoder's logits.

The network, as model.Encoder (the Aeneas torso): token embedding (+ learned positions when pos='learned') ->
LayerNorm -> n_layer pre-norm blocks x + Attn(Norm(x)), x + MLP(Norm(x)) -> Norm; bidirectional attention with
n_head heads of size d_kv (free of n_embd) and rotary embeddings (RoFormer eq. 34, rotate-half over the whole
head) when pos='rope'; MLP gelu | geglu | swiglu of width d_ff (Shazeer 2020); Norm RMSNorm (computed in float32)
or LayerNorm; biases in the trunk only if bias; with canon = k > 0, a Canon layer before each block (Allen-Zhu 2025,
Canon-A: h_t + sum_o w_o h_{t+o} over the k centred offsets, a neighbour in another document, in padding or
beyond the sequence counting as zero); the restoration head Dense -> GELU -> LayerNorm -> Dense (with
biases), and logits = head(h) E^T with E the input embedding (tied, no separate output matrix).
The state-dict keys are model.Encoder's (trunk.*, head.*), so model.safetensors is its state dict unchanged.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class NanoLMEncoderConfig(PretrainedConfig):
    model_type = 'nanolm_encoder'
    attribute_map = {'hidden_size': 'n_embd', 'num_hidden_layers': 'n_layer', 'num_attention_heads': 'n_head',
                     'max_position_embeddings': 'block_size', 'intermediate_size': 'd_ff'}

    def __init__(self, vocab_size=1024, block_size=512, n_layer=2, n_head=4, n_embd=128, d_kv=0, d_ff=0, bias=False,
                 norm='rmsnorm', mlp='geglu', pos='rope', rope_base=10000.0, window=0, dropout=0.0,
                 rms_norm_eps=1e-6, layer_norm_eps=1e-5, canon=0, **kwargs):
        self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd = vocab_size, block_size, n_layer, n_head, n_embd
        self.d_kv, self.d_ff = d_kv or n_embd // n_head, d_ff or 4 * n_embd
        self.bias, self.norm, self.mlp, self.pos, self.rope_base = bias, norm, mlp, pos, rope_base
        self.window, self.dropout, self.canon = window, dropout, canon
        self.rms_norm_eps, self.layer_norm_eps = rms_norm_eps, layer_norm_eps
        kwargs.setdefault('tie_word_embeddings', False)  # the head reads the embedding matrix; nothing to tie
        super().__init__(**kwargs)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return y.to(torch.promote_types(x.dtype, self.weight.dtype))


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias."""

    def __init__(self, dim, bias, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def make_norm(cfg):
    return RMSNorm(cfg.n_embd, cfg.rms_norm_eps) if cfg.norm == 'rmsnorm' else LayerNorm(cfg.n_embd, cfg.bias, cfg.layer_norm_eps)


def rotary(T, head_dim, base, device):
    """cos, sin (T, head_dim / 2) of positions 0..T-1 (computed per call: no buffer to initialise)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    freqs = torch.outer(torch.arange(T, device=device).float(), inv_freq)
    return freqs.cos(), freqs.sin()


def apply_rotary(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.head_dim, self.dropout = cfg.n_head, cfg.d_kv, cfg.dropout
        inner = cfg.n_head * cfg.d_kv
        self.qkv = nn.Linear(cfg.n_embd, 3 * inner, bias=cfg.bias)
        self.proj = nn.Linear(inner, cfg.n_embd, bias=cfg.bias)

    def forward(self, x, rope=None, mask=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg.mlp
        gated = cfg.mlp in ('geglu', 'swiglu')
        self.fc = nn.Linear(cfg.n_embd, (2 if gated else 1) * cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        h = self.fc(x)
        if self.kind == 'gelu':
            h = F.gelu(h)
        else:
            a, b = h.chunk(2, dim=-1)
            h = (F.gelu(a) if self.kind == 'geglu' else F.silu(a)) * b
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.attn = make_norm(cfg), Attention(cfg)
        self.norm2, self.mlp = make_norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None):
        x = x + self.drop(self.attn(self.norm1(x), rope, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


def shift(x, o):
    """y[:, t] = x[:, t + o] along dim 1, zero where t + o falls outside the sequence."""
    if o == 0:
        return x
    T = x.shape[1]
    pad = [0, 0] * (x.dim() - 2) + [max(-o, 0), max(o, 0)]
    return F.pad(x, pad)[:, max(-o, 0) + o:max(-o, 0) + o + T]


class Canon(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        k = cfg.canon
        self.offsets = list(range(-(k // 2), k - k // 2))
        self.weight = nn.Parameter(torch.zeros(k, cfg.n_embd))

    def forward(self, x, same=None):
        out = x
        for w, o in zip(self.weight, self.offsets):
            h = shift(x, o)
            if same is not None and o != 0:
                h = h * same[o].to(x.dtype)
            out = out + w * h
        return out


class Trunk(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == 'learned' else None
        self.emb_norm = LayerNorm(cfg.n_embd, cfg.bias, cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.canon = nn.ModuleList([Canon(cfg) for _ in range(cfg.n_layer)]) if cfg.canon else None
        self.norm = make_norm(cfg)

    def forward(self, idx, mask=None, hidden=None, same=None):
        T = idx.shape[1]
        if T > self.cfg.block_size and self.wpe is not None:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.cfg.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(self.emb_norm(x))
        rope = rotary(T, self.cfg.d_kv, self.cfg.rope_base, idx.device) if self.cfg.pos == 'rope' else None
        if hidden is not None:
            hidden.append(x)
        for i, block in enumerate(self.blocks):
            if self.canon is not None:
                x = self.canon[i](x, same)
            x = block(x, rope, mask)
            if hidden is not None:
                hidden.append(x)
        return self.norm(x)


class NanoLMEncoderPreTrainedModel(PreTrainedModel):
    config_class = NanoLMEncoderConfig
    base_model_prefix = 'trunk'
    _no_split_modules = ['Block']

    def _init_weights(self, module):
        """GPT-2 init (model.py): N(0, 0.02) matrices, ones / zeros for norms and biases (for a fresh model only;
        from_pretrained overwrites every weight from model.safetensors)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (RMSNorm, LayerNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, 'bias', None) is not None:
                nn.init.zeros_(module.bias)


class NanoLMEncoderForMaskedLM(NanoLMEncoderPreTrainedModel):
    """logits (B, T, V) of every position; with labels (-100 = ignored), the mean cross-entropy as loss."""

    def __init__(self, config):
        super().__init__(config)
        d = config.n_embd
        self.trunk = Trunk(config)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=config.layer_norm_eps),
                                  nn.Dropout(config.dropout), nn.Linear(d, d))
        self.post_init()

    def get_input_embeddings(self):
        return self.trunk.wte

    def set_input_embeddings(self, value):
        self.trunk.wte = value

    def attention_mask(self, B, T, attention_mask, document_ids, device):
        """Boolean (B or 1, 1, T, T), True where query i may see key j: keys that are not padding
        (attention_mask 1), in the same document (document_ids), within the window (|i - j| < window); None
        when every pair may attend (the toolkit's model then uses no mask either)."""
        m = None
        if self.config.window:
            i = torch.arange(T, device=device)
            m = ((i[:, None] - i[None, :]).abs() < self.config.window)[None, None]
        if document_ids is not None:
            d = document_ids[:, None, :, None] == document_ids[:, None, None, :]
            m = d if m is None else m & d
        if attention_mask is not None and not bool(attention_mask.all()):
            k = attention_mask.bool()[:, None, None, :]
            m = k if m is None else m & k
        return m

    def canon_neighbours(self, attention_mask, document_ids):
        """{offset: (B, T, 1) bool} for the Canon layers: the neighbour is in the same document and not padding
        (None when neither is given or there are no Canon layers)."""
        if not self.config.canon or (attention_mask is None and document_ids is None):
            return None
        k = self.config.canon
        same = {}
        for o in range(-(k // 2), k - k // 2):
            if o:
                m = shift(document_ids, o) == document_ids if document_ids is not None else None
                if attention_mask is not None:
                    a = shift(attention_mask.bool(), o)
                    m = a if m is None else m & a
                same[o] = m[..., None]
        return same

    def forward(self, input_ids, attention_mask=None, document_ids=None, labels=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        B, T = input_ids.shape
        mask = self.attention_mask(B, T, attention_mask, document_ids, input_ids.device)
        hidden = [] if output_hidden_states else None
        h = self.trunk(input_ids, mask, hidden, self.canon_neighbours(attention_mask, document_ids))
        logits = F.linear(self.head(h), self.trunk.wte.weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=tuple(hidden) if hidden is not None else None)


NanoLMEncoderConfig.register_for_auto_class()
NanoLMEncoderForMaskedLM.register_for_auto_class('AutoModelForMaskedLM')
