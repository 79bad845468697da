"""``python app.py`` / ``evovlm demo``: start the Gradio demo (offline, 127.0.0.1:7860 by default).

Host and port: ``--host``/``--port``, else ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else
127.0.0.1 and the first free port from 7860. Nothing heavy is imported until ``run``; models load
on first use.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from evovlm.argtypes import count
from evovlm.errors import EvoVLMError


def _env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="FILE",
                        help="models YAML (default: $EVOVLM_APP_MODELS, else the shipped evovlm/app/models.yaml)")
    parser.add_argument("--host", help="address to bind (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=count(1, 65535),
                        help="port (default: $GRADIO_SERVER_PORT, else the first free from 7860)")
    parser.add_argument("--max-models", type=count(1), metavar="N",
                        help="models kept loaded (default: the YAML's cache.max_resident)")
    parser.add_argument("--concurrency", type=count(1), metavar="N",
                        help="generation requests run at once (default: 2 on a GPU, else cores/2, at least 1)")
    parser.add_argument("--queue-size", type=count(1), default=64,
                        help="requests waiting before new ones are turned away")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bf16/fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--runs-dir", action="append", default=[], metavar="DIR",
                        help="folder with evovlm evolve runs (repeatable; also $EVOVLM_APP_RUNS; "
                             "default: ./runs, ./out)")
    parser.add_argument("--allowed-path", action="append", default=[], metavar="DIR",
                        help="extra folder the case-study browser may show images from (repeatable)")
    parser.add_argument("--download", action="store_true", default=os.environ.get("EVOVLM_APP_DOWNLOAD") == "1",
                        help="fetch HF models missing from the local cache on first use ($EVOVLM_APP_DOWNLOAD=1)")
    parser.add_argument("--check", action="store_true", help="print the models' availability and exit")


def _has_gpu(device: str | None) -> bool:
    """Whether models will run on a GPU, without importing torch (1-2 s) at start-up."""
    if device:
        return device.startswith("cuda")
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def _default_concurrency(on_gpu: bool) -> int:
    if on_gpu:
        # Each request already runs two models; two requests keep one GPU busy without
        # multiplying beam-search memory.
        return 2
    return max(1, (os.cpu_count() or 2) // 2)  # each generation uses several cores already


def ensure_zoo() -> None:
    """Register the zoo plugin by hand when no installed metadata did: ``python app.py`` in a
    checkout that was never ``pip install``-ed (a Space built from requirements.txt alone) has no
    entry points, and the demo's default models are the zoo's."""
    from evovlm.io.resolve import known_prefixes
    from evovlm.zoo import PREFIX

    if PREFIX not in known_prefixes():
        from evovlm.zoo.plugin import register

        register()


def run(args: argparse.Namespace) -> int:
    from evovlm.app.cache import ModelCache, runner_loader, warm_imports
    from evovlm.app.config import Registry, load_config
    from evovlm.plugins import load_plugins

    load_plugins()  # the zoo's models, benchmarks and prompt template
    ensure_zoo()
    if not args.download:  # before huggingface_hub is imported: it reads this once
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = load_config(args.models)
    registry = Registry(config, allow_download=args.download)
    if args.check:
        for name, kind, ref, state, detail, _ in registry.table():
            print(f"{name:<24} {kind:<4} {state:<22} {detail}")
        return 0
    port = args.port
    if port is None and os.environ.get("GRADIO_SERVER_PORT"):
        try:
            port = int(os.environ["GRADIO_SERVER_PORT"])
        except ValueError:
            raise EvoVLMError(f"GRADIO_SERVER_PORT={os.environ['GRADIO_SERVER_PORT']!r} is not a port number") from None
    if port is not None and not 0 < port < 65536:
        raise EvoVLMError(f"the port must be between 1 and 65535, got {port}")
    if args.device or args.dtype:  # a bad --device/--dtype fails now, not on the first request
        from evovlm.eval.runners import pick_device_dtype

        pick_device_dtype(args.device, args.dtype)
    on_gpu = _has_gpu(args.device)
    concurrency = max(1, args.concurrency or _default_concurrency(on_gpu))
    max_models = args.max_models or config.max_resident
    runs_roots = [Path(p).expanduser().resolve() for p in (args.runs_dir or _env_list("EVOVLM_APP_RUNS")
                                                            or ["runs", "out"])]
    if config.showcase.runs:  # the bundled run, for a fresh Space with no runs of its own
        runs_roots.append(Path(config.showcase.runs))
    showcase_files = [Path(f).parent for pair in config.showcase.results for f in (pair.a, pair.b) if f]

    from huggingface_hub.constants import HF_HUB_CACHE

    from evovlm.app.examples import example_dir
    from evovlm.app.ui import CSS, Demo, build

    allowed = [Path.cwd().resolve(), *runs_roots, *showcase_files, Path(HF_HUB_CACHE).expanduser().resolve(),
               *(Path(p).expanduser().resolve() for p in args.allowed_path)]
    demo = Demo(config=config, registry=registry,
                cache=ModelCache(runner_loader(registry, device=args.device, dtype=args.dtype), max_models),
                runs_roots=runs_roots, allowed_roots=allowed)
    blocks = build(demo, concurrency=concurrency)
    blocks.queue(max_size=args.queue_size, default_concurrency_limit=concurrency)

    import gradio as gr

    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    available = sum(registry.status(m.name).ok for m in config.models)
    print(f"EvoVLM demo: {available}/{len(config.models)} models available ({config.source}); "
          f"{'GPU' if on_gpu else 'CPU'}, {concurrency} generation(s) at a time, "
          f"at most {max_models} models loaded", flush=True)
    theme = gr.themes.Default(font=[gr.themes.LocalFont("Source Sans Pro"), "Noto Sans CJK JP", "Noto Sans JP",
                                    "ui-sans-serif", "system-ui", "sans-serif"])
    _, local_url, _ = blocks.launch(
        server_name=host, server_port=port, share=False, quiet=True, prevent_thread_lock=True,
        max_file_size="25mb", allowed_paths=[str(example_dir()), *map(str, showcase_files)], ssr_mode=False,
        show_error=False, theme=theme, css=CSS,
    )
    print(f"Running on local URL:  {local_url}", flush=True)
    # Import transformers in the background once the server is up: start-up stays quick and the
    # first question does not wait for the import.
    threading.Thread(target=warm_imports, name="evovlm-warm-imports", daemon=True).start()
    try:
        blocks.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        blocks.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="EvoVLM Gradio demo")
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EvoVLMError as exc:
        print(f"evovlm demo: error: {exc}", file=sys.stderr)
        return 2
