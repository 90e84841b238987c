"""
One training loop for every architecture; the objective follows the arch (objectives.py).

    python train.py config/gpt_shakespeare_char_cpu.py
    python train.py config/train_akkadian.py --batch_size=32 --compile=True
    torchrun --standalone --nproc_per_node=2 train.py config/X.py     # DDP (NCCL on CUDA, gloo on CPU)
    python train.py --out_dir=DIR --init_from=resume                # continue DIR/last.pt exactly, with its own config
    python train.py config/X.py --overwrite=True                    # start over in an out_dir that holds a run

Writes out_dir/ckpt.pt (best val loss), out_dir/last.pt (latest state, also on SIGTERM/SIGINT) and
out_dir/metrics.jsonl (one JSON object per log line and per evaluation). The out_dir is locked before anything
in it is looked at, and an out_dir that holds a run is never overwritten unless asked (--overwrite=True, which
deletes the run's files only: checkpoint.claim_run_dir). A resumed run keeps its shape and objective; the options
that may change are checkpoint.RESUME_MAY_CHANGE (docs/reliability.md). SIGTERM / SIGINT save last.pt and exit
with status 143 / 130, so `train.py && evaluate.py` never evaluates a stopped run; a second signal stops at once.
Where the rest lives: the option checks, run folder and resume in checkpoint.py, the batches and losses in
objectives.py, the benchmark timing and batch_size=auto in bench.py, the interpretability artifacts in artifacts.py.
"""
import inspect
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from artifacts import parse_layers, write_artifacts
from bench import auto_batch_size, bench_result, count_graph_breaks, peak_flops, StepTimer, write_bench
from checkpoint import (append_metrics, build_run_model, check_data, check_device, check_train_options,
                        checked_checkpoint, claim_run_dir, data_fingerprints, drop_metrics_after, new_model_args,
                        nonfinite_weights, restore_training_state, resume_config, resume_ema, save_run, StopRequest)
from configurator import configure, format_config
from corpus import BatchLoader, check_dataset, die, load_meta
from evals.literature import causal_probe
from loggers import RunLoggers
from model import ModelConfig, optimizer_groups
from objectives import mask_token, Objective, objective

# ----------------------------------------------------------------------------- defaults
# I/O
out_dir = 'out'
dataset = 'shakespeare_char'    # reads data/<dataset>/ unless data_dir is set
data_dir = ''
init_from = 'scratch'           # scratch | resume | PATH (a local state dict: ours or stanfordnlp/backpack-gpt2's layout)
                                # | hf:HUB_ID or hf:DIR with arch='hf' (a Hugging Face masked LM over the signs: hf_encoder.py)
overwrite = False               # True: start over in an out_dir that already holds a run (its checkpoints are deleted)
allow_other_data = False        # True: resume on data other than the run's own (the same tokenizer only)
eval_interval = 250
eval_iters = 20                 # batches per split at each evaluation
log_interval = 10
eval_only = False
seed = 1337
# model: every field of model.ModelConfig is a key (documented there; adding a field adds the key), with
# ModelConfig's defaults except these (nanoGPT's small default shape; ModelConfig's is the 124M one). The model
# keys this file reads are bound by name on the second line; the others reach the model through `config` only.
globals().update({k: v for k, v in ModelConfig().to_dict().items() if k != 'mask_id'})  # [MASK] comes from the data
arch, doc_mask, window = ModelConfig.arch, ModelConfig.doc_mask, ModelConfig.window
vocab_size = 0                  # 0 = the data's (meta.json); larger pads the embedding (e.g. 50304)
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
# objective: masked LM (arch encoder; objectives.Objective)
mask_rate = 0.15
mask_rate_max = 0.0             # > 0: each sequence's mask rate ~ U(0, mask_rate_max) instead (Aeneas: 0.75)
mask_replace = 0.8              # of the chosen positions: fraction replaced by [MASK] ...
mask_random = 0.1               # ... by a random token (the rest stay unchanged)
span_mean = 0.0                 # > 0: mask spans with geometric lengths of this mean
doc_aligned = False             # windows start at document starts
# optimisation
batch_size = 12                 # per process and micro-step; 'auto' benchmarks and picks the fastest that fits
gradient_accumulation_steps = 1 # in total, over all DDP processes
max_iters = 5000
learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0                 # 0 disables clipping
decay_lr = True
warmup_iters = 100
lr_decay_iters = 0              # 0 -> max_iters
min_lr = 0.0                    # 0 -> learning_rate / 10
# system
device = 'auto'                 # auto | cpu | cuda | cuda:N | mps
dtype = 'auto'                  # auto | float32 | bfloat16 | float16
compile = False
num_threads = 0                 # CPU threads per process; 0 = torch default (divided among DDP processes)
max_nonfinite = 5               # abort after this many non-finite steps in a row (checked at log intervals)
ema_decay = 0.0                 # > 0: keep an exponential moving average of the weights (float32), saved as ckpt['ema']
# benchmark mode (bench.py): time real training steps, no evaluation, no checkpoints
bench_iters = 0                 # > 0: run bench_warmup steps, then time bench_iters steps -> out_dir/bench.json
bench_warmup = 5
peak_tflops = 0.0               # device bf16 dense peak for MFU; 0 = known for H100/H200/A100, else no MFU
# interpretability artifacts
save_artifacts = False          # store embeddings + hidden states of a fixed eval subset before and after training
artifact_layers = '0,4,8,12,16' # 0 = embedding output, i = output of block i
artifact_docs = 500             # documents of the val split in the fixed subset (seed 42)
# experiment trackers (loggers.py): rank 0 logs every row of metrics.jsonl to them too; a resumed run continues them
wandb_log = False               # Weights & Biases (pip install wandb)
wandb_project = 'nanolm'
wandb_run_name = ''             # '' = the out_dir's name
tensorboard_log = False         # TensorBoard event files in out_dir/tensorboard (pip install tensorboard)
# -----------------------------------------------------------------------------
given = set()  # the keys the config files and overrides set (a resumed run takes the others from its last.pt)
config = configure(globals(), auto_keys=('batch_size',), given=given)
check_train_options(config)  # one line for a value no run can use, before anything is built or written

# ----------------------------------------------------------------------------- the run directory
# checkpoint.claim_run_dir owns it: the lock is taken before anything in out_dir is looked at; a run is never
# replaced unless asked. A resumed run's configuration is its own (checkpoint.resume_config).
out = Path(out_dir)
rank0 = int(os.environ.get('RANK', 0)) == 0
run_lock = claim_run_dir(out, init_from, overwrite) if rank0 else None
ckpt = None
if init_from == 'resume':
    ckpt = checked_checkpoint(out / 'last.pt')
    config = resume_config(config, given, ckpt['config'], out / 'last.pt')
    globals().update(config)  # every key, the model's included, as the run had it (or as given now)
    check_train_options(config)
if min_lr == 0.0:
    min_lr = learning_rate / 10
if lr_decay_iters == 0:
    lr_decay_iters = max_iters

# ----------------------------------------------------------------------------- processes and device
ddp = int(os.environ.get('RANK', -1)) != -1
device = check_device(device)  # 'auto' -> the best this machine has
device_type = 'cuda' if device.startswith('cuda') else device
if ddp:
    dist.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
    rank, local_rank, world = dist.get_rank(), int(os.environ['LOCAL_RANK']), dist.get_world_size()
    if device_type == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % world:
        die(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the {world} processes")
else:
    rank, local_rank, world = 0, 0, 1
master = rank == 0
accum = gradient_accumulation_steps // world
if device_type == 'cpu':
    torch.set_num_threads(num_threads or max(1, torch.get_num_threads() // int(os.environ.get('LOCAL_WORLD_SIZE', 1))))
if dtype == 'auto':
    dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
if dtype == 'bfloat16' and device_type == 'cpu' and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
    dtype = 'float32'   # without AVX512-BF16 / AMX, bf16 matmuls take a slow emulated path: float32 is faster
    if master:
        print("dtype=bfloat16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); training in float32 instead",
              file=sys.stderr)
if dtype == 'float16' and device_type == 'cpu' and master:
    print("warning: dtype=float16 on a CPU is emulated and much slower (~15x measured) than float32 or bfloat16; "
          "use --dtype=float32 or bfloat16", file=sys.stderr)
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
torch.manual_seed(seed + rank)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

# ----------------------------------------------------------------------------- data
data_dir = data_dir or os.path.join('data', dataset)
meta = load_meta(data_dir)
check_dataset(data_dir)  # every id of the bins inside the vocabulary, before anything is built
if not (Path(data_dir) / 'train.bin').exists():
    die(f"{data_dir}/train.bin not found: run the dataset's prepare script first")
fingerprint = data_fingerprints(data_dir)  # stored in every checkpoint: evaluate/sample check they get this data
obj = objective(arch)
aux = tuple(a for a in meta.get('aux', {}) if a == 'flags')
mask_id = mask_token(obj, meta, data_dir)  # diffusion on a tokenizer without [MASK]: one added to the vocabulary

# ----------------------------------------------------------------------------- model, objective, optimizer, state
model_args = new_model_args(config, meta, mask_id if obj == 'diffusion' else None)  # on resume: the run's, below
iter_num, best_val_loss, data_position, nonfinite_total = 0, float('inf'), 0, 0
if ckpt is not None:  # resume: the run's configuration was merged above (resume_config)
    check_data(ckpt, data_dir, allow_other_data, out / 'last.pt')
    model_args = ckpt['model_args']  # the architecture comes from the checkpoint
    iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    data_position, nonfinite_total = ckpt['data_position'], ckpt.get('nonfinite_total', 0)
model, model_args = build_run_model(model_args, data_dir, meta, device, init_from, ckpt, out / 'last.pt', master)
# the objective (objectives.py): batches with its corruption, and the loss; DDP and torch.compile wrap it whole
objective = Objective(obj, model, meta, device, doc_mask, mask_rate, mask_rate_max, mask_replace, mask_random, span_mean)


def make_batch(split, index, stream=0, it=None, source=None):
    """Micro-batch `index` of `split` (stream 1: the evaluations') with its corruption (objectives.Objective.batch), a
    pure function of (seed, split, stream, index); diffusion t is stratified over a step's micro-batches (training)
    or the eval batches. `it`: the iteration it is for (the curriculum); source: another BatchLoader."""
    n = gradient_accumulation_steps if stream == 0 else eval_iters
    progress = (iter_num if it is None else it) / max(1, max_iters)
    return objective.batch((source or loader).get(split, index, stream), index % n, n, progress)


if ckpt is not None and batch_size == 'auto':
    batch_size = ckpt['config']['batch_size']  # resume with the batch size that was chosen
if batch_size == 'auto':  # bench.auto_batch_size: rank 0 times a few forward + backward passes per size
    probe = BatchLoader(data_dir, block_size, 1, seed=seed, aux=aux)

    def probe_loss(bs, k):
        probe.batch_size = bs
        x, y, doc, noise = make_batch('train', k, source=probe)
        with ctx:
            return objective(x, y, doc, **noise)
    batch_size = config['batch_size'] = auto_batch_size(probe_loss, model, device, master, ddp)
loader = BatchLoader(data_dir, block_size, batch_size, seed=seed, aux=aux, doc_aligned=doc_aligned)
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if master:
    print("config:\n" + format_config(config))
    print(f"arch {arch} ({obj} objective): {model.num_params() / 1e6:.2f}M parameters, "
          f"{model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding")
    if objective.loss_name:
        print(f"training loss: {objective.loss_name} (a weighted objective, not a bound); val_loss stays the plain NELBO")
    print(f"tokens per iteration: {tokens_per_iter:,} ({world} process(es) x {accum} micro-steps x {batch_size} x {block_size})")

use_fused = 'fused' in inspect.signature(torch.optim.AdamW).parameters and device_type in ('cuda', 'cpu')
optimizer = torch.optim.AdamW(optimizer_groups(model, weight_decay), lr=learning_rate, betas=(beta1, beta2),
                              **({'fused': True} if use_fused else {}))
scaler = torch.amp.GradScaler(device_type if device_type in ('cuda', 'cpu') else 'cuda', enabled=(dtype == 'float16'))
if ckpt is not None:
    restore_training_state(ckpt, optimizer, scaler, rank, device_type)
    optimizer.param_groups[0]['weight_decay'] = weight_decay  # the options of this invocation (they may change
    for group in optimizer.param_groups:                      # on resume); lr is set at every step
        group['betas'] = (beta1, beta2)
# A step with non-finite gradients is skipped on the device, without a host sync: the fused AdamW takes GradScaler's
# `found_inf` and leaves parameters, moments and step count as they were where it is 1. The skips are counted on
# the device and read at log intervals, where the non-finite guard (max_nonfinite in a row) is checked. An
# optimizer without `found_inf` (no fused AdamW: MPS) skips with one host sync per step instead.
skip_on_device = use_fused
nonfinite_count = torch.tensor(nonfinite_total, device=device)   # steps skipped so far in this run
nonfinite_run = torch.zeros((), dtype=torch.long, device=device)  # skipped in a row, up to the last step
nonfinite_longest = torch.zeros_like(nonfinite_run)             # the longest such run since the last log interval
# EMA of the weights (Polyak averaging, as MDLM's 0.9999): float32 copies of the parameters beside the model
ema_params = {n: p for n, p in model.named_parameters() if p.requires_grad} if ema_decay > 0 else {}
ema = resume_ema(ckpt, ema_params, device, out / 'last.pt', master)
loggers = RunLoggers(out, config, iter_num, ckpt) if master else None  # checks the packages; opens at the first row
ckpt = None  # free memory

raw_model, eval_model, graph_breaks = model, objective, None
if compile:
    import torch._dynamo
    torch._dynamo.config.capture_dynamic_output_shape_ops = True  # backpack's torch.unique stays in the graph
    if master:  # bench.py: graph breaks counted on one real batch
        xb, yb, docb, noiseb = make_batch('train', 0)
        graph_breaks = count_graph_breaks(objective, (xb, yb, docb), noiseb, ctx)
        print("compiling the model (takes a minute)...")
    eval_model = torch.compile(objective)
train_model = DDP(eval_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else eval_model


def get_lr(it):
    """Linear warm-up, then cosine decay to min_lr at lr_decay_iters (Loshchilov & Hutter 2017)."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches of each split at every evaluation (stream 1), shared out over the
    DDP processes; for mdlm always the plain NELBO (objectives.diffusion_loss in eval mode)."""
    out_losses = {}
    eval_model.eval()
    for split in [s for s in ('train', 'val') if s in loader.splits()]:
        losses = torch.zeros(eval_iters, device=device, dtype=torch.float32 if device_type == 'mps' else torch.float64)
        for k in range(rank, eval_iters, world):
            x, y, doc, noise = make_batch(split, k, stream=1)
            with ctx:
                losses[k] = eval_model(x, y, doc, **noise)
        if ddp:
            dist.all_reduce(losses)
        out_losses[split] = losses.mean().item()
    eval_model.train()
    return out_losses


def save_checkpoint(name):
    """out_dir/name (checkpoint.save_run: atomic; collective under DDP, rank 0 writes), not over a finite one when
    a weight became non-finite."""
    bad = nonfinite_weights(raw_model)  # the same on every process: they all stop together
    if bad:
        fail(f"the weights became non-finite by iter {iter_num} ({len(bad)} tensors, e.g. {bad[0]}): lower learning_rate "
             f"(now {learning_rate:g}) or use dtype=float32; nothing was saved over the last finite {out / name}")
    save_run(out / name, raw_model, optimizer, scaler, dict(zip(ema_params, ema)), device_type, world, master,
             model_args=model_args, config=config, iter_num=iter_num, best_val_loss=best_val_loss,
             data_position=data_position, nonfinite_total=int(nonfinite_count), data_fingerprint=fingerprint,
             **(loggers.state() if master else {}))


def save_artifacts_of(stage):
    """artifacts.write_artifacts: the fixed val subset's hidden states at artifact_layers -> artifacts_{stage}.pt."""
    write_artifacts(out / f'artifacts_{stage}.pt', raw_model, data_dir, 'val' if 'val' in loader.splits() else 'train',
                    parse_layers(artifact_layers), artifact_docs, block_size, device, ctx, iter_num)


def log_metrics(row):
    if master:  # metrics.jsonl, and the experiment trackers that are on (loggers.py)
        loggers.log(append_metrics(out / 'metrics.jsonl', row))


def fail(msg):
    """die() from inside the loop: close the progress bar first so the message has its own line."""
    if 'pbar' in globals():
        pbar.close()
    die(msg)


if master and init_from == 'resume':
    drop_metrics_after(out / 'metrics.jsonl', iter_num)
stop = StopRequest().install()  # SIGTERM / SIGINT: save last.pt at the end of the step; a second one stops at once
if save_artifacts and (init_from == 'scratch' or init_from.startswith('hf:')) and not bench_iters:
    save_checkpoint('init.pt')  # the initial weights are kept, so "before" can be recomputed
    if master:
        save_artifacts_of('init')

# ----------------------------------------------------------------------------- the loop
# a bar on a terminal; in a log file (stdout not a terminal) plain lines at every log_interval instead, as nanoGPT
bar = master and sys.stdout.isatty() and sys.stderr.isatty()
pbar = tqdm(total=max_iters, initial=iter_num, disable=not bar, dynamic_ncols=True, desc=os.path.basename(out_dir))
t_start = time.time()
t_log, iters_since_log = time.time(), 0
nonfinite_limit = max_nonfinite + (16 if scaler.is_enabled() else 0)  # fp16 GradScaler overflows while it finds its scale
first_step = True
skip_eval_at = iter_num if init_from == 'resume' else -1
already_done = init_from == 'resume' and iter_num >= max_iters and not eval_only and not bench_iters
grad_norm = torch.zeros((), device=device)
loss_acc = torch.zeros((), device=device)
batch = None  # the next micro-batch, made during the step before
timer = StepTimer(iter_num, bench_warmup, bench_iters, device) if bench_iters else None
if bench_iters:
    max_iters = iter_num + bench_warmup + bench_iters
while True:
    # benchmark mode (bench.py): the steps between warm-up and the end are timed, then bench.json is written
    seconds = timer.seconds(iter_num) if timer else None
    if seconds is not None:
        if master:
            write_bench(out / 'bench.json', bench_result(seconds, bench_iters, tokens_per_iter, raw_model, arch, device,
                        dtype, compile, world, peak_tflops, graph_breaks, config['activation_checkpointing']))
        break

    # evaluate the loss on train/val and write the checkpoints
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != skip_eval_at and not bench_iters:
        losses = estimate_loss()
        if master:
            row = {'kind': 'eval', 'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses.get('val'),
                   'lr': get_lr(iter_num), 'elapsed': time.time() - t_start}
            if 'val' in losses:
                row['train_val_gap'] = losses['val'] - losses['train']  # held-out evidence for any grokking claim
            if obj == 'causal' and (arch == 'atlas' or window):  # evals/literature.py on the first eval batch:
                raw_model.eval()                                 # retrieval past the window, atlas's memories
                with torch.no_grad(), ctx:
                    row.update(causal_probe(raw_model, *make_batch('val' if 'val' in losses else 'train', 0, stream=1)[:2]))
                raw_model.train()
            log_metrics(row)
            pbar.write(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses.get('val', float('nan')):.4f}")
        val = losses.get('val', losses['train'])
        if val < best_val_loss and iter_num > 0:
            best_val_loss = val
            save_checkpoint('ckpt.pt')
        if iter_num > 0:
            save_checkpoint('last.pt')
    if iter_num >= max_iters or eval_only:
        break

    # the learning rate of this step
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr

    # forward and backward over the micro-batches (gradient accumulation; DDP syncs the gradients on the last)
    loss_acc.zero_()
    base = data_position + rank * accum
    if batch is None:  # the first step of this process; later ones were made during the step before
        batch = make_batch('train', base)
    for micro in range(accum):
        x, y, doc, noise = batch
        if ddp:
            train_model.require_backward_grad_sync = micro == accum - 1
        with ctx:
            loss = train_model(x, y, doc, **noise) / accum
        if first_step and (not loss.requires_grad or loss.grad_fn is None):
            fail("the loss has no grad_fn: the forward pass ran without autograd (torch.no_grad?) or every "
                "parameter is frozen; nothing would train")
        # the next micro-batch (of this step, or the first of the next one) is made before backward, so its
        # CPU work overlaps the device's; a batch is a pure function of its index, so nothing else changes
        last = micro + 1 == accum
        batch = make_batch('train', base + world * accum if last else base + micro + 1, it=iter_num + last)
        scaler.scale(loss).backward()
        loss_acc += loss.detach()
    if first_step:
        missing = [n for n, p in raw_model.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            fail(f"after the first backward these parameters got no gradient: {', '.join(missing[:8])}"
                f"{' ...' if len(missing) > 8 else ''}; they are not on the loss's autograd path")
        first_step = False

    # clip the gradient, step the optimizer (skipped on the device after non-finite gradients), update the EMA
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float('inf'))
    bad = ~torch.isfinite(grad_norm)  # a non-finite loss gives non-finite gradients; a device tensor, not read here
    if skip_on_device:  # the update is skipped where found_inf is 1 (fp16: grads already unscaled by scaler.unscale_)
        optimizer.found_inf = bad.float()
        optimizer.step()
        del optimizer.found_inf
    elif not bad.item():  # no fused AdamW: one host sync per step
        scaler.step(optimizer)
    if ema_decay > 0:  # ema = d * ema + (1 - d) * param after a step that was taken; unchanged after a skipped one
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach().to(torch.float32) for p in ema_params.values()], ema)
            torch._foreach_mul_(delta, (1.0 - ema_decay) * (~bad).to(torch.float32))
            torch._foreach_add_(ema, delta)
    nonfinite_count += bad
    nonfinite_run.add_(1).mul_(bad)  # + 1 after a skipped step, 0 after a taken one
    torch.maximum(nonfinite_longest, nonfinite_run, out=nonfinite_longest)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)

    # the non-finite guard, read at log intervals only (the one host sync)
    if (iter_num + 1) % log_interval == 0 or iter_num + 1 == max_iters:
        nonfinite_total, longest, now_bad = torch.stack([nonfinite_count, nonfinite_longest, bad.long()]).tolist()
        nonfinite_longest.copy_(nonfinite_run)
        if longest >= nonfinite_limit:
            if not now_bad:  # the run of skipped steps ended before this step, which was taken: it counts
                data_position, iter_num = data_position + world * accum, iter_num + 1
            save_checkpoint('last.pt')
            hint = ("lower mem_lr (the inner learning rate: plain-gradient writes diverge when it is too large) or "
                    "set mem_muon=True, " if arch == 'atlas' else '')
            fail(f"{longest} non-finite losses/gradients in a row by iter {iter_num}; {hint}lower learning_rate, "
                 f"use dtype=bfloat16 or float32, or check the data (last good state saved to {out / 'last.pt'})")
    data_position += world * accum
    iter_num += 1
    iters_since_log += 1
    pbar.update(1)

    # timing and logging
    if iter_num % log_interval == 0 or iter_num == max_iters:
        lossf = loss_acc.clone()
        if ddp:
            dist.all_reduce(lossf)
            lossf /= world
        lossf = lossf.item()
        dt = time.time() - t_log
        tps = tokens_per_iter * iters_since_log / max(dt, 1e-9)
        t_log, iters_since_log = time.time(), 0
        if master:
            peak = peak_flops(device, peak_tflops)
            log_metrics({'kind': 'train', 'iter': iter_num, 'loss': lossf, 'lr': lr, 'grad_norm': grad_norm.item(),
                         'tokens_per_s': tps, 'elapsed': time.time() - t_start, 'nonfinite_skipped': nonfinite_total,
                         **({'mfu': raw_model.flops_per_token() * tps / (peak * world)} if peak else {}),
                         **({'loss_name': objective.loss_name} if objective.loss_name else {})})
            pbar.set_postfix(loss=f'{lossf:.4f}', lr=f'{lr:.2e}', tok_s=f'{tps:,.0f}', refresh=False,
                             **({'skipped': nonfinite_total} if nonfinite_total else {}))
            if not bar:
                print(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, lr {lr:.2e}, {tps:,.0f} tok/s, "
                      f"{time.time() - t_start:.0f}s" + (f", {nonfinite_total} non-finite steps skipped" if nonfinite_total else ''),
                      flush=True)
        if ddp:  # agree on a stop request at log intervals, so every process stops at the same step
            stop.agree(device)

    # a stop request (SIGTERM / SIGINT): save and leave
    if stop.requested and (not ddp or iter_num % log_interval == 0):
        save_checkpoint('last.pt')
        if master:
            pbar.write(f"caught {stop.requested}: saved {out / 'last.pt'} at iter {iter_num}; "
                       f"continue with --init_from=resume")
        break

# ----------------------------------------------------------------------------- the end
if not stop.requested and not bench_iters and not eval_only and int(nonfinite_run):
    fail(f"the run ended on {int(nonfinite_run)} skipped step(s) with non-finite loss or gradients: it is not "
         f"training any more; lower learning_rate (now {learning_rate:g}), use dtype=bfloat16 or float32, or check the data")
pbar.close()
if loggers:
    loggers.close()
if master and already_done:
    print(f"nothing to train: {out / 'last.pt'} is at iter {iter_num} >= max_iters={max_iters}; "
          f"raise --max_iters to continue")
if save_artifacts and master and not stop.requested and not bench_iters:
    save_artifacts_of('final')
nonfinite_total = int(nonfinite_count)
if master and nonfinite_total:
    print(f"skipped {nonfinite_total} steps with non-finite loss or gradients")
if ddp:
    dist.destroy_process_group()
if stop.requested:  # a stopped run is not a finished one: 128 + the signal, as a shell reports it
    raise SystemExit(stop.exit_status)
