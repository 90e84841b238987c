# config/gpt_shakespeare.py at CPU size: 4 x 128, context 128 with a 32-token window, batch 16, 500 steps;
# config/atlas_shakespeare_cpu.py, named after it, adds the memory. Other corpora: as config/gpt_shakespeare.py.
out_dir = 'out-gpt-en-balanced-cpu'
dataset = 'literature_en_balanced'
arch = 'gpt'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
window = 32
pos = 'rope'
norm = 'rmsnorm'
bias = False
batch_size = 16
learning_rate = 2e-3
max_iters = 500
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
eval_interval = 100
eval_iters = 10
log_interval = 20
device = 'cpu'
