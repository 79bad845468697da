"""Train only the MATH expert of a zoo build folder with the current builder (for experiments)."""
import sys, random, torch
from pathlib import Path
from evovlm.zoo import build as B, world
from evovlm.zoo.benchmarks import reserved_questions
from evovlm.zoo.train import qa_batches, train_loop
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
out = Path(sys.argv[1]); dst = Path(sys.argv[2]); seed = 0
st = B.ZooSettings(); tok = B.zoo_tokenizer()
reserved = reserved_questions("zoo-mgsm-ja") | reserved_questions("zoo-math-en")
m = B._reload(out / "base"); anchor = B._reload(out / "base")
qa = lambda make, label: qa_batches(tok, make, random.Random(f"{label}:{seed}"), batch_size=st.batch_size, template=world.PROMPT)
train_loop(m, qa(B._math_work_examples(reserved, st.math_ja_share), "math"), steps=st.math_steps, lr=st.finetune_lr,
           profile=st.inner, exit_layer=st.exit_layer, exit_weight=st.exit_weight, anchor=anchor, desc="math-1")
train_loop(m, qa(B._math_reply_examples(reserved, st.math_ja_share), "math-output"), steps=st.math_output_steps,
           lr=st.finetune_lr, profile=st.outer, desc="math-2")
B._save(m, tok, dst)
