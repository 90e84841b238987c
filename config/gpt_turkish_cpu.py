# config/gpt_turkish.py at CPU size (a few minutes on 2 cores); lr 1e-3 instead of 1e-4: a 2-layer model for a few
# hundred steps. config/agglutinative_turkish_cpu.py changes only the attention.
out_dir = 'out-turkish-baseline-cpu'
dataset = 'turkish_unigram'
arch = 'gpt'
doc_mask = True
block_size = 128
n_layer = 2
n_head = 4
n_embd = 128
batch_size = 16
learning_rate = 1e-3
weight_decay = 0.01
beta2 = 0.99
max_iters = 400
min_lr = 1e-4
warmup_iters = 40
eval_interval = 100
eval_iters = 10
log_interval = 20
device = 'cpu'
dtype = 'float32'
