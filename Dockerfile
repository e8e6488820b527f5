# Herald's image: one install serving both `herald worker` and `herald gateway` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs, so a local .venv or test data never enters the image.
COPY pyproject.toml README.md ./
COPY kernel ./kernel
COPY streams ./streams
COPY adapters ./adapters
COPY schemas ./schemas
COPY gateway ./gateway
RUN pip install . && rm -rf build *.egg-info

# The examples are the default rules and templates; compose mounts ./examples over them.
COPY examples ./examples

# A home directory is needed: the embedded broker's binary is unpacked into ~/.calfkit on first use.
RUN useradd --create-home --uid 10001 herald
USER herald
ENV HERALD_DATA_DIR=/home/herald/data

EXPOSE 6066 8080
ENTRYPOINT ["herald"]
CMD ["--help"]
