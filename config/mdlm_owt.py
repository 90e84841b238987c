# MDLM's OpenWebText production run on config/mdlm.py's model: GPT-2 BPE, 500k steps on 6 GPUs, lr 3e-4 constant
# after the warm-up, validation every 10k steps. The paper's batch is 512 x 1024; 512 is not a multiple of 6
# processes, so here 12 per GPU x 7 micro-steps x 6 GPUs = 504 sequences (1.6% fewer tokens per step).
# python prepare/openwebtext.py && torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py config/mdlm_owt.py
out_dir = 'out-owt-mdlm'
dataset = 'openwebtext'
batch_size = 12
gradient_accumulation_steps = 42  # in total over the processes: 6 GPUs x 7
max_iters = 500000
learning_rate = 3e-4
min_lr = 3e-4                   # = learning_rate: constant after the warm-up (the cosine between equal ends)
eval_interval = 10000
eval_iters = 20                 # 20 x 504 x 1024 = 10.3M val tokens per evaluation
log_interval = 100
