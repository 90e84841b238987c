# Tiny CPU version of config/baseline_turkish.py (a few minutes on 2 cores); the two *_turkish_cpu.py arms are
# identical except attention (and out_dir). lr 1e-3 instead of 1e-4: a 2-layer model for a few hundred steps.
# python prepare/turkish.py && python train.py config/baseline_turkish_cpu.py
out_dir = 'out-turkish-baseline-cpu'
dataset = 'turkish_unigram'
arch = 'gpt'
attention = 'standard'
agglu_input_emb = False
pos = 'learned'
doc_mask = True
block_size = 128
n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.0
batch_size = 16
learning_rate = 1e-3
weight_decay = 0.01
beta2 = 0.99
max_iters = 400
min_lr = 1e-4
warmup_iters = 40
grad_clip = 1.0
eval_interval = 100
eval_iters = 10
log_interval = 20
seed = 1337
device = 'cpu'
dtype = 'float32'
