# Agglutinative (MorphBias) vs standard attention on Turkish. config/agglutinative_turkish.py and
# config/baseline_turkish.py are identical except attention (and out_dir): 6 layers, 8 heads, d 512,
# context 512, AdamW lr 1e-4, weight decay 0.01 (the original setting). Compare bits per character.
# python prepare/turkish.py && python train.py config/baseline_turkish.py
out_dir = 'out-turkish-baseline'
dataset = 'turkish_unigram'
arch = 'gpt'
attention = 'standard'
agglu_input_emb = False
pos = 'learned'               # the same positional scheme in both arms
doc_mask = True
block_size = 512
n_layer = 6
n_head = 8
n_embd = 512
dropout = 0.1
batch_size = 32
learning_rate = 1e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 20000
lr_decay_iters = 20000
min_lr = 1e-5
warmup_iters = 200
grad_clip = 1.0
eval_interval = 500
eval_iters = 50
log_interval = 50
seed = 1337
compile = True                  # torch.compile (a GPU config); --compile=False for eager
