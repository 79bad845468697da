"""Gradio demo (placeholder until the app issue lands): `python app.py`."""

import sys

if __name__ == "__main__":
    print("The EvoVLM Gradio app is not built yet; see README.md for the CLI (`evovlm merge|eval|score`).")
    sys.exit(0)
