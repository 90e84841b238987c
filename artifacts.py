"""
Interpretability artifacts of a training run: written by train.py (--save_artifacts=True: artifacts_init.pt before
training, artifacts_final.pt after), read by interpret.py (docs/interpret.md, What did the model learn?).

An artifacts file holds the input embedding matrix and the hidden states at artifact_layers (0 = embedding output,
i = output of block i) of a fixed eval subset (artifact_docs documents of the val split, seed 42), float16, with the
token ids and document offsets; weights_only-loadable. A document longer than the context is run in pieces of
block_size tokens (interpret.py reruns the same pieces).
"""
import os

import numpy as np
import torch

from checkpoint import save_atomic, torch_load
from corpus import die, fixed_subset

ARTIFACT_KEYS = ('token_ids', 'doc_offsets', 'hidden', 'layers')
STAGE_CHECKPOINT = {'init': 'init.pt', 'final': 'last.pt'}  # the checkpoint each stage was saved beside
SUBSET_SEED = 42


def parse_layers(spec):
    """'0,4,8' -> [0, 4, 8], sorted and without repeats."""
    return sorted({int(l) for l in spec.split(',') if l.strip()})


@torch.no_grad()
def write_artifacts(path, model, data_dir, split, layers, n_docs, block_size, device, ctx, iter_num):
    """Run the fixed subset (n_docs documents of `split`, seed 42) through model.trunk and save the states at
    `layers` (those the model has; the rest are named and left out) to path, atomically."""
    kept = [l for l in layers if 0 <= l <= model.cfg.n_layer]
    if kept != layers:
        print(f"artifacts: layers {sorted(set(layers) - set(kept))} do not exist in a {model.cfg.n_layer}-layer model; kept {kept}")
    docs = fixed_subset(data_dir, split, n_docs, seed=SUBSET_SEED)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    was_training = model.training
    model.eval()
    ids_all, offsets, hidden = [], [0], {l: [] for l in kept}
    for s0, e0 in docs:
        ids = torch.from_numpy(np.asarray(data[s0:e0], dtype=np.int64))
        for c in range(0, len(ids), block_size):  # a document longer than the context goes in pieces
            with ctx:
                _, hs = model.trunk(ids[c:c + block_size][None].to(device), None, set(kept))
            for l in kept:
                hidden[l].append(hs[l][0].half().cpu())
        ids_all.append(ids)
        offsets.append(offsets[-1] + len(ids))
    model.train(was_training)
    embeddings = model.sign_embeddings() if hasattr(model, 'sign_embeddings') else model.trunk.wte.weight  # hf: per sign
    state = {'token_ids': torch.cat(ids_all).int(), 'doc_offsets': torch.tensor(offsets), 'split': split,
             'seed': SUBSET_SEED, 'embeddings': embeddings.detach().half().cpu(), 'layers': kept, 'iter': iter_num,
             'hidden': {str(l): torch.cat(hidden[l]) for l in kept}}
    save_atomic(state, path)
    print(f"wrote {path}: {len(docs)} documents, {offsets[-1]:,} tokens, layers {kept}")


def load_artifacts(path):
    """An artifacts file, checked: every key there, one state per token at every layer; one line otherwise."""
    a = torch_load(path)
    if not isinstance(a, dict) or not all(key in a for key in ARTIFACT_KEYS):
        die(f"{path}: not an artifacts file of train.py (it needs {', '.join(ARTIFACT_KEYS)})")
    n = len(a['token_ids'])
    for l in a['layers']:
        h = a['hidden'].get(str(l))
        if h is None or h.ndim != 2 or len(h) != n:
            die(f"{path}: layer {l} has no states of shape (tokens={n}, d)")
    return a
