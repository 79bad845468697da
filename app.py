"""EvoVLM Gradio demo for Hugging Face Spaces: `python app.py [--models FILE] [--host H] [--port P]`.

A thin entry point; the app lives in evovlm/app (also started by `evovlm demo`).
"""

import os
import sys

# Set before gradio is imported anywhere: the demo never calls out.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

if __name__ == "__main__":
    from evovlm.app.cli import main

    sys.exit(main())
