"""
Training throughput, MFU and memory, measured on real training steps.

    python bench.py config/shakespeare_char_cpu.py [--key=value ...]     # one configuration
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
"""
import json
import os
import subprocess
import sys
import tempfile

# bench.py's own options; everything else is passed to train.py
ALL_CONFIGS = {  # arch -> a 124M-class config at context 1024 (those that exist in config/)
    'gpt': 'config/bench_gpt.py',
    'encoder': 'config/bench_encoder.py',
    'mdlm': 'config/bench_mdlm.py',
}


def parse(argv):
    opts = {'all': False, 'json': False, 'peak_tflops': 0.0, 'bench_iters': 20, 'bench_warmup': 5, 'nproc': 1}
    rest = []
    for a in argv:
        key, eq, val = a[2:].partition('=') if a.startswith('--') else ('', '', '')
        if key in ('all', 'json') and (not eq or val in ('True', 'true', '1')):
            opts[key] = True
        elif key == 'peak_tflops':
            opts['peak_tflops'] = float(val)
        elif key in ('bench_iters', 'bench_warmup', 'nproc'):
            opts[key] = int(val)
        else:
            rest.append(a)
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


def main(argv):
    opts, rest = parse(argv)
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
        rows.append(run_one(args, opts))
    print(json.dumps(rows, indent=1) if opts['json'] else table(rows))


if __name__ == '__main__':
    main(sys.argv[1:])
