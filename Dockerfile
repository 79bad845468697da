# EvoVLM demo on a Hugging Face Space (Docker SDK): the app listens on 0.0.0.0:7860 as uid 1000.
#
# CPU Space (default): the CPU build of torch. GPU Space: set the Space variable
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (Space variables reach the build as
# build arguments). See the README section "The demo app and Hugging Face Spaces".
FROM python:3.11-slim

# Fonts for Japanese in server-rendered plots; the browser uses the visitor's own fonts.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_ANALYTICS_ENABLED=False GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

# torch first, from the PyTorch index: a bare `torch` from PyPI is a multi-GB CUDA build, and
# requirements.txt pins the same version (2.13.0+cpu satisfies ==2.13.0).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --user torch==2.13.0 --index-url ${TORCH_INDEX_URL}
COPY --chown=user requirements.txt .
# Everything but Ray (the [ray] extra, 240 MB, for evolution on clusters: the demo does not use it).
RUN grep -v '^ray==' requirements.txt > /tmp/requirements-app.txt \
    && pip install --no-cache-dir --user -r /tmp/requirements-app.txt
COPY --chown=user . .
RUN pip install --no-cache-dir --user --no-deps -e .

EXPOSE 7860
# Models: the shipped evovlm/app/models.yaml (override with EVOVLM_APP_MODELS); the real 7B models
# are used when they are in the HF cache, or fetched on first use with EVOVLM_APP_DOWNLOAD=1.
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
