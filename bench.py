"""
Training throughput, MFU and memory, measured on real training steps.

    python bench.py config/gpt_shakespeare_char_cpu.py [--key=value ...] # one configuration
    python bench.py --all [--device=cuda] [--peak_tflops=989]            # every arch, one table
    python bench.py config/X.py --json                                   # machine-readable
    python bench.py config/X.py --nproc=2                                # DDP under torchrun (gloo on CPU, NCCL on CUDA)

Each measurement runs train.py itself with --bench_iters=N (the same model, data path, objective,
optimizer, autocast and compile settings as a training run): bench_warmup steps are run first, then N
timed steps (forward, backward, optimizer), synchronised at the ends only. Reported: tokens/s, step
time, MFU and peak memory. MFU = model FLOPs per token x tokens/s / peak bf16 dense FLOP/s; FLOPs per
token are 6N + 12 L H Q T (nanoGPT's estimate: N parameters without position embeddings, L layers,
H heads of size Q, context T). The peak is known for H100, H200 and A100 and given with
--peak_tflops otherwise (MFU is left empty on a CPU without it).

    python bench.py --restore=out-akkadian [--restore_line="..."] [--restore_reps=5] [--json]

--restore times the restoration of one line (two gaps by default) with the run loaded, on one CPU thread (the
target of docs/restoring.md, Speed: at most 1 s at the CPU config).

    python bench.py config/X.py --sample [--sample_steps=1000] [--sample_tokens=256] [--sample_batches=1,8,32] [--device=cuda]

--sample measures sampling instead, on the config's model with random weights (speed does not depend on
them; the number of denoising calls ddpm_cache saves depends only on the random unmasking schedule):
causal archs generate sample_tokens tokens at batch 1 with model.generate (no KV cache: every step re-runs
the context window), mdlm draws block_size sequences at each batch size of sample_batches with `ddpm` and
with `ddpm_cache` at sample_steps steps (the same seed) and reports, for each, the batched network calls, the
row calls (sequences through the network, summed), tokens/s, the speed-up and whether the two samplers drew
the same tokens (the target of docs/performance.md: ddpm_cache >= 2x fewer row calls than ddpm at 1000 steps, batch 8). The model is built from
ModelConfig's defaults plus the config's keys (set every model key in a bench config).

train.py takes its timing from here: StepTimer and bench_result (--bench_iters), peak_flops (the MFU it logs) and
auto_batch_size (--batch_size=auto).
"""
import time
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from configurator import check_values, config_fail, configure

# ----------------------------------------------------------------------------- timing inside train.py

def peak_flops(device, peak_tflops=0.0):
    """The device's bf16 dense peak FLOP/s for MFU: peak_tflops, else known for H200/H100/A100, else 0 (no MFU)."""
    import torch
    if peak_tflops or not device.startswith('cuda'):
        return peak_tflops * 1e12
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in (('H200', 989e12), ('H100', 989e12), ('A100', 312e12)) if k in name), 0.0)


class StepTimer:
    """train.py --bench_iters=N: the wall clock of the N steps after `warmup` steps from iteration `start`, the
    device synchronised at the two ends only (peak memory counted from the start)."""

    def __init__(self, start, warmup, iters, device):
        import torch
        self.warmup, self.end, self.cuda, self.t0 = start + warmup, start + warmup + iters, device.startswith('cuda'), None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def seconds(self, iter_num):
        """Called before each step: the seconds the timed steps took once iter_num is their end, else None."""
        import torch
        if iter_num not in (self.warmup, self.end):
            return None
        if self.cuda:
            torch.cuda.synchronize()
        if iter_num == self.warmup:
            self.t0 = time.time()
            return None
        return time.time() - self.t0


def bench_result(seconds, steps, tokens_per_iter, model, arch, device, dtype, compile, world, peak_tflops=0.0,
                 graph_breaks=None, activation_checkpointing=False):
    """bench.json of train.py --bench_iters: tokens/s, step time, MFU against the device's bf16 dense peak (all
    processes), peak memory (CUDA: allocated; CPU: the process's peak resident set)."""
    import torch
    tps = tokens_per_iter * steps / seconds
    peak, fpt = peak_flops(device, peak_tflops), model.flops_per_token()
    if device.startswith('cuda'):
        mem = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak resident set (Linux: KiB)
    return {'arch': arch, 'device': torch.cuda.get_device_name(device) if device.startswith('cuda') else device,
            'dtype': dtype, 'compile': compile, 'params': model.num_params(), 'tokens_per_iter': tokens_per_iter,
            'tokens_per_s': tps, 'step_s': seconds / steps, 'flops_per_token': fpt,
            'mfu': fpt * tps / (peak * world) if peak else None, 'peak_mem_gib': mem, 'world_size': world,
            'graph_breaks': graph_breaks, 'activation_checkpointing': activation_checkpointing}


def write_bench(path, res):
    """bench.json (what run_one reads back), and the same on stdout."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


def auto_batch_size(loss_of, model, device, master=True, ddp=False,
                    candidates=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), steps=3):
    """train.py --batch_size=auto: time a few forward + backward passes per batch size on this device (loss_of(bs, k):
    the loss of micro-batch k at batch size bs); the size with the best samples/s among those that fit in memory
    (CUDA, MPS or CPU), printed with what was measured. Rank 0 decides under DDP (a broadcast)."""
    import torch
    choice = torch.zeros((), dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    rows, best = [], (0.0, candidates[0])
    for bs in candidates if master else ():
        try:
            for k in range(steps + 1):
                if k == 1:  # the first pass warms up
                    sync()
                    t0 = time.time()
                loss_of(bs, k).backward()
            sync()
            sps = bs * steps / (time.time() - t0)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if 'out of memory' not in str(e).lower() and not isinstance(e, torch.OutOfMemoryError):
                raise
            rows.append((bs, 'out of memory'))
            break
        finally:
            model.zero_grad(set_to_none=True)
            if device.startswith('cuda'):
                torch.cuda.empty_cache()
        rows.append((bs, f'{sps:,.1f} samples/s'))
        if sps > best[0]:
            best = (sps, bs)
        elif sps < 0.8 * best[0]:
            break  # throughput falls: larger batches will not help
    if master:
        print("batch_size=auto: " + '; '.join(f"{bs}: {r}" for bs, r in rows) + f" -> batch_size={best[1]}")
        choice.fill_(best[1])
    if ddp:
        import torch.distributed as dist
        dist.broadcast(choice, 0)
    return int(choice.item())


def count_graph_breaks(module, args, kwargs, ctx):
    """train.py --compile=True: torch.compile's graphs and graph breaks of module on one real batch (a dynamo trace,
    no code generation), printed with their reasons; the number of breaks goes into bench.json."""
    import torch._dynamo
    with ctx:
        explained = torch._dynamo.explain(module)(*args, **kwargs)
    reasons = '; '.join(sorted({str(b.reason).splitlines()[0][:100] for b in explained.break_reasons}))
    print(f"torch.compile: {explained.graph_count} graph(s), {explained.graph_break_count} graph break(s)"
          + (f": {reasons}" if reasons else ''))
    torch._dynamo.reset()
    return explained.graph_break_count


# bench.py's own options; everything else is passed to train.py
ALL_CONFIGS = {  # arch -> a 124M-class config at context 1024 (those that exist in config/)
    'gpt': 'config/bench_gpt.py',
    'encoder': 'config/bench_encoder.py',
    'mdlm': 'config/bench_mdlm.py',
    'atlas': 'config/bench_atlas.py',
}


def parse(argv):
    """bench.py's own options (configurator.py: types checked, --all / --json / --sample may stand alone);
    every other argument (config files, train.py keys) is passed on to train.py."""
    opts = {'all': False, 'json': False, 'peak_tflops': 0.0, 'bench_iters': 20, 'bench_warmup': 5, 'nproc': 1,
            'sample': False, 'sample_steps': 1000, 'sample_tokens': 256, 'sample_batches': '1,8,32',
            'restore': '', 'restore_line': RESTORE_LINE, 'restore_reps': 5}
    own, rest = [], []
    for a in argv:
        key = a[2:].partition('=')[0] if a.startswith('--') else None
        if key in opts:
            own.append(a if '=' in a or not isinstance(opts[key], bool) else a + '=True')
        else:
            rest.append(a)
    opts = configure(opts, own)
    check_values(opts, at_least={'bench_iters': 1, 'bench_warmup': 0, 'nproc': 1, 'sample_steps': 1, 'sample_tokens': 1,
                                 'peak_tflops': 0})
    batches = [b.strip() for b in opts['sample_batches'].split(',') if b.strip()]
    if not batches or not all(b.isdigit() and int(b) >= 1 for b in batches):
        config_fail(f"--sample_batches must be batch sizes of at least 1 separated by commas (e.g. 1,8,32), "
                    f"got {opts['sample_batches']!r}")
    return opts, rest


def run_one(config_args, opts):
    """Run train.py in benchmark mode and return its bench.json."""
    with tempfile.TemporaryDirectory(prefix='bench-') as tmp:
        launcher = ['-m', 'torch.distributed.run', '--standalone', f"--nproc_per_node={opts['nproc']}"] if opts['nproc'] > 1 else []
        cmd = [sys.executable, *launcher, 'train.py', *config_args, f'--out_dir={tmp}', f"--bench_iters={opts['bench_iters']}",
               f"--bench_warmup={opts['bench_warmup']}", f"--peak_tflops={opts['peak_tflops']}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        path = os.path.join(tmp, 'bench.json')
        if r.returncode != 0 or not os.path.exists(path):
            last = (r.stderr.strip().splitlines() or ['no output'])[-1]
            return {'config': ' '.join(config_args), 'error': last}
        with open(path) as f:
            res = json.load(f)
    res['config'] = ' '.join(config_args)
    return res


def sample_one(config_args, opts):
    """Sampling throughput (--sample) of one config; returns one row per sampler."""
    import torch
    from model import build_model, ModelConfig
    from sampling import mdlm_sample
    # the model keys of the config files and overrides, over ModelConfig's defaults (other keys are train.py's)
    keys = {**ModelConfig().to_dict(), 'vocab_size': 0, 'dataset': '', 'data_dir': '', 'device': 'auto'}  # 0: the data's
    keys = configure(keys, config_args, ignore_unknown=True)
    from checkpoint import check_device, model_config
    device = check_device(keys.get('device', 'auto'))
    if not keys.get('vocab_size'):
        from corpus import load_meta
        keys['vocab_size'] = load_meta(keys.get('data_dir') or os.path.join('data', keys['dataset']))['vocab_size']
    if keys.get('arch') == 'mdlm':
        keys['vocab_size'] += 1  # the added [MASK]
    cfg = model_config(keys, 'the configuration')
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    rows, base = [], {'arch': cfg.arch, 'config': ' '.join(config_args), 'device': device}
    with torch.no_grad():
        if cfg.arch == 'mdlm':
            for batch in [int(b) for b in str(opts.get('sample_batches', '1')).split(',') if b.strip()]:
                pair = []
                for name in ('ddpm', 'ddpm_cache'):
                    z = torch.full((batch, cfg.block_size), model.mask_id, device=device)
                    g = torch.Generator(device=device).manual_seed(0)
                    sync()
                    t0 = time.time()
                    x, st = mdlm_sample(model, z, steps=opts['sample_steps'], cache=name == 'ddpm_cache', generator=g)
                    sync()
                    dt = time.time() - t0
                    pair.append(x)
                    rows.append({**base, 'sampler': f"{name} ({opts['sample_steps']} steps)", 'batch': batch,
                                 'seconds': dt, 'tokens_per_s': batch * cfg.block_size / dt,
                                 'network_calls': st['network_calls'], 'row_calls': st['row_calls']})
                rows[-1]['speedup'] = rows[-2]['seconds'] / rows[-1]['seconds']
                rows[-1]['row_call_ratio'] = rows[-2]['row_calls'] / max(rows[-1]['row_calls'], 1)
                rows[-1]['same_samples'] = bool(torch.equal(*pair))
        elif cfg.arch in ('gpt', 'backpack', 'atlas'):
            idx = torch.zeros((1, 1), dtype=torch.long, device=device)
            model.generate(idx, 2)  # warm-up
            sync()
            t0 = time.time()
            model.generate(idx, opts['sample_tokens'], generator=torch.Generator(device=device).manual_seed(0))
            sync()
            dt = time.time() - t0
            rows.append({**base, 'sampler': f"generate {opts['sample_tokens']} tokens, batch 1", 'seconds': dt,
                         'tokens_per_s': opts['sample_tokens'] / dt})
        else:
            rows.append({**base, 'error': f"arch {cfg.arch} does not generate (no --sample for it)"})
    return rows


def sample_table(rows):
    lines = ['| arch | config | device | sampler | batch | seconds | tokens/s | network calls | row calls | '
             'ddpm_cache speed-up (time, row calls) | same samples |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['arch']} | {r['config']} | {r['device']} | error: {r['error']} | | | | | | | |")
            continue
        sp = f"{r['speedup']:.2f}x, {r['row_call_ratio']:.2f}x" if 'speedup' in r else ''
        same = {True: 'yes', False: 'NO'}.get(r.get('same_samples'), '')
        lines.append(f"| {r['arch']} | {r['config']} | {r['device']} | {r['sampler']} | {r.get('batch', 1)} | "
                     f"{r['seconds']:.2f} | {r['tokens_per_s']:,.1f} | {r.get('network_calls', '')} | "
                     f"{r.get('row_calls', '')} | {sp} | {same} |")
    return '\n'.join(lines)


def table(rows):
    head = '| arch | config | device | processes | tokens/s | step (ms) | MFU | peak mem (GiB) |'
    lines = [head, '|---|---|---|---|---|---|---|---|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| ? | {r['config']} | | | error: {r['error']} | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get('mfu') is not None else '–'
        mem = f"{r['peak_mem_gib']:.2f}" if r.get('peak_mem_gib') is not None else '–'
        lines.append(f"| {r['arch']} | {r['config']} | {r['device']} | {r['world_size']} | {r['tokens_per_s']:,.0f} | "
                     f"{1000 * r['step_s']:.1f} | {mfu} | {mem} |")
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- restoring one line (--restore)
RESTORE_LINE = 'a-na LUGAL be-li₂-ia ARAD-ka {m}aš-šur-[x x] lu DI-mu a-na LUGAL [...] be-li₂-ia'


def restore_one(opts):
    """--restore=OUT_DIR: the time to restore one line (--restore_line, two gaps by default) with the run loaded, on
    one CPU thread, as sample.py and serve.py restore it (restorer.Restorer.line, default options): the loading
    (checkpoint, count tables, the product's weights from out_dir/restore.json when cached), the first line, and the
    median and best of --restore_reps more, wall-clock and CPU time of the process (on a shared machine the wall clock
    includes the time other processes held the core); then the same with --explain's saliency."""
    import statistics
    import torch
    from checkpoint import load_run
    from restorer import Restorer
    torch.set_num_threads(1)
    t0 = time.time()
    model, ckpt, data_dir = load_run(opts['restore'], 'ckpt.pt', 'cpu')
    r = Restorer(model, ckpt, data_dir, cache_dir=opts['restore'], ckpt_path=os.path.join(opts['restore'], 'ckpt.pt'))
    row = {'run': opts['restore'], 'line': opts['restore_line'], 'threads': torch.get_num_threads(),
           'load_s': time.time() - t0}
    for key, kw in (('', {}), ('explain_', {'explain': True})):
        times, cpu = [], []
        for k in range(opts['restore_reps'] + 1):
            t0, c0 = time.time(), time.process_time()
            res = r.line(opts['restore_line'], **kw)
            times.append(time.time() - t0)
            cpu.append(time.process_time() - c0)  # the CPU time of this process: what a core of its own would take
        row.update({f'{key}first_s': times[0], f'{key}median_s': statistics.median(times[1:]),
                    f'{key}best_s': min(times[1:]), f'{key}cpu_median_s': statistics.median(cpu[1:])})
    row.update(gaps=len(res['gaps']), best=res['best'])
    return row


def main(argv):
    opts, rest = parse(argv)
    if opts['restore']:
        row = restore_one(opts)
        print(json.dumps(row, ensure_ascii=False, indent=1) if opts['json'] else
              f"restoring one line of {row['gaps']} gaps with {row['run']} loaded ({row['load_s']:.2f}s), "
              f"{row['threads']} CPU thread: first {row['first_s']:.3f}s, median {row['median_s']:.3f}s, best "
              f"{row['best_s']:.3f}s of {opts['restore_reps']} (CPU time {row['cpu_median_s']:.3f}s); with --explain "
              f"median {row['explain_median_s']:.3f}s (CPU time {row['explain_cpu_median_s']:.3f}s)\n"
              f"best: {row['best']}")
        return
    configs = [a for a in rest if not a.startswith('--')]
    overrides = [a for a in rest if a.startswith('--')]
    if opts['all']:
        runs = [[path, *overrides] for arch, path in ALL_CONFIGS.items() if os.path.exists(path)]
    elif configs or overrides:
        runs = [[*configs, *overrides]]
    else:
        print("usage: python bench.py config/X.py [--key=value ...] | --all [--device=cuda] [--peak_tflops=N] [--json]",
              file=sys.stderr)
        raise SystemExit(2)
    rows = []
    for args in runs:
        print(f"benchmarking {' '.join(args)} ...", file=sys.stderr)
        if opts['sample']:
            rows.extend(sample_one(args, opts))
        else:
            rows.append(run_one(args, opts))
    print(json.dumps(rows, indent=1) if opts['json'] else (sample_table if opts['sample'] else table)(rows))
    failed = [r for r in rows if 'error' in r]
    if failed:  # a benchmark whose run failed has measured nothing: say so in the exit status too
        print(f"error: {len(failed)} of {len(rows)} benchmark run(s) failed: " + '; '.join(r['error'] for r in failed),
              file=sys.stderr)
        raise SystemExit(1)


if __name__ == '__main__':
    main(sys.argv[1:])
