"""
Sparse autoencoders on saved hidden states (used by interpret.py; tests/test_interpret.py).

Two kinds, one class:
- 'topk' (the default): Gao et al. 2024, "Scaling and evaluating sparse autoencoders", the TopK autoencoder
      z = TopK(W_enc (x - b_pre) + b_enc),   x_hat = W_dec z + b_pre,
  with the latent bias b_enc and a ReLU on the k kept values as in their released code, so at most k units
  are active and exactly k when k pre-activations are positive. Training follows their section 2 and appendix A: b_pre starts at the data mean
  (they use the geometric median), W_enc starts as W_dec^T, decoder columns are kept at unit norm and the
  gradient component parallel to them is removed, and the AuxK loss (section A.2) makes the k_aux dead latents
  with the largest pre-activations reconstruct the residual: L = ||x - x_hat||^2 + alpha ||e - e_hat||^2,
  alpha = 1/32, a latent counted dead when it has not fired for dead_after training tokens.
- 'l1': Bricken et al. 2023, "Towards Monosemanticity": z = ReLU(W_enc (x - b_pre) + b_enc), the same
  decoder with unit-norm columns, L = ||x - x_hat||^2 + lambda ||z||_1.

The SAE works on x / scale, scale = the root mean squared norm of the centred training states, so the
reconstruction term is a fraction of the data's variance (lambda and the learning rate mean the same at
any width or layer); encode / forward take and return states in their original units.

Metrics (sae_metrics): fraction of variance unexplained FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2,
L0 = mean number of active latents per token, per-latent density (share of tokens where it is active),
dead = density 0, dense = density above a threshold.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SAE_KINDS = ('topk', 'l1')
AUXK_ALPHA = 1 / 32   # Gao et al. 2024, section A.2


class SAE(nn.Module):
    def __init__(self, d, n_latents, kind='topk', k=16):
        super().__init__()
        if kind not in SAE_KINDS:
            raise ValueError(f"sae kind must be one of {', '.join(SAE_KINDS)}, got {kind!r}")
        if kind == 'topk' and not 1 <= k <= n_latents:
            raise ValueError(f"k must lie in 1..{n_latents} (the number of latents), got {k}")
        self.kind, self.k, self.d, self.n_latents = kind, k, d, n_latents
        self.register_buffer('scale', torch.ones(()))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.W_dec = nn.Parameter(F.normalize(torch.randn(d, n_latents), dim=0))
        self.W_enc = nn.Parameter(self.W_dec.detach().t().clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))

    def pre_acts(self, x):
        """W_enc (x / scale - b_pre) + b_enc: (..., n_latents)."""
        return F.linear(x / self.scale - self.b_pre, self.W_enc, self.b_enc)

    def activate(self, a):
        if self.kind == 'l1':
            return F.relu(a)
        v, i = a.topk(self.k, dim=-1)  # Gao et al. 2024: z = TopK(pre-activations), ReLU on the k kept
        return torch.zeros_like(a).scatter(-1, i, F.relu(v))

    def encode(self, x):
        return self.activate(self.pre_acts(x))

    def decode(self, z):
        """x_hat = (W_dec z + b_pre) * scale, in the units of the input."""
        return (F.linear(z, self.W_dec) + self.b_pre) * self.scale

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalize_decoder(self):
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self):
        """Remove the gradient component parallel to each unit-norm decoder column (Gao et al. 2024, appendix A)."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.sub_(w * (g * w).sum(0, keepdim=True))


def sae_loss(sae, xb, dead=None, l1_coeff=0.0, aux_k=1):
    """The training loss of a batch xb (already divided by sae.scale) and its latents z. TopK: the
    reconstruction error plus, when some latents are dead (bool mask), the AuxK term; L1: plus lambda ||z||_1."""
    a = F.linear(xb - sae.b_pre, sae.W_enc, sae.b_enc)
    z = sae.activate(a)
    e = xb - (F.linear(z, sae.W_dec) + sae.b_pre)
    loss = e.pow(2).sum(1).mean()
    if sae.kind == 'l1':
        return loss + l1_coeff * z.sum(1).mean(), z  # Bricken et al. 2023: ||x - x_hat||^2 + lambda ||f||_1
    if dead is not None and dead.any():  # Gao et al. 2024, A.2: the top-k_aux dead latents reconstruct the residual e
        v, i = a.masked_fill(~dead, -math.inf).topk(min(aux_k, int(dead.sum())), dim=-1)
        e_hat = F.linear(torch.zeros_like(a).scatter(-1, i, F.relu(v)), sae.W_dec)
        loss = loss + AUXK_ALPHA * (e.detach() - e_hat).pow(2).sum(1).mean()
    return loss, z


def train_sae(x, n_latents, kind='topk', k=16, l1_coeff=1e-2, steps=2000, batch_size=256, lr=1e-3, seed=0,
              aux_k=0, dead_after=0, progress=None):
    """Train an SAE on x (N, d) float states. Deterministic for a seed. aux_k = 0: d // 2 (the choice of
    EleutherAI's sparsify); dead_after = 0: one pass over x (Gao et al. use 10M tokens). Returns the SAE in eval
    mode and a dict of training facts (final training loss, steps, the scale)."""
    x = x.float()
    N, d = x.shape
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sae = SAE(d, n_latents, kind, k)
    mu = x.mean(0)
    scale = (x - mu).pow(2).sum(1).mean().sqrt().clamp_min(1e-8)
    with torch.no_grad():
        sae.scale.fill_(scale)
        sae.b_pre.copy_(mu / scale)
    xs = x / scale
    aux_k = aux_k or max(1, d // 2)
    dead_after = dead_after or N
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    since_fired = torch.zeros(n_latents, dtype=torch.long)  # training tokens since each latent last fired
    batch_size = min(batch_size, N)
    perm, pos = torch.randperm(N, generator=g), 0
    loss = torch.zeros(())
    for step in range(steps):
        if pos + batch_size > N:
            perm, pos = torch.randperm(N, generator=g), 0
        xb = xs[perm[pos:pos + batch_size]]
        pos += batch_size
        loss, z = sae_loss(sae, xb, since_fired >= dead_after, l1_coeff, aux_k)
        since_fired = torch.where((z > 0).any(0), torch.zeros_like(since_fired), since_fired + len(xb))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.project_decoder_grad()
        opt.step()
        sae.normalize_decoder()
        if progress is not None:
            progress.update(1)
    return sae.eval(), {'final_train_loss': float(loss.detach()), 'steps': steps, 'scale': float(scale)}


@torch.no_grad()
def encode_all(sae, x, batch_size=4096):
    """Latent activations (N, n_latents) of x, in batches."""
    return torch.cat([sae.encode(x[i:i + batch_size].float()) for i in range(0, len(x), batch_size)])


def fvu(x, x_hat):
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (float64)."""
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30))


def density(z):
    """Share of tokens on which each latent is active: (n_latents,) float64."""
    return (z > 0).double().mean(0)


def dead_dense(dens, dense_threshold=0.1):
    """(share of dead latents: density 0, share of dense latents: density > dense_threshold)."""
    return float((dens == 0).double().mean()), float((dens > dense_threshold).double().mean())


@torch.no_grad()
def pca_fvu(x_train, x_test, rank):
    """FVU on x_test of the best rank-`rank` linear reconstruction fit on x_train (its top principal
    components): what a dense code of as many numbers per token as the SAE's L0 reaches."""
    x_train, x_test = x_train.double(), x_test.double()
    mu = x_train.mean(0)
    _, _, Vt = torch.linalg.svd(x_train - mu, full_matrices=False)
    V = Vt[:max(0, min(int(rank), Vt.shape[0]))].t()
    return fvu(x_test, (x_test - mu) @ V @ V.t() + mu)


@torch.no_grad()
def sae_metrics(sae, x, dense_threshold=0.1):
    """{fvu, l0, dead, dense} of an SAE on states x (N, d), and the latent densities."""
    z = encode_all(sae, x)
    x_hat = sae.decode(z)
    dens = density(z)
    dead, dense = dead_dense(dens, dense_threshold)
    return {'fvu': fvu(x, x_hat), 'l0': float((z > 0).double().sum(1).mean()), 'dead': dead, 'dense': dense}, dens
