# Backpack (16 senses) on EN-FR at CPU size: config/gpt_europarl_cpu.py with arch='backpack'.
# python train.py config/gpt_europarl_cpu.py config/backpack_europarl_cpu.py
out_dir = 'out-europarl-backpack-cpu'
arch = 'backpack'
