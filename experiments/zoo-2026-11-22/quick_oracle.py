"""Early look at a zoo build's text part (before the VLM is trained): dev split of zoo-mgsm-ja."""
import sys, tempfile, torch
from pathlib import Path
torch.set_num_threads(1)
from evovlm.eval.benchmarks import load_benchmark
from evovlm.eval.evaluate import evaluate
from evovlm.eval.runners import load_runner
from evovlm.merge.engine import merge_checkpoints
from evovlm.merge.recipe import recipe_from_dict
from evovlm.zoo.report import llm_recipes, zoo_refs
zoo = Path(sys.argv[1]); bench = load_benchmark('zoo-mgsm-ja', split='dev', limit=int(sys.argv[2]) if len(sys.argv) > 2 else 200)
def show(name, path):
    r = evaluate(load_runner(path), bench, progress=False); s = r['summary']
    print(f"{name:40s} acc {s['acc']:.1f} acc_ja {s['acc_ja']:.1f} pure {s['acc_pure']:.1f} | {r['samples'][0]['response']!r}", flush=True)
show('ja', zoo / 'ja'); show('math', zoo / 'math')
with tempfile.TemporaryDirectory() as d:
    for i, (name, recipe) in enumerate(llm_recipes(zoo_refs(zoo), 6, 2).items()):
        out = Path(d) / str(i); merge_checkpoints(recipe_from_dict(recipe), out, progress=False); show(name, out)
