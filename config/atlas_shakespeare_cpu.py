# Atlas at CPU size: config/gpt_shakespeare_cpu.py with the memory.
# python prepare/literature.py && python train.py config/gpt_shakespeare_cpu.py config/atlas_shakespeare_cpu.py
out_dir = 'out-atlas-en-balanced-cpu'
arch = 'atlas'
mem_key_dim = 8                 # phi_2 of an 8-dim key: C(10, 2) = 45 features
mem_hidden = 32
mem_muon = False                # NS_5 per token costs ~15x a step on CPU; on for the GPU configs
mem_lr = 0.01
