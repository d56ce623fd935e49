# Trellis: an OpenAI-compatible server on WebGPU. One image for NVIDIA GPUs (through Vulkan) and for CPUs
# (through Mesa's lavapipe, slowly). See docs/DEPLOY.md.
#
#   docker build -t trellis .
#   docker run --rm -p 8000:8000 trellis                                   # embedded 2-bit model, any machine
#   docker run --rm --gpus all -p 8000:8000 -v /srv/models:/models:ro \
#     -e TRELLIS_MODEL=/models/Llama-2-7b-QTIP-2Bit -e TRELLIS_TOKENIZER=/models/Llama-2-7b-hf trellis
#
# The base image is the only build argument; it must be the official Deno Debian image or a copy of it
# (deno at /usr/bin/deno, /tini, user deno with uid 1993, DENO_DIR=/deno-dir/).
ARG BASE_IMAGE=denoland/deno:debian-2.9.6
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="Trellis" \
  org.opencontainers.image.description="OpenAI-compatible server for QTIP-quantized Llama models on WebGPU (NVIDIA through Vulkan, or CPU through lavapipe)"

# Deno's WebGPU loads libvulkan.so.1 at run time, and the Deno images ship no Vulkan loader: without it
# requestAdapter() returns null. mesa-vulkan-drivers brings lavapipe, the CPU fallback; vulkan-tools brings
# vulkaninfo for troubleshooting. On NVIDIA the container toolkit mounts the driver's Vulkan ICD, but only when
# NVIDIA_DRIVER_CAPABILITIES includes `graphics`.
RUN apt-get update \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    libvulkan1 mesa-vulkan-drivers vulkan-tools \
  && rm -rf /var/lib/apt/lists/* \
  && install -d -m 755 /models

# The user has no home directory and the root filesystem may be read-only: shader caches go to /tmp.
ENV NVIDIA_VISIBLE_DEVICES=all \
  NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
  XDG_RUNTIME_DIR=/tmp \
  MESA_SHADER_CACHE_DIR=/tmp/mesa-shader-cache \
  __GL_SHADER_DISK_CACHE_PATH=/tmp/nv-shader-cache \
  TRELLIS_HOST=0.0.0.0 \
  TRELLIS_PORT=8000

WORKDIR /app
EXPOSE 8000

# /health answers 200 once the model is loaded. Loading a large checkpoint takes minutes, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10m --retries=3 \
  CMD ["deno", "eval", "const r = await fetch(`http://127.0.0.1:${Deno.env.get('TRELLIS_PORT') ?? '8000'}/health`).catch(() => null); Deno.exit(r?.ok ? 0 : 1);"]

# tini is PID 1 and forwards SIGTERM to deno, which drains running requests (TRELLIS_SHUTDOWN_GRACE_MS) before it
# exits; give `docker stop` a longer timeout than that grace (docker stop -t 40). Arguments after the image name
# are server flags: docker run trellis --max-running 16. Every flag also has a TRELLIS_* environment variable.
# This is `deno task serve` (deno run -A main.ts), with --cached-only so that the server never reaches the network.
# (Declared before the sources so that a source change rebuilds only the layers below.)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/tini", "--", "deno", "run", "-A", "--cached-only", "main.ts"]
CMD []

# Dependencies in their own layer: it is rebuilt only when deno.json or deno.lock change. The npm packages land
# in DENO_DIR (/deno-dir/, owned by the unprivileged user that runs the server).
USER 1993:1993
COPY deno.json deno.lock ./
RUN deno install --frozen

# The application, owned by root and read-only to the server's user. --entrypoint checks that everything main.ts
# imports resolves from the cache filled above.
COPY . .
RUN deno install --frozen --entrypoint main.ts
