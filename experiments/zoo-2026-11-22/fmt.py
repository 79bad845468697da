"""Run 10 formats: a language-neutral separator (one space) between the work and the sentence."""
from exp import *
def math_reply(p, lang='en'):
    return f"{p.equation} The answer is {p.answer}." if lang == 'en' else f"{p.equation} 答えは{p.answer}です。"
def ja_answer(ins):
    return ins.answer.replace('。答えは', ' 答えは', 1)
def batches(rng, ja_share, full, bs=32):
    def nb(step):
        rows, labels = [], []
        for _ in range(bs):
            ja = rng.random() < ja_share
            p = world.word_problem(rng, 'ja' if ja else 'en')
            pid = tok(PROMPT.replace('{input}', p.question))['input_ids']
            ans = ' ' + (math_reply(p, 'en') if full else p.equation + ' ')
            aid = tok(ans, add_special_tokens=False)['input_ids'] + ([tok.eos_token_id] if full else [])
            rows.append(pid + aid); labels.append([-100]*len(pid) + aid)
        return padded_batch(rows, labels)
    return nb
def eval_ja_sep(model, n=200, seed=321):
    rng = random.Random(seed); pairs = [(i.question, ja_answer(i)) for i in (world.japanese_instruction(rng) for _ in range(n))]
    outs = answers(model, [q for q, _ in pairs])
    return dict(exact=sum(o == a for (q, a), o in zip(pairs, outs))/n*100)
