# The transformer baseline on EN-FR sized for a few minutes on 2 CPU cores (one thread): 2 layers x 128, context 128;
# config/backpack_europarl_cpu.py, named after it, changes only the arch.
out_dir = 'out-europarl-transformer-cpu'
dataset = 'europarl'
arch = 'gpt'
block_size = 128
n_layer = 2
n_head = 4
n_embd = 128
batch_size = 16
learning_rate = 2e-3
max_iters = 800
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
eval_interval = 200
eval_iters = 10
log_interval = 20
device = 'cpu'
