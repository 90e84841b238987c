# Agglutinative attention at CPU size: config/gpt_turkish_cpu.py with the attention changed.
# python train.py config/gpt_turkish_cpu.py config/agglutinative_turkish_cpu.py
out_dir = 'out-turkish-agglutinative-cpu'
attention = 'agglutinative'
