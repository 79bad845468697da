import sys
exec(open('evalmerge.py').read().split("report('base'")[0])
for lam in [1.5, 2.0, 3.0]:
    m = build(lambda k, li, b, dj, dm: b + dm + (lam*dj if li >= 4 else 0*dj))
    print('mathfull+ja_last x', lam, eval_math(m, 'ja', show=2, n=100))
