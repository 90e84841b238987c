"""
Sampling of the masked diffusion LM (mdlm): ancestral ('ddpm') sampling with the per-sequence cache
(ddpm_cache) and semi-autoregressive generation past the context. Causal generation is the model's own
`generate` (model.GPT, as in nanoGPT); restoration of damaged text (beam search over gaps) is in
restoration.py.
"""
import math

import torch

from objectives import mdlm_mask_rate


def _sample_categorical(probs, generator):
    """Gumbel-max in float64 (32-bit Gumbel truncates low-probability tokens, lowering the effective
    temperature: Zheng et al. 2024, arXiv 2409.02908): argmax p / E with E ~ Exp(1). The uniforms are
    drawn where the generator lives: a generator of probs' device draws them there, with no copy (a CPU
    generator for a model on another device still works: its draws are copied over)."""
    u = torch.rand(probs.shape, dtype=torch.float64, generator=generator,
                   device=generator.device if generator is not None else probs.device).to(probs.device)
    gumbel_norm = u.add_(1e-10).log_().neg_().add_(1e-10)  # 1e-10 - log(u + 1e-10), in place: one (B, T, V) buffer
    return (probs / gumbel_norm).argmax(dim=-1)


@torch.no_grad()
def mdlm_sample(model, z, steps=128, cache=True, generator=None, t_end=1e-5):
    """Ancestral ('ddpm') sampling of MDLM (diffusion.py _ddpm_update, L612-637) from z (B, T), where
    [MASK] marks positions to generate and every other token is known and stays fixed (carry-over):
    all [MASK] is unconditional generation, anything else infilling. Grid linspace(1, t_end, steps+1);
    from t to s a masked position becomes token v with probability p(v | z_t) (move_t - move_s) / move_t
    and stays masked with move_s / move_t, move(t) = (1 - eps) t; then one final argmax fills any mask
    left (MDLM noise_removal). All in float64.
    cache=True is ddpm_cache, per sequence: the network output of a row is reused while none of its
    tokens changed (valid because the net is time-agnostic and a row's output depends only on that row);
    each step runs the network only on the rows that changed (gathered, then scattered back). The random
    draws are made for the whole batch every step, so each row sees the same noise whichever rows are
    recomputed, and the samples are those of ddpm for a seed. Returns (tokens, stats): network_calls
    (batched forward passes), row_calls (sequences run through the network, summed over the calls),
    calls_saved (steps with no forward pass), rows_saved (row outputs reused)."""
    if cache and model.cfg.time_cond:
        cache = False  # the output depends on t: nothing to reuse
    mask_id = model.mask_id
    z = z.clone()
    B = z.shape[0]
    ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)
    calls, saved, row_calls, rows_saved = 0, 0, 0, 0
    p_x0 = None
    stale = torch.ones(B, dtype=torch.bool, device=z.device)  # rows whose cached output is out of date
    for i in range(steps):
        t, s = ts[i].item(), ts[i + 1].item()
        rows = torch.arange(B, device=z.device) if (p_x0 is None or not cache) else stale.nonzero()[:, 0]
        if len(rows):
            sigma = torch.full((len(rows),), -math.log1p(-mdlm_mask_rate(t)), device=z.device)
            out = torch.softmax(model(z[rows], sigma=sigma).double(), dim=-1)
            if p_x0 is None or len(rows) == B:
                p_x0 = out
            else:
                p_x0[rows] = out
            calls += 1
            row_calls += len(rows)
        else:
            saved += 1
        rows_saved += B - len(rows)
        move_t, move_s = mdlm_mask_rate(t), mdlm_mask_rate(s)
        q = p_x0 * (move_t - move_s) / move_t
        q[..., mask_id] = move_s / move_t
        new = _sample_categorical(q, generator)  # the whole batch's draws, every step
        z_new = torch.where(z == mask_id, new, z)
        stale = (z_new != z).any(dim=1)
        z = z_new
    left = z == mask_id
    rows = left.any(dim=1).nonzero()[:, 0]
    if len(rows):  # the same rows in ddpm and ddpm_cache: the rows with a mask left
        sigma = torch.full((len(rows),), -math.log1p(-mdlm_mask_rate(t_end)), device=z.device)
        z[rows] = torch.where(left[rows], model(z[rows], sigma=sigma).argmax(-1), z[rows])
        calls += 1
        row_calls += len(rows)
    return z, {'network_calls': calls, 'calls_saved': saved, 'row_calls': row_calls, 'rows_saved': rows_saved}


@torch.no_grad()
def mdlm_semi_ar(model, n, length, steps=128, stride=0, cache=True, generator=None, device='cpu'):
    """Semi-autoregressive generation past the context (diffusion.py L957-997): sample one block, then
    repeatedly keep its last block_size - stride tokens as a fixed prefix, append stride [MASK]s and
    sample them (infilling), until `length` tokens. Returns (tokens (n, length), stats)."""
    T = model.cfg.block_size
    stride = stride or T // 2
    first = min(length, T)
    z = torch.full((n, first), model.mask_id, dtype=torch.long, device=device)
    out, stats = mdlm_sample(model, z, steps, cache, generator)
    while out.shape[1] < length:
        k = min(stride, length - out.shape[1])
        ctx = out[:, -(T - k):]
        z = torch.cat([ctx, torch.full((n, k), model.mask_id, dtype=torch.long, device=device)], dim=1)
        filled, st = mdlm_sample(model, z, steps, cache, generator)
        out = torch.cat([out, filled[:, -k:]], dim=1)
        stats = {key: stats[key] + st[key] for key in stats}
    return out, stats
