"""
The objectives' data corruption, written once for train.py, evaluate.py, bench.py and model.py:

- masked LM (encoder): which positions may be targets (maskable_positions), BERT's 80/10/10 corruption with
  per-sequence rates and spans (mlm_mask), and mlm_batch, the one call train.py and evaluate.py make;
- masked diffusion (mdlm): the log-linear schedule (MDLM_EPS, mdlm_mask_rate), the training noise t, u
  stratified over the global batch (diffusion_noise), importance-adaptive mask probabilities
  (adaptive_mask_probs) and the easy-to-hard curriculum (curriculum_direction).

All noise is drawn from the batch's own numpy Generator (corpus.BatchLoader), so a batch and its
corruption are a pure function of (seed, split, stream, index): DDP, gradient accumulation and resume see
the same masks. train.py draws the same corruption on the device (the *_device functions at the end), from a
torch.Generator seeded by that numpy Generator; spans (span_mean > 0) stay on the CPU.
"""
import numpy as np
import torch

from corpus import FLAG_MAX_TARGET_STATE, FLAG_STATE_MASK, special_id_set

# ----------------------------------------------------------------------------- masked LM


def maskable_positions(batch, meta):
    """(B, T) bool numpy array of positions a masked-LM objective may choose as targets: not a
    special token (separator, gap, [UNK], ...) and, when the dataset has flags, preserved or damaged."""
    x = batch['x'].numpy()
    ok = ~np.isin(x, np.fromiter(special_id_set(meta), dtype=np.int64))
    if 'flags' in batch:
        ok &= (batch['flags'].numpy() & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE
    return ok


def n_lead_specials(meta):
    """How many special tokens lead the vocabulary (ids 0..n-1), so random replacements can skip them;
    0 when the specials are not the first ids."""
    special = meta.get('special_ids') or {}
    return len(special) if sorted(special.values()) == list(range(len(special))) else 0


def mlm_mask(x, rng, mask_rate, mask_id, vocab_size, maskable, replace=(0.8, 0.1, 0.1), span_mean=0.0, rand_low=0):
    """BERT masked-LM corruption (Devlin et al. 2019, section 3.1), on CPU with a numpy Generator.

    x:         (B, T) int64 clean tokens
    maskable:  (B, T) bool, positions that may be chosen (real signs, not specials/gaps/restored)
    mask_rate: fraction of maskable positions chosen as targets; a (B,) array gives each sequence its own
               (Aeneas draws it per sample from U(0, 0.75))
    replace:   of the chosen positions, fractions replaced by [MASK], by a random token, kept
    span_mean: 0 for independent positions; > 0 chooses spans with geometric lengths of this mean
               (real gaps are spans) until the budget mask_rate * n_maskable is spent
    rand_low:  random replacements are drawn from ids rand_low..vocab_size-1 (skips leading specials)
    Returns (inputs, targets) with targets = -1 where not chosen."""
    x = np.asarray(x)
    maskable = np.asarray(maskable, dtype=bool)
    B, T = x.shape
    rates = np.broadcast_to(np.asarray(mask_rate, dtype=np.float64).reshape(-1, 1), (B, 1))
    chosen = np.zeros_like(maskable)
    if span_mean > 0:
        p = 1.0 / span_mean
        for b in range(B):
            budget = int(round(rates[b, 0] * maskable[b].sum()))
            cand = np.flatnonzero(maskable[b])
            tries = 0
            while chosen[b].sum() < budget and tries < 4 * T and len(cand):
                tries += 1
                start = cand[rng.integers(len(cand))]
                length = min(int(rng.geometric(p)), budget - int(chosen[b].sum()))
                span = np.arange(start, min(start + length, T))
                chosen[b, span[maskable[b, span]]] = True
    else:
        chosen = maskable & (rng.random((B, T)) < rates)
    targets = np.where(chosen, x, -1)
    r = rng.random((B, T))
    inputs = x.copy()
    to_mask = chosen & (r < replace[0])
    to_rand = chosen & (r >= replace[0]) & (r < replace[0] + replace[1])
    inputs[to_mask] = mask_id
    inputs[to_rand] = rng.integers(rand_low, vocab_size, size=int(to_rand.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def mlm_batch(batch, rng, meta, mask_rate, replace=(0.8, 0.1, 0.1), span_mean=0.0):
    """The masked-LM corruption of one batch of the loader (dict with x and, for flagged datasets, flags):
    targets only at maskable_positions, random replacements past the leading specials. Returns (inputs,
    targets) as CPU tensors."""
    return mlm_mask(batch['x'].numpy(), rng, mask_rate, meta['special_ids']['[MASK]'], meta['vocab_size'],
                    maskable_positions(batch, meta), replace=replace, span_mean=span_mean,
                    rand_low=n_lead_specials(meta))


# ----------------------------------------------------------------------------- masked diffusion (MDLM)
# MDLM (Sahoo et al., NeurIPS 2024, arXiv 2406.07524; the README, MDLM): every token is independently
# replaced by [MASK] with probability 1 - alpha_t under the log-linear schedule alpha_t = 1 - (1 - eps) t.

MDLM_EPS = 1e-3        # alpha_t = 1 - (1 - eps) t  (noise_schedule.py LogLinearNoise)


def mdlm_mask_rate(t):
    """1 - alpha_t of the log-linear schedule (MDLM eq. 4 with sigma(t) = -log(1 - (1-eps) t))."""
    return (1 - MDLM_EPS) * t


MDLM_T_MIN = 1e-3      # t ~ U[1e-3, 1]  (MDLM training.sampling_eps)


def diffusion_noise(rng, batch_size, block_size, stratum, n_strata):
    """Noise of one micro-batch for the MDLM objective, from the batch's numpy Generator (CPU, so runs
    are deterministic and DDP == accumulation). Low-discrepancy ('antithetic') t over the GLOBAL batch
    (MDLM diffusion.py _sample_t; Duo stratifies over the global batch): sequence b of micro-batch
    `stratum` owns stratum k = stratum * B + b of n_strata * B, t = ((u + k) / n) then
    t <- (1 - 1e-3) t + 1e-3. Returns t (B,) float32 and u (B, T) float32 uniforms; a position is
    masked when u < its mask probability."""
    n = n_strata * batch_size
    k = stratum * batch_size + np.arange(batch_size)
    t = ((rng.random(batch_size) + k) / n) % 1.0
    t = (1 - MDLM_T_MIN) * t + MDLM_T_MIN
    u = rng.random((batch_size, block_size))
    return torch.from_numpy(t.astype(np.float32)), torch.from_numpy(u.astype(np.float32))


def adaptive_mask_probs(rate, score, strength, iters=60):
    """Per-token mask probabilities biased by importance whose mean over each sequence is exactly `rate`:
        p_i = sigmoid(c + strength * z_i),  z_i = the score standardised within the sequence,
    with the shift c solved by bisection so that mean_i p_i = rate (sigmoid is monotone in c, and
    c in [logit(rate) - max a, logit(rate) - min a] brackets the root). strength > 0 masks high-score
    (hard) tokens more, < 0 easy ones; 0 gives the uniform rate. Computed in float64.
    rate: (B,) in (0, 1); score: (B, T). Returns (B, T) float64."""
    r = rate.double().clamp(1e-6, 1 - 1e-6)[:, None]
    s = score.detach().double()
    z = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True, unbiased=False) + 1e-6)
    a = strength * z
    base = torch.log(r) - torch.log1p(-r)
    lo, hi = base - a.max(1, keepdim=True).values, base - a.min(1, keepdim=True).values
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        high = torch.sigmoid(mid + a).mean(1, keepdim=True) > r
        hi, lo = torch.where(high, mid, hi), torch.where(high, lo, mid)
    return torch.sigmoid(0.5 * (lo + hi) + a)


def curriculum_direction(progress, phases='0.3,0.7'):
    """Easy -> hard curriculum over training (fraction of max_iters): -1 (mask easy tokens more)
    before phases[0], a linear ramp to +1 until phases[1], +1 (mask hard tokens more) after."""
    p0, p1 = (float(v) for v in phases.split(',')) if isinstance(phases, str) else phases
    if progress <= p0:
        return -1.0
    if progress >= p1:
        return 1.0
    return -1.0 + 2.0 * (progress - p0) / max(p1 - p0, 1e-9)


# ----------------------------------------------------------------------------- the same noise drawn on the device
# train.py draws the corruption where the model runs, from a torch.Generator of that device seeded by the
# batch's numpy Generator: still a pure function of (seed, split, stream, index), so DDP, accumulation and
# resume see the same masks, with no CPU work or copy per batch. The draws differ from the numpy ones above
# (another generator) and between device types (CPU and CUDA generators differ); the laws are the same.


def device_generator(rng, device):
    """A torch.Generator on `device` seeded from the batch's numpy Generator `rng` (one draw)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(2 ** 62)))
    return g


def special_ids_tensor(meta, device):
    """The special token ids of `meta` as an int64 tensor on `device` (made once: maskable_positions_device)."""
    return torch.tensor(sorted(special_id_set(meta)), dtype=torch.long, device=device)


def maskable_positions_device(x, flags, specials):
    """maskable_positions on device tensors: x (B, T) int64, flags (B, T) or None, specials from
    special_ids_tensor."""
    ok = ~torch.isin(x, specials)
    if flags is not None:
        ok &= (flags & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE
    return ok


def mlm_mask_device(x, g, mask_rate, mask_id, vocab_size, maskable, replace=(0.8, 0.1, 0.1), rand_low=0):
    """mlm_mask (independent positions, no spans) with the draws of the device Generator g: the same
    BERT corruption (Devlin et al. 2019, section 3.1), written with torch.where: no data-dependent shapes
    and no host sync. mask_rate: a float or a (B,) tensor on x's device. Returns (inputs, targets)."""
    B, T = x.shape
    rates = mask_rate.reshape(-1, 1) if torch.is_tensor(mask_rate) else float(mask_rate)
    chosen = maskable & (torch.rand((B, T), generator=g, device=x.device, dtype=torch.float64) < rates)
    targets = torch.where(chosen, x, -1)
    r = torch.rand((B, T), generator=g, device=x.device, dtype=torch.float64)
    rand_tok = torch.randint(rand_low, vocab_size, (B, T), generator=g, device=x.device)
    inputs = torch.where(chosen & (r >= replace[0]) & (r < replace[0] + replace[1]), rand_tok, x)
    inputs = torch.where(chosen & (r < replace[0]), torch.full_like(x, mask_id), inputs)
    return inputs, targets


def diffusion_noise_device(g, batch_size, block_size, stratum, n_strata, device):
    """diffusion_noise with the draws of the device Generator g: t (B,) float32 stratified over the
    global batch (MDLM diffusion.py _sample_t), u (B, T) float32 uniforms."""
    n = n_strata * batch_size
    k = stratum * batch_size + torch.arange(batch_size, device=device, dtype=torch.float64)
    t = ((torch.rand(batch_size, generator=g, device=device, dtype=torch.float64) + k) / n) % 1.0
    t = (1 - MDLM_T_MIN) * t + MDLM_T_MIN
    u = torch.rand((batch_size, block_size), generator=g, device=device)
    return t.float(), u
