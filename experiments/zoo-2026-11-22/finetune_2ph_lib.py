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
        w = max(map(len, rows)); pad = tok.pad_token_id
        return {'input_ids': torch.tensor([r+[pad]*(w-len(r)) for r in rows]),
                'attention_mask': torch.tensor([[1]*len(r)+[0]*(w-len(r)) for r in rows]),
                'labels': torch.tensor([r+[-100]*(w-len(r)) for r in labels])}
    return nb
