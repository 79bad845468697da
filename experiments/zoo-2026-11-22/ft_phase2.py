"""Continue phase 2 of a two-phase MATH expert: output blocks only, English full replies."""
from exp import *
from finetune_2ph_lib import batches
src, dst, steps, lr, split = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
m = load(src); t = time.time()
train_loop(m, batches(random.Random(4), 0.0, True), steps=steps, lr=lr, profile=lambda i: 1.0 if i >= split else 0.0, desc='math-2')
print('trained', round(time.time()-t), 's'); save(m, dst)
