"""The batch builder of finetune_2ph.py, shared with ft_phase2.py."""
from exp import *
def batches(rng, ja_share, full, bs=32):
    def nb(step):
        rows, labels = [], []
        for _ in range(bs):
            ja = rng.random() < ja_share
            p = world.word_problem(rng, 'ja' if ja else 'en')
            pid = tok(PROMPT.replace('{input}', p.question))['input_ids']
            ans = ' ' + (world.math_reply(p, 'en') if full else p.equation)
            aid = tok(ans, add_special_tokens=False)['input_ids'] + ([tok.eos_token_id] if full else [])
            rows.append(pid + aid); labels.append([-100]*len(pid) + aid)
        return padded_batch(rows, labels)
    return nb
