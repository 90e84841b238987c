# The main job on 2 CPU cores (quickstart, ~5 minutes of training): a small sign-level RoPE encoder on the offline
# RINAP lines, with the same design as config/train_akkadian.py at a fraction of the size.
# python prepare/akkadian.py && python train.py config/train_akkadian_cpu.py
out_dir = 'out-akkadian'
dataset = 'akkadian'
arch = 'encoder'
n_layer = 4
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
mask_rate = 0.15
mask_replace = 0.8
mask_random = 0.1
span_mean = 0.0
batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.01
beta2 = 0.99
warmup_iters = 100
max_iters = 2400
eval_interval = 400
eval_iters = 20
log_interval = 20
device = 'cpu'
