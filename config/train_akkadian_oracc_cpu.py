# The main job at real scale on 2 CPU cores (under 30 minutes): config/train_akkadian_cpu.py's design, wider and
# deeper, on a prepared ORACC corpus of ~0.5M signs (docs/akkadian.md, At real scale: how it was sized, its scores).
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
dropout = 0.1
block_size = 128
doc_mask = True
mask_rate_max = 0.75            # each sequence's mask rate ~ U(0, 0.75), as Aeneas
batch_size = 32
learning_rate = 1.5e-3
min_lr = 1.5e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 1600
eval_interval = 250
log_interval = 50
device = 'cpu'
