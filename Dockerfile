# The prediction service: `workbench serve` on an export folder, as a non-root user, with a health check.
#   workbench export runs/sst2/version_0 --engine onnx-int8 --out model     # on the host
#   docker build -t workbench-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/model:/model:ro" workbench-serve
# To copy the model in instead of mounting it, build FROM this image with `COPY --chown=10001 model /model`.
# Options go after the image name, e.g. `docker run ... workbench-serve /model --host 0.0.0.0 --max-batch-size 32`.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU wheel of torch (an unpinned torch pulls a multi-GB CUDA build). ONNX exports never load it; torch
# engines (torch, pt2, torchscript, torch-int8) and serving a run directory do.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY workbench ./workbench
RUN pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1
RUN useradd --create-home --uid 10001 workbench
USER 10001
WORKDIR /home/workbench
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["workbench", "serve"]
CMD ["/model", "--host", "0.0.0.0", "--port", "8000"]
