"""
Each training objective whole, written once for train.py, evaluate.py (evals/), bench.py and the tests: which
objective an arch trains with (objective), how a raw batch of the loader becomes the model's inputs and targets,
and how the loss is computed from the model's outputs.

    causal     the loader's (x, y) are inputs and targets (y is x shifted by one); the loss is the mean
               cross-entropy the model returns, nanoGPT's `logits, loss = model(x, y)` (model.LM.loss)
    mlm        BERT's corruption of the maskable positions (maskable_positions, mlm_mask: a rate per sequence,
               80/10/10, spans); the loss is again the model's mean cross-entropy at the targets (the encoder's
               logit budget needs the targets inside the model; hf_encoder.py's is over word pieces)
    diffusion  MDLM (Sahoo et al., NeurIPS 2024, arXiv 2406.07524; docs/mdlm.md): the log-linear schedule, t
               stratified over the global batch (diffusion_noise), the absorbing-state corruption z_t
               (diffusion_inputs), the NELBO (nelbo, MDLM eq. 10-11), the importance estimator's loss
               (importance_loss) and the importance-adaptive masks with their curriculum (adaptive_mask_probs,
               curriculum_direction), put together by diffusion_loss; model.MDLM is the denoiser alone.

Objective joins them for train.py: batch() turns a loader batch into (x, y, doc, noise) on the device and forward()
returns the loss, so DDP and torch.compile wrap a model and its loss as one module.

Each random law has two implementations, both drawn from the batch's own numpy Generator (corpus.BatchLoader), so a
batch and its corruption are a pure function of (seed, split, stream, index) and DDP, accumulation and resume see
the same masks: numpy draws (mlm_mask, diffusion_noise: evaluate.py's fixed seeds and the tests) and device draws
(mlm_mask_device, diffusion_noise_device: train.py, from a torch.Generator of the device seeded by that numpy
Generator, with no CPU work or copy per batch; masked-LM spans, span_mean > 0, a sequential draw, stay on the CPU).
The draws differ (another generator; CPU and CUDA generators differ too); the laws are the same, which
tests/test_objectives.py checks pair by pair.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from corpus import die, FLAG_MAX_TARGET_STATE, FLAG_STATE_MASK, special_id_set

OBJECTIVES = {'gpt': 'causal', 'encoder': 'mlm', 'mdlm': 'diffusion', 'backpack': 'causal', 'atlas': 'causal',
              'hf': 'mlm'}  # hf: a Hugging Face masked LM over the signs (hf_encoder.py)


def objective(arch):
    """The training objective that goes with an architecture: causal | mlm | diffusion."""
    return OBJECTIVES[arch]


def mask_token(kind, meta, data_dir):
    """The [MASK] id an objective reads: the tokenizer's; for diffusion on a tokenizer without one (e.g. GPT-2 BPE)
    a token added to the vocabulary at id vocab_size; None for causal. A masked LM needs the tokenizer's."""
    mask_id = (meta.get('special_ids') or {}).get('[MASK]')
    if kind == 'mlm' and mask_id is None:
        die(f"{data_dir} has no [MASK] token: a masked-LM arch needs a tokenizer with [MASK] (re-run its prepare script)")
    if kind == 'diffusion' and mask_id is None:
        return meta['vocab_size']
    return mask_id if kind != 'causal' else None


def device_generator(rng, device):
    """A torch.Generator on `device` seeded from the batch's numpy Generator `rng` (one draw)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(2 ** 62)))
    return g


# ----------------------------------------------------------------------------- masked LM


def maskable_positions(batch, meta):
    """(B, T) bool numpy array of positions a masked-LM objective may choose as targets: not a
    special token (separator, gap, [UNK], ...) and, when the dataset has flags, preserved or damaged."""
    x = batch['x'].numpy()
    ok = ~np.isin(x, np.fromiter(special_id_set(meta), dtype=np.int64))
    if 'flags' in batch:
        ok &= (batch['flags'].numpy() & FLAG_STATE_MASK) <= FLAG_MAX_TARGET_STATE
    return ok


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


def mlm_batch(batch, rng, meta, mask_rate, replace=(0.8, 0.1, 0.1), span_mean=0.0):
    """The masked-LM corruption of one batch of the loader (dict with x and, for flagged datasets, flags), numpy
    draws: targets only at maskable_positions, random replacements past the leading specials. Returns (inputs,
    targets) as CPU tensors."""
    return mlm_mask(batch['x'].numpy(), rng, mask_rate, meta['special_ids']['[MASK]'], meta['vocab_size'],
                    maskable_positions(batch, meta), replace=replace, span_mean=span_mean,
                    rand_low=n_lead_specials(meta))


# ----------------------------------------------------------------------------- masked diffusion (MDLM)
# Absorbing-state diffusion: every token is independently replaced by [MASK] with probability 1 - alpha_t under
# the log-linear schedule alpha_t = 1 - (1 - eps) t, eps = 1e-3, so the NELBO weight alpha'_t / (1 - alpha_t) is
# -1/t. SUBS parameterisation (the denoiser, model.MDLM): the [MASK] logit is -inf, unmasked positions carry over.

MDLM_EPS = 1e-3        # alpha_t = 1 - (1 - eps) t  (noise_schedule.py LogLinearNoise)
MDLM_T_MIN = 1e-3      # t ~ U[1e-3, 1]  (MDLM training.sampling_eps)


def mdlm_mask_rate(t):
    """1 - alpha_t of the log-linear schedule (MDLM eq. 4 with sigma(t) = -log(1 - (1-eps) t))."""
    return (1 - MDLM_EPS) * t


def diffusion_noise(rng, batch_size, block_size, stratum, n_strata):
    """Noise of one micro-batch for the MDLM objective, numpy draws from the batch's Generator. Low-discrepancy
    ('antithetic') t over the GLOBAL batch (MDLM diffusion.py _sample_t; Duo stratifies over the global batch):
    sequence b of micro-batch `stratum` owns stratum k = stratum * B + b of n_strata * B, t = ((u + k) / n) then
    t <- (1 - 1e-3) t + 1e-3. Returns t (B,) float32 and u (B, T) float32 uniforms; a position is masked when u <
    its mask probability (diffusion_inputs)."""
    n = n_strata * batch_size
    k = stratum * batch_size + np.arange(batch_size)
    t = ((rng.random(batch_size) + k) / n) % 1.0
    t = (1 - MDLM_T_MIN) * t + MDLM_T_MIN
    u = rng.random((batch_size, block_size))
    return torch.from_numpy(t.astype(np.float32)), torch.from_numpy(u.astype(np.float32))


def diffusion_noise_device(g, batch_size, block_size, stratum, n_strata, device):
    """diffusion_noise with the draws of the device Generator g: t (B,) float32 stratified over the
    global batch (MDLM diffusion.py _sample_t), u (B, T) float32 uniforms."""
    n = n_strata * batch_size
    k = stratum * batch_size + torch.arange(batch_size, device=device, dtype=torch.float64)
    t = ((torch.rand(batch_size, generator=g, device=device, dtype=torch.float64) + k) / n) % 1.0
    t = (1 - MDLM_T_MIN) * t + MDLM_T_MIN
    u = torch.rand((batch_size, block_size), generator=g, device=device)
    return t.float(), u


def diffusion_inputs(x0, t, u, mask_id, p=None):
    """MDLM's forward process q(z_t | x0) with the uniforms u (B, T): a token becomes [MASK] where u < its mask
    probability p (B, T); by default 1 - alpha_t = (1 - eps) t for every token of a sequence. Returns z_t, the
    mask (B, T) and the noise level sigma(t) = -log alpha_t (B,) the denoiser reads (with time_cond only)."""
    rate = mdlm_mask_rate(t)
    masked = u < (rate[:, None] if p is None else p)
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked, -torch.log1p(-rate)


def nelbo(model, x0, t, u, doc=None, p=None, dtype=torch.float64):
    """MDLM's NELBO (eq. 10-11 under the log-linear schedule, SUBS) per token: the denoiser `model` reads z_t
    (diffusion_inputs) and every masked position adds (1/t) * -log p(x0 | z_t), every unmasked one exactly 0
    (carry-over; torch.where, so no 0 * inf). With uniform masks (p None) it is the bound that val_loss (train.py)
    and val_nelbo (evals/mdlm.py) average, in float64; the importance-adaptive p of training makes it a weighted
    objective, not a bound. Returns the terms (B, T) in `dtype`, -log p(x0 | z_t) (B, T) float32 and the mask."""
    t = t.to(x0.device).float()
    z, masked, sigma = diffusion_inputs(x0, t, u.to(x0.device), model.mask_id, p)
    logits = model(z, doc, sigma)
    nll = F.cross_entropy(logits.view(-1, logits.size(-1)), x0.reshape(-1), reduction='none').view_as(x0)
    return torch.where(masked, nll.to(dtype) / t.to(dtype)[:, None], 0.0), nll, masked


def importance_loss(score, nll, masked):
    """The importance estimator's regression (docs/mdlm.md): its score of each token of x0 against a target it
    cannot produce itself, 1 - p(x0 | z_t) = 1 - exp(-nll) from the backbone's DETACHED per-token loss, graded at the
    masked positions only (mean squared error)."""
    target = 1 - torch.exp(-nll.detach())
    return ((score - target) ** 2 * masked).sum() / masked.sum().clamp(min=1)


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


def diffusion_loss(model, x0, t, u, doc=None, progress=1.0):
    """The MDLM objective of the clean batch x0 with its noise t (B,), u (B, T). In eval mode the plain NELBO per
    token, float64, whatever the training options (what val_loss reports). In training mode the NELBO in float32;
    with the importance options of model.cfg the estimator scores x0 first, adaptive_masking biases the masks by
    that score (towards hard tokens, or from easy to hard with the curriculum over `progress`, the fraction of
    training done), and importance_weight * importance_loss is added: the weighted objective that
    diffusion_loss_name names, not a bound."""
    if not model.training:
        return nelbo(model, x0, t, u, doc)[0].sum() / x0.numel()
    cfg = model.cfg
    score = model.importance(x0) if model.importance is not None else None
    p = None
    if cfg.adaptive_masking:
        direction = curriculum_direction(progress, cfg.curriculum_phases) if cfg.curriculum else 1.0
        rate = mdlm_mask_rate(t.to(x0.device).float())
        p = adaptive_mask_probs(rate, score, cfg.adaptive_strength * direction).to(u.dtype)
    terms, nll, masked = nelbo(model, x0, t, u, doc, p, torch.float32)
    loss = terms.sum() / x0.numel()
    if score is not None:
        loss = loss + cfg.importance_weight * importance_loss(score, nll, masked)
    return loss


def diffusion_loss_name(cfg):
    """The name of MDLM's training loss (logged beside it): 'nelbo' for plain MDLM, else the weighted objective's."""
    if cfg.adaptive_masking:
        return 'weighted_nelbo' + ('+importance_mse' if cfg.importance else '')
    return 'nelbo+importance_mse' if cfg.importance else 'nelbo'


# ----------------------------------------------------------------------------- a model with its objective


class Objective(nn.Module):
    """A model with its objective, for train.py: batch() turns a batch of corpus.BatchLoader into the model's inputs
    and targets on the device (the device draws), forward(x, y, doc, **noise) returns the loss, so DDP and
    torch.compile wrap the model and its loss as one module (the diffusion loss calls the importance estimator on
    x0 and the denoiser on z_t). The mask_* options are train.py's masked-LM ones; loss_name names a weighted
    training loss (MDLM's importance options), None otherwise."""

    def __init__(self, kind, model, meta, device, doc_mask=False, mask_rate=0.15, mask_rate_max=0.0, mask_replace=0.8,
                 mask_random=0.1, span_mean=0.0):
        super().__init__()
        self.kind, self.model, self.meta, self.device, self.doc_mask = kind, model, meta, device, doc_mask
        self.mask_rate, self.mask_rate_max, self.span_mean = mask_rate, mask_rate_max, span_mean
        self.replace = (mask_replace, mask_random, 1 - mask_replace - mask_random)
        self.specials = special_ids_tensor(meta, device) if kind == 'mlm' else None  # for maskable_positions_device
        name = diffusion_loss_name(model.cfg) if kind == 'diffusion' else None
        self.loss_name = name if name != 'nelbo' else None

    def to_device(self, t):
        """A CPU tensor onto the device; on CUDA through pinned memory, without blocking the host."""
        if t is None:
            return None
        return t.pin_memory().to(self.device, non_blocking=True) if self.device.startswith('cuda') else t.to(self.device)

    def batch(self, b, stratum=0, n_strata=1, progress=1.0):
        """(x, y, doc, noise) on the device from a loader batch b (x, y, its numpy Generator rng, doc and flags
        where the data has them); noise holds forward's keyword arguments (diffusion: t, u, progress). The
        corruption is drawn from b's own Generator, so it stays a pure function of (seed, split, stream, index):
        masked LM with mlm_mask_device (spans with mlm_batch on the CPU), diffusion with t stratified over
        n_strata micro-batches, of which this is `stratum`."""
        if self.kind == 'mlm' and self.span_mean > 0:
            rate = b['rng'].uniform(0.0, self.mask_rate_max, b['x'].shape[0]) if self.mask_rate_max > 0 else self.mask_rate
            x, y = mlm_batch(b, b['rng'], self.meta, rate, replace=self.replace, span_mean=self.span_mean)
            x, y = self.to_device(x), self.to_device(y)
        elif self.kind == 'mlm':
            x, g = self.to_device(b['x']), device_generator(b['rng'], self.device)
            rate = (torch.rand(x.shape[0], generator=g, device=x.device, dtype=torch.float64) * self.mask_rate_max
                    if self.mask_rate_max > 0 else self.mask_rate)
            maskable = maskable_positions_device(x, self.to_device(b.get('flags')), self.specials)
            x, y = mlm_mask_device(x, g, rate, self.meta['special_ids']['[MASK]'], self.meta['vocab_size'], maskable,
                                   replace=self.replace, rand_low=n_lead_specials(self.meta))
        else:
            x, y = self.to_device(b['x']), self.to_device(b['y'])
        noise = {}
        if self.kind == 'diffusion':
            t, u = diffusion_noise_device(device_generator(b['rng'], self.device), x.shape[0], x.shape[1], stratum,
                                          n_strata, x.device)
            noise = {'t': t, 'u': u, 'progress': progress}
        return x, y, self.to_device(b.get('doc') if self.doc_mask else None), noise

    def forward(self, x, y, doc=None, **noise):
        if self.kind == 'diffusion':
            return diffusion_loss(self.model, x, noise['t'], noise['u'], doc, noise['progress'])
        return self.model(x, y, doc)[1]
