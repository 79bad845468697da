"""Run 8: JA expert (output blocks only) whose instructions include numeric values
(kanji numeral -> digits, no arithmetic), so "X=N。答えはNです。" is a Japanese sentence it knows."""
from exp import *
import fmt
import argparse
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='_num'); ap.add_argument('--steps', type=int, default=800)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--prof', default='0,0,0,0,0,1,1,1')
ap.add_argument('--kind', default='kanji'); ap.add_argument('--num-share', type=float, default=0.15)
a = ap.parse_args()
K = '一二三四五六七八九'
def kanji(n):
    t, u = divmod(n, 10)
    return (K[t-1] if t > 1 else '') + ('十' if t else '') + (K[u-1] if u else '')
def pair(rng):
    if rng.random() < a.num_share:
        if a.kind == 'kanji':
            n = rng.randint(1, 99); k = kanji(n)
            return f'「{k}」は数でいくつですか？', f' {k}={n} 答えは{n}です。'
        (_, name), = rng.sample(world.NAMES, 1); _, _, item, counter = rng.choice(world.ITEMS); n = rng.randint(2, 60)
        return (f'{name}は{item}を{n}{counter}持っています。{name}は{item}を何{counter}持っていますか？', f' {name}={n} 答えは{n}です。')
    ins = world.japanese_instruction(rng); return ins.question, ' ' + fmt.ja_answer(ins)
v = [float(x) for x in a.prof.split(',')]
m = load(a.base); L = m.config.num_hidden_layers; t = time.time()
train_loop(m, qa_batches(tok, pair, random.Random(2), batch_size=32, template=PROMPT), steps=a.steps, lr=a.lr,
           profile=profile_from({'embed': v[0], 'layers': v[1:-1], 'head': v[-1]}, L), desc='ja')
print('ja trained', round(time.time()-t), 's'); save(m, a.base + '-ja' + a.tag)
