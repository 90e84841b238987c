# Causal GPT baseline on the same offline Wikipedia data as config/mdlm_cpu.py (same tokenizer and context):
# its checkpoint scores MDLM samples (generative perplexity: evaluate.py --gen_ppl_ckpt=out-wiki-gpt/ckpt.pt).
# python prepare/wikitext103.py && python train.py config/gpt_wikitext_cpu.py
out_dir = 'out-wiki-gpt'
dataset = 'wikitext103'
arch = 'gpt'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0
pos = 'rope'
batch_size = 16                 # x 2 micro-steps x 128 = 4,096 tokens per step, as the MDLM configs it is the baseline of
gradient_accumulation_steps = 2
max_iters = 1500
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
weight_decay = 0.1
beta2 = 0.99
grad_clip = 1.0
dtype = 'float32'
eval_interval = 250
eval_iters = 8
log_interval = 10
device = 'cpu'
