from exp import *
m = load(sys.argv[1])
print('mgsm_ja', eval_math(m, 'ja', show=3)); print('mgsm_en', eval_math(m, 'en', show=1)); print('ja', eval_ja(m, show=3))
