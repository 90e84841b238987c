# The main job at real scale on 2 CPU cores (under 30 minutes): config/train_akkadian_cpu.py's design, wider and
# deeper, with Canon layers, no dropout and batches of 16, on a prepared ORACC corpus of ~0.5M signs (docs/akkadian.md,
# At real scale: how each choice was measured on val, its scores). 21 minutes on 2 idle cores with bfloat16.
# python prepare/akkadian.py --input=PROJECT.zip[,...] --out=data/akkadian_oracc && python train.py config/train_akkadian_oracc_cpu.py
out_dir = 'out-akkadian-oracc'
dataset = 'akkadian'
data_dir = 'data/akkadian_oracc'
arch = 'encoder'
n_layer = 4
n_embd = 192
d_ff = 768
n_head = 6
d_kv = 32
norm = 'rmsnorm'
mlp = 'geglu'
pos = 'rope'
bias = False
dropout = 0.0
canon = 3                       # a Canon layer before each block: neighbours mix from the first step
block_size = 128
doc_mask = True
mask_rate_max = 0.75            # each sequence's mask rate ~ U(0, 0.75), as Aeneas
batch_size = 16
learning_rate = 1.5e-3
min_lr = 1.5e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 5000
eval_interval = 500
log_interval = 50
device = 'cpu'
dtype = 'bfloat16'              # autocast; train.py falls back to float32 on a CPU without native bfloat16
mlm_logit_budget = 0.625        # the head runs on 62.5% of the positions: the targets (at most 75%) first
