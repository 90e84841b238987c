"""
One training loop for every architecture; the objective follows the arch (model.objective).

    python train.py config/shakespeare_char_cpu.py
    python train.py config/train_akkadian.py --batch_size=32 --compile=True
    torchrun --standalone --nproc_per_node=2 train.py config/X.py     # DDP (NCCL on CUDA, gloo on CPU)
    python train.py --out_dir=DIR --init_from=resume                # continue DIR/last.pt exactly, with its own config
    python train.py config/X.py --overwrite=True                    # start over in an out_dir that holds a run

Writes out_dir/ckpt.pt (best val loss), out_dir/last.pt (latest state, also on SIGTERM/SIGINT) and
out_dir/metrics.jsonl (one JSON object per log line and per evaluation). The out_dir is locked before anything
in it is looked at, and an out_dir that holds a run is never overwritten unless asked (--overwrite=True, which
deletes the run's files only: checkpoint.claim_run_dir). A resumed run keeps its shape and objective; the options
that may change are checkpoint.RESUME_MAY_CHANGE (README, Reliability). SIGTERM / SIGINT save last.pt and exit
with status 143 / 130, so `train.py && evaluate.py` never evaluates a stopped run; a second signal stops at once.
"""
import inspect
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (check_data, check_device, check_model_shapes, checked_checkpoint, claim_run_dir, data_fingerprints,
                        model_config, nonfinite_weights, read_metrics, resume_config, save_atomic, StopRequest,
                        torch_load, write_text_atomic)
from configurator import configure, format_config
from corpus import BatchLoader, check_dataset, die, fixed_subset, load_meta
from evals.literature import causal_probe
from loggers import RunLoggers
from model import build_model, ModelConfig, MODELS, objective, optimizer_groups
from objectives import (device_generator, diffusion_noise_device, maskable_positions_device, mlm_batch, mlm_mask_device,
                        n_lead_specials, special_ids_tensor)

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
# ModelConfig's defaults except these (nanoGPT's small default shape; ModelConfig's is the 124M one)
globals().update({k: v for k, v in ModelConfig().to_dict().items() if k != 'mask_id'})  # [MASK] comes from the data
vocab_size = 0                  # 0 = the data's (meta.json); larger pads the embedding (e.g. 50304)
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
# objective: masked LM (arch encoder)
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


def check_options():
    """Values a config can hold but a run cannot use: one line each, before anything is built or written."""
    if init_from not in ('scratch', 'resume') and not os.path.isfile(init_from) and not init_from.startswith('hf:'):
        die(f"init_from must be 'scratch', 'resume' or the path of a local state dict; {init_from!r} is none of them")
    if arch not in MODELS and arch != 'hf':
        die(f"unknown arch {arch!r}; choose one of {', '.join(MODELS)}, or hf (a Hugging Face masked LM)")
    if (arch == 'hf') != init_from.startswith('hf:') and init_from != 'resume':
        die(f"arch='hf' and init_from='hf:MODEL' go together (got arch={arch!r}, init_from={init_from!r}): "
            f"e.g. python train.py config/finetune_hf_tiny_cpu.py")
    if batch_size != 'auto' and batch_size < 1:
        die(f"batch_size must be at least 1 (or 'auto'), got {batch_size}")
    for k in ('block_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval'):
        if globals()[k] < 1:
            die(f"{k} must be at least 1, got {globals()[k]}")
    if max_iters < 1 and not eval_only:
        die(f"max_iters={max_iters}: nothing to train; set max_iters >= 1 (or eval_only=True to evaluate only)")
    if not 0 <= ema_decay < 1:
        die(f"ema_decay must be in [0, 1) (0 = no EMA; MDLM uses 0.9999), got {ema_decay}")
    for k in ('learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'warmup_iters', 'lr_decay_iters', 'vocab_size',
              'bench_iters', 'bench_warmup', 'peak_tflops', 'num_threads', 'max_nonfinite', 'span_mean', 'mask_rate_max'):
        if globals()[k] < 0:
            die(f"{k} must not be negative, got {globals()[k]}")
    if learning_rate == 0:
        die("learning_rate=0 would train nothing; give a positive learning rate")
    for k in ('beta1', 'beta2', 'mask_replace', 'mask_random'):
        if not 0 <= globals()[k] <= 1:
            die(f"{k} must lie in [0, 1], got {globals()[k]}")
    if not 0 < mask_rate <= 1 or mask_rate_max > 1 or mask_replace + mask_random > 1:
        die(f"mask_rate must lie in (0, 1], mask_rate_max in [0, 1] and mask_replace + mask_random <= 1 "
            f"(got {mask_rate}, {mask_rate_max}, {mask_replace} + {mask_random})")
    if artifact_docs < 1 or not all(l.strip().isdigit() for l in artifact_layers.split(',') if l.strip()):
        die(f"artifact_docs must be at least 1 and artifact_layers a list of layers such as 0,4,8 "
            f"(got {artifact_docs}, {artifact_layers!r})")
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        die(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    if not out_dir.strip():
        die("out_dir is empty: name the run's folder, e.g. --out_dir=out-shakespeare-char")
    if seed < 0:
        die(f"seed must not be negative (numpy's generators refuse it), got {seed}")
    check_device(device)
    if overwrite and init_from == 'resume':
        die("overwrite=True and init_from='resume' contradict each other: resume continues the run, overwrite deletes it")


check_options()

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
    globals().update(config)
    check_options()
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
obj = 'mlm' if arch == 'hf' else objective(arch)
aux = tuple(a for a in meta.get('aux', {}) if a == 'flags')
special_ids = meta.get('special_ids') or {}
mask_id = special_ids.get('[MASK]')
if obj == 'mlm' and mask_id is None:
    die(f"{data_dir} has no [MASK] token: a masked-LM arch needs a tokenizer with [MASK] (re-run its prepare script)")
if obj == 'diffusion' and mask_id is None:
    mask_id = meta['vocab_size']  # no [MASK] in the tokenizer (e.g. GPT-2 BPE): a mask token added to the vocabulary
special_tensor = special_ids_tensor(meta, device) if obj == 'mlm' else None  # for maskable_positions_device


def make_batch(split, index, stream=0, it=None):
    """Micro-batch `index` of `split` on the device, with the objective's corruption applied:
    (x, y, doc, extra), extra = keyword arguments of the model call (the diffusion noise). `it` is the
    iteration the batch is for (default: the current one; the loop makes the next step's batch early)."""
    return make_batch_with(loader, split, index, stream, it)


def to_device(t):
    """A CPU tensor onto the device; on CUDA through pinned memory, without blocking the host."""
    if t is None:
        return None
    return t.pin_memory().to(device, non_blocking=True) if device_type == 'cuda' else t.to(device)


def make_batch_with(loader, split, index, stream=0, it=None):
    # The corruption is drawn on the device from a generator seeded by the batch's own numpy Generator
    # (objectives.device_generator), so it stays a pure function of (seed, split, stream, index); only
    # masked-LM spans (span_mean > 0, a sequential draw) are made on the CPU.
    b = loader.get(split, index, stream)
    extra = {}
    if obj == 'mlm' and span_mean > 0:
        rate = b['rng'].uniform(0.0, mask_rate_max, b['x'].shape[0]) if mask_rate_max > 0 else mask_rate
        x, y = mlm_batch(b, b['rng'], meta, rate, replace=(mask_replace, mask_random, 1 - mask_replace - mask_random),
                         span_mean=span_mean)
        x, y = to_device(x), to_device(y)
    elif obj == 'mlm':
        x, g = to_device(b['x']), device_generator(b['rng'], device)
        rate = (torch.rand(x.shape[0], generator=g, device=x.device, dtype=torch.float64) * mask_rate_max
                if mask_rate_max > 0 else mask_rate)
        maskable = maskable_positions_device(x, to_device(b.get('flags')), special_tensor)
        x, y = mlm_mask_device(x, g, rate, mask_id, meta['vocab_size'], maskable, rand_low=n_lead_specials(meta),
                               replace=(mask_replace, mask_random, 1 - mask_replace - mask_random))
    else:
        x, y = to_device(b['x']), to_device(b['y'])
    if obj == 'diffusion':  # t stratified over the global batch (training) or over the eval batches
        group = gradient_accumulation_steps if stream == 0 else eval_iters
        t, u = diffusion_noise_device(device_generator(b['rng'], device), x.shape[0], x.shape[1], index % group,
                                      group, x.device)
        extra = {'t': t, 'u': u, 'progress': (iter_num if it is None else it) / max(1, max_iters)}
    return x, y, to_device(b.get('doc') if doc_mask else None), extra


def auto_batch_size(candidates=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), steps=3):
    """Time a few forward+backward passes per batch size on this device; return the one with the
    best samples/s among those that fit in memory (CUDA, MPS or CPU). Rank 0 decides under DDP."""
    choice = torch.zeros((), dtype=torch.long, device=device)
    if master:
        probe = BatchLoader(data_dir, block_size, 1, seed=seed, aux=aux)
        rows, best = [], (0.0, candidates[0])
        for bs in candidates:
            try:
                probe.batch_size = bs
                for k in range(steps + 1):
                    if k == 1:
                        if device_type == 'cuda':
                            torch.cuda.synchronize()
                        t0 = time.time()
                    x, y, doc, extra = make_batch_with(probe, 'train', k)
                    with ctx:
                        _, loss = model(x, y, doc, **extra)
                    loss.backward()
                if device_type == 'cuda':
                    torch.cuda.synchronize()
                sps = bs * steps / (time.time() - t0)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if 'out of memory' not in str(e).lower() and not isinstance(e, torch.OutOfMemoryError):
                    raise
                rows.append((bs, 'out of memory'))
                break
            finally:
                model.zero_grad(set_to_none=True)
                if device_type == 'cuda':
                    torch.cuda.empty_cache()
            rows.append((bs, f'{sps:,.1f} samples/s'))
            if sps > best[0]:
                best = (sps, bs)
            elif sps < 0.8 * best[0]:
                break  # throughput falls: larger batches will not help
        print("batch_size=auto: " + '; '.join(f"{bs}: {r}" for bs, r in rows) + f" -> batch_size={best[1]}")
        choice.fill_(best[1])
    if ddp:
        dist.broadcast(choice, 0)
    return int(choice.item())


# ----------------------------------------------------------------------------- model, optimizer, state
model_keys = [k for k in ModelConfig().to_dict() if k in config]
model_args = {k: config[k] for k in model_keys}
model_args['vocab_size'] = meta['vocab_size']
if vocab_size:  # a padded vocabulary (e.g. 50304, a multiple of 64, for speed); ids stay those of the data
    if vocab_size < meta['vocab_size']:
        die(f"vocab_size={vocab_size} is smaller than the data's {meta['vocab_size']} ids; use 0 (the data's) or more")
    model_args['vocab_size'] = vocab_size
if obj == 'diffusion':
    model_args['mask_id'] = mask_id
    model_args['vocab_size'] = max(model_args['vocab_size'], mask_id + 1)
iter_num, best_val_loss, data_position, nonfinite_total = 0, float('inf'), 0, 0
if ckpt is not None:  # resume: the run's configuration was merged above (resume_config)
    check_data(ckpt, data_dir, allow_other_data, out / 'last.pt')
    model_args = ckpt['model_args']  # the architecture comes from the checkpoint
    iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    data_position, nonfinite_total = ckpt['data_position'], ckpt.get('nonfinite_total', 0)
if arch == 'hf' and ckpt is None:  # the pretrained config, tokenizer files and sign -> pieces table (hf_encoder.py)
    from hf_encoder import hf_model_args
    model_args = hf_model_args(init_from, data_dir, block_size, doc_mask)
try:
    if arch == 'hf':
        from hf_encoder import build_hf, check_hf_model_args
        check_hf_model_args(model_args, out / 'last.pt' if ckpt is not None else init_from)
        model = build_hf(model_args, init_from if ckpt is None else None)
    else:  # sane sizes, and the shapes checked on the meta device before anything is allocated (16 bytes per
        what = 'the configuration' if ckpt is None else out / 'last.pt'  # parameter: weights, grads, AdamW)
        build_cfg = model_config(model_args, what)
        check_model_shapes(lambda: build_model(build_cfg), what, ckpt and ckpt['model'], device, 16)
        model = build_model(build_cfg)
except ValueError as e:
    die(str(e))
if model_args.get('attention', 'standard') == 'agglutinative':
    if 'word_start' not in meta or 'token_class' not in meta:
        die(f"attention='agglutinative' needs meta.json 'word_start' and 'token_class' in {data_dir} (prepare/turkish.py writes them)")
    model.set_token_tables(meta['word_start'], meta['token_class'])
if ckpt is not None:
    model.load_state_dict(ckpt['model'])
elif init_from not in ('scratch', 'resume') and arch != 'hf':  # pretrained weights from a local file; the optimizer starts fresh
    from checkpoint import load_pretrained
    try:
        load_pretrained(model, torch_load(init_from), init_from)
    except ValueError as e:
        die(f"--init_from={init_from}: {e}")
    if master:
        print(f"initialised the weights from {init_from}")
model.to(device)
if ckpt is not None and batch_size == 'auto':
    batch_size = ckpt['config']['batch_size']  # resume with the batch size that was chosen
if batch_size == 'auto':
    batch_size = auto_batch_size()
    config['batch_size'] = batch_size
loader = BatchLoader(data_dir, block_size, batch_size, seed=seed, aux=aux, doc_aligned=doc_aligned)
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
loss_name = getattr(model, 'loss_name', None)  # MDLM with importance options: a weighted objective
weighted_loss = loss_name not in (None, 'nelbo')
if master:
    print("config:\n" + format_config(config))
    print(f"arch {arch} ({obj} objective): {model.num_params() / 1e6:.2f}M parameters, "
          f"{model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding")
    if weighted_loss:
        print(f"training loss: {loss_name} (a weighted objective, not a bound); val_loss stays the plain NELBO")
    print(f"tokens per iteration: {tokens_per_iter:,} ({world} process(es) x {accum} micro-steps x {batch_size} x {block_size})")

use_fused = 'fused' in inspect.signature(torch.optim.AdamW).parameters and device_type in ('cuda', 'cpu')
optimizer = torch.optim.AdamW(optimizer_groups(model, weight_decay), lr=learning_rate, betas=(beta1, beta2),
                              **({'fused': True} if use_fused else {}))
scaler = torch.amp.GradScaler(device_type if device_type in ('cuda', 'cpu') else 'cuda', enabled=(dtype == 'float16'))
if ckpt is not None:
    optimizer.load_state_dict(ckpt['optimizer'])
    optimizer.param_groups[0]['weight_decay'] = weight_decay  # the options of this invocation (they may change
    for group in optimizer.param_groups:                      # on resume); lr is set at every step
        group['betas'] = (beta1, beta2)
    if ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    rng = ckpt['rng'][min(rank, len(ckpt['rng']) - 1)]
    torch.set_rng_state(rng['torch'].cpu())
    if device_type == 'cuda' and rng.get('cuda'):
        torch.cuda.set_rng_state_all([s.cpu() for s in rng['cuda']])
    random.setstate(rng['python'])
    np.random.set_state((rng['numpy'][0], rng['numpy'][1].numpy().astype(np.uint32), *rng['numpy'][2:]))
# A step with non-finite gradients is skipped on the device, without a host sync: the fused AdamW takes GradScaler's
# `found_inf` and leaves parameters, moments and step count as they were where it is 1. The skips are counted on
# the device and read at log intervals, where the non-finite guard (max_nonfinite in a row) is checked. An
# optimizer without `found_inf` (no fused AdamW: MPS) skips with one host sync per step instead.
skip_on_device = use_fused
nonfinite_count = torch.tensor(nonfinite_total, device=device)   # steps skipped so far in this run
nonfinite_run = torch.zeros((), dtype=torch.long, device=device)  # skipped in a row, up to the last step
nonfinite_longest = torch.zeros_like(nonfinite_run)             # the longest such run since the last log interval
# EMA of the weights (Polyak averaging, as MDLM's 0.9999): float32 copies of the parameters beside the model
ema_names = [n for n, p in model.named_parameters() if p.requires_grad] if ema_decay > 0 else []
ema_params = [p for n, p in model.named_parameters() if p.requires_grad] if ema_decay > 0 else []
ema = []
if ema_decay > 0:
    saved = (ckpt or {}).get('ema')
    if saved is not None and set(saved) == set(ema_names):
        ema = [saved[n].to(device=device, dtype=torch.float32).clone() for n in ema_names]
    else:
        if ckpt is not None and master:
            print(f"ema_decay={ema_decay}: {out / 'last.pt'} has no EMA of these weights; the EMA starts from the resumed weights")
        ema = [p.detach().to(torch.float32).clone() for p in ema_params]
loggers = RunLoggers(out, config, iter_num, ckpt) if master else None  # checks the packages; opens at the first row
ckpt = None  # free memory

raw_model = model
graph_breaks = None
if compile:
    import torch._dynamo
    torch._dynamo.config.capture_dynamic_output_shape_ops = True  # backpack's torch.unique stays in the graph
    if master:  # count graph breaks on one real batch (a dynamo trace, no code generation)
        xb, yb, docb, extrab = make_batch('train', 0)
        with ctx:
            explained = torch._dynamo.explain(model)(xb, yb, docb, **extrab)
        graph_breaks = explained.graph_break_count
        reasons = '; '.join(sorted({str(b.reason).splitlines()[0][:100] for b in explained.break_reasons}))
        print(f"torch.compile: {explained.graph_count} graph(s), {graph_breaks} graph break(s)"
              + (f": {reasons}" if reasons else ''))
        torch._dynamo.reset()
        print("compiling the model (takes a minute)...")
    model = torch.compile(model)
train_model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else model


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
    """Mean loss over the same eval_iters batches of each split at every evaluation (stream 1),
    shared out over the DDP processes."""
    out_losses = {}
    model.eval()
    for split in [s for s in ('train', 'val') if s in loader.splits()]:
        losses = torch.zeros(eval_iters, device=device, dtype=torch.float32 if device_type == 'mps' else torch.float64)
        for k in range(rank, eval_iters, world):
            x, y, doc, extra = make_batch(split, k, stream=1)
            with ctx:
                _, loss = model(x, y, doc, **extra)
            losses[k] = loss
        if ddp:
            dist.all_reduce(losses)
        out_losses[split] = losses.mean().item()
    model.train()
    return out_losses


@torch.no_grad()
def probe_model():
    """evals/literature.py causal_probe on the first val batch (eval stream): retrieval loss beyond the attention window
    and, for atlas, the per-layer memory and gate diagnostics (rank 0 only; no collectives)."""
    raw_model.eval()
    x, y, _, _ = make_batch('val' if 'val' in loader.splits() else 'train', 0, stream=1)
    with ctx:
        out = causal_probe(raw_model, x, y)
    raw_model.train()
    return out


def rng_state():
    s = np.random.get_state()
    return {'torch': torch.get_rng_state(), 'python': random.getstate(),
            'cuda': torch.cuda.get_rng_state_all() if device_type == 'cuda' else [],
            'numpy': [s[0], torch.from_numpy(s[1].astype(np.int64)), int(s[2]), int(s[3]), float(s[4])]}


def save_checkpoint(name):
    """Write out_dir/name atomically (temp file + rename). Collective under DDP (RNG states of
    every process are gathered); only rank 0 writes."""
    bad = nonfinite_weights(raw_model)  # the same on every process: they all stop together
    if bad:
        fail(f"the weights became non-finite by iter {iter_num} ({len(bad)} tensors, e.g. {bad[0]}): lower learning_rate "
             f"(now {learning_rate:g}) or use dtype=float32; nothing was saved over the last finite {out / name}")
    states = [rng_state()]
    if ddp:
        states = [None] * world
        dist.all_gather_object(states, rng_state())
    if not master:
        return
    state = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
             'model_args': model_args, 'config': config, 'iter_num': iter_num, 'best_val_loss': best_val_loss,
             'data_position': data_position, 'nonfinite_total': int(nonfinite_count), 'rng': states,
             'data_fingerprint': fingerprint, **loggers.state()}
    if ema:
        state['ema'] = dict(zip(ema_names, ema))
    save_atomic(state, out / name)


@torch.no_grad()
def write_artifacts(name):
    """Interpretability artifacts: the input embedding matrix and the hidden states at
    artifact_layers for the fixed eval subset (artifact_docs documents of val, seed 42), float16,
    with the token ids and document offsets -> out_dir/artifacts_{name}.pt (weights_only-loadable)."""
    layers = sorted({int(l) for l in artifact_layers.split(',') if l.strip()})
    kept = [l for l in layers if 0 <= l <= raw_model.cfg.n_layer]
    if kept != layers:
        print(f"artifacts: layers {sorted(set(layers) - set(kept))} do not exist in a {raw_model.cfg.n_layer}-layer model; kept {kept}")
    split = 'val' if 'val' in loader.splits() else 'train'
    docs = fixed_subset(data_dir, split, artifact_docs, seed=42)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    was_training = raw_model.training
    raw_model.eval()
    ids_all, offsets, hidden = [], [0], {l: [] for l in kept}
    for s0, e0 in docs:
        ids = torch.from_numpy(np.asarray(data[s0:e0], dtype=np.int64))
        for c in range(0, len(ids), block_size):  # a document longer than the context goes in pieces
            with ctx:
                _, hs = raw_model.trunk(ids[c:c + block_size][None].to(device), None, set(kept))
            for l in kept:
                hidden[l].append(hs[l][0].half().cpu())
        ids_all.append(ids)
        offsets.append(offsets[-1] + len(ids))
    raw_model.train(was_training)
    state = {'token_ids': torch.cat(ids_all).int(), 'doc_offsets': torch.tensor(offsets), 'split': split, 'seed': 42,
             'embeddings': (raw_model.sign_embeddings() if arch == 'hf' else raw_model.trunk.wte.weight).detach().half().cpu(),
             'layers': kept, 'iter': iter_num,
             'hidden': {str(l): torch.cat(hidden[l]) for l in kept}}
    save_atomic(state, out / f'artifacts_{name}.pt')
    print(f"wrote {out / f'artifacts_{name}.pt'}: {len(docs)} documents, {offsets[-1]:,} tokens, layers {kept}")


def peak_flops():
    """The device's bf16 dense peak FLOP/s for MFU: peak_tflops, else known for H200/H100/A100, else 0 (no MFU)."""
    if peak_tflops or device_type != 'cuda':
        return peak_tflops * 1e12
    name = torch.cuda.get_device_name()
    return next((v for k, v in (('H200', 989e12), ('H100', 989e12), ('A100', 312e12)) if k in name), 0.0)


def write_bench(seconds):
    """bench.py's measurement: tokens/s, step time, MFU against the device's bf16 dense peak, peak memory."""
    tps = tokens_per_iter * bench_iters / seconds
    peak = peak_flops()
    fpt = raw_model.flops_per_token()
    if device_type == 'cuda':
        mem = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak resident set (Linux: KiB)
    res = {'arch': arch, 'device': torch.cuda.get_device_name() if device_type == 'cuda' else device, 'dtype': dtype,
           'compile': compile, 'params': raw_model.num_params(), 'tokens_per_iter': tokens_per_iter,
           'tokens_per_s': tps, 'step_s': seconds / bench_iters, 'flops_per_token': fpt,
           'mfu': fpt * tps / (peak * world) if peak else None, 'peak_mem_gib': mem, 'world_size': world,
           'graph_breaks': graph_breaks, 'activation_checkpointing': activation_checkpointing}
    if master:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / 'bench.json', 'w') as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res))


def log_metrics(row):
    if master:  # strict JSON: a non-finite number is written as null
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with open(out / 'metrics.jsonl', 'a') as f:
            f.write(json.dumps(row) + '\n')
        loggers.log(row)


def fail(msg):
    """die() from inside the loop: close the progress bar first so the message has its own line."""
    if 'pbar' in globals():
        pbar.close()
    die(msg)


mpath = out / 'metrics.jsonl'
if master and init_from == 'resume' and mpath.exists():  # drop rows logged after the state we resume from
    rows = [r for r in read_metrics(mpath) if r.get('iter', 0) <= iter_num]
    write_text_atomic(mpath, ''.join(json.dumps(r) + '\n' for r in rows))

stop = StopRequest().install()  # SIGTERM / SIGINT: save last.pt at the end of the step; a second one stops at once

if save_artifacts and (init_from == 'scratch' or init_from.startswith('hf:')) and not bench_iters:
    save_checkpoint('init.pt')  # the initial weights are kept, so "before" can be recomputed
    if master:
        write_artifacts('init')

# ----------------------------------------------------------------------------- the loop
from tqdm import tqdm

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
if bench_iters:
    max_iters = iter_num + bench_warmup + bench_iters
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
while True:
    if bench_iters and iter_num in (bench_warmup, max_iters):  # time the steps between warm-up and the end
        if device_type == 'cuda':
            torch.cuda.synchronize()
        if iter_num == bench_warmup:
            t_bench = time.time()
        else:
            write_bench(time.time() - t_bench)
            break
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != skip_eval_at and not bench_iters:
        losses = estimate_loss()
        if master:
            row = {'kind': 'eval', 'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses.get('val'),
                   'lr': get_lr(iter_num), 'elapsed': time.time() - t_start}
            if 'val' in losses:
                row['train_val_gap'] = losses['val'] - losses['train']  # held-out evidence for any grokking claim
            if obj == 'causal' and (arch == 'atlas' or window):
                row.update(probe_model())
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

    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr
    loss_acc.zero_()
    base = data_position + rank * accum
    if batch is None:  # the first step of this process; later ones were made during the step before
        batch = make_batch('train', base)
    for micro in range(accum):
        x, y, doc, extra = batch
        if ddp:
            train_model.require_backward_grad_sync = micro == accum - 1
        with ctx:
            _, loss = train_model(x, y, doc, **extra)
            loss = loss / accum
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
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float('inf'))
    bad = ~torch.isfinite(grad_norm)  # a non-finite loss gives non-finite gradients; a device tensor, not read here
    if skip_on_device:  # the update is skipped where found_inf is 1 (fp16: grads already unscaled by scaler.unscale_)
        optimizer.found_inf = bad.float()
        optimizer.step()
        del optimizer.found_inf
    elif not bad.item():  # no fused AdamW: one host sync per step
        scaler.step(optimizer)
    if ema:  # ema = d * ema + (1 - d) * param after a step that was taken; unchanged after a skipped one
        with torch.no_grad():
            delta = torch._foreach_sub([p.detach().to(torch.float32) for p in ema_params], ema)
            torch._foreach_mul_(delta, (1.0 - ema_decay) * (~bad).to(torch.float32))
            torch._foreach_add_(ema, delta)
    nonfinite_count += bad
    nonfinite_run.add_(1).mul_(bad)  # + 1 after a skipped step, 0 after a taken one
    torch.maximum(nonfinite_longest, nonfinite_run, out=nonfinite_longest)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if (iter_num + 1) % log_interval == 0 or iter_num + 1 == max_iters:  # a log interval: the one host sync
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
            log_metrics({'kind': 'train', 'iter': iter_num, 'loss': lossf, 'lr': lr, 'grad_norm': grad_norm.item(),
                         'tokens_per_s': tps, 'elapsed': time.time() - t_start, 'nonfinite_skipped': nonfinite_total,
                         **({'mfu': raw_model.flops_per_token() * tps / (peak_flops() * world)} if peak_flops() else {}),
                         **({'loss_name': loss_name} if weighted_loss else {})})
            pbar.set_postfix(loss=f'{lossf:.4f}', lr=f'{lr:.2e}', tok_s=f'{tps:,.0f}', refresh=False,
                             **({'skipped': nonfinite_total} if nonfinite_total else {}))
            if not bar:
                print(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, lr {lr:.2e}, {tps:,.0f} tok/s, "
                      f"{time.time() - t_start:.0f}s" + (f", {nonfinite_total} non-finite steps skipped" if nonfinite_total else ''),
                      flush=True)
        if ddp:  # agree on a stop request at log intervals, so every process stops at the same step
            flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0 and not stop.requested:
                stop.requested = 'peer'
    if stop.requested and (not ddp or iter_num % log_interval == 0):
        save_checkpoint('last.pt')
        if master:
            pbar.write(f"caught {stop.requested}: saved {out / 'last.pt'} at iter {iter_num}; "
                       f"continue with --init_from=resume")
        break

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
    write_artifacts('final')
nonfinite_total = int(nonfinite_count)
if master and nonfinite_total:
    print(f"skipped {nonfinite_total} steps with non-finite loss or gradients")
if ddp:
    dist.destroy_process_group()
if stop.requested:  # a stopped run is not a finished one: 128 + the signal, as a shell reports it
    raise SystemExit(stop.exit_status)
