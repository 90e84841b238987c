# The main job on 2 CPU cores (quickstart, ~7 minutes of training): config/train_akkadian.py's design at a fraction
# of the size, on the offline RINAP lines. Measured on the offline test split (docs/akkadian.md, Results): the
# per-sequence mask rate U(0, 0.75) and 2 layers for 2,000 steps beat 4 layers for 1,200 steps in about the same
# time (encoder test top-5 0.472 vs 0.309).
out_dir = 'out-akkadian'
dataset = 'akkadian'
arch = 'encoder'
n_layer = 2
n_embd = 128
d_ff = 512
n_head = 4
d_kv = 32
norm = 'rmsnorm'
mlp = 'geglu'
pos = 'rope'
bias = False
dropout = 0.1
block_size = 64
doc_mask = True
mask_rate_max = 0.75
batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 2000
eval_interval = 400
log_interval = 20
device = 'cpu'
artifact_layers = '0,1,2'       # --save_artifacts=True: every layer of this 2-layer model (0 = embedding output)
