# Backpack (16 senses, the model default) on EN-FR: config/gpt_europarl.py with arch='backpack'.
# python prepare/europarl.py && python train.py config/gpt_europarl.py config/backpack_europarl.py
out_dir = 'out-europarl-backpack'
arch = 'backpack'
