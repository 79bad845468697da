"""The EvoVLM Gradio demo: side-by-side image QA and chat, a case-study browser, an evolution dashboard.

A thin layer over the library: models load through :mod:`evovlm.eval.runners`, prompts come from
:mod:`evovlm.eval.prompts`, results files are the ones ``evovlm eval`` writes, and recipes are read
with :mod:`evovlm.merge.recipe`. Modules:

    config.py    the model list (shipped ``models.yaml`` or an override) and availability checks
    cache.py     lazily loaded models, at most N resident, least recently used evicted
    generate.py  bounded inputs (images, questions, settings) and token-by-token streaming
    cases.py     results JSON reader: pair two files, filter, sort, search
    runs.py      the evolution tab's tables and summaries, over evovlm.evolve.rundir.RunDir
    plots.py     fitness curve, recipe heat map and DFS layer path as images
    examples.py  example images (drawn at start-up) and questions
    ui.py        the Gradio Blocks and their handlers
    cli.py       ``python app.py`` / ``evovlm demo``
"""

import os

# Before anything imports gradio: the demo must never phone home (usage analytics, version checks).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
