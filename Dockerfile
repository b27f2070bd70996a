# greenhttp container image. Two stages on Debian bookworm:
#   build   - `make deps-build` (the Makefile's DEBIAN_BUILD_PACKAGES: what building needs, no
#             test or benchmark tools) and `make binary` (build-binary/greenhttp alone, no tests,
#             benchmarks or examples), so the one list of packages stays the Makefile's;
#   runtime - bookworm-slim with only the shared libraries the binary links against (found by
#             deploy/runtime-packages.sh from the binary itself), run as a non-root user
#             (greenhttp, uid 10001), config in /etc/greenhttp/.
# Built and tested by CI, not only reviewed: `make image` builds this file with docker or podman
# (deploy/build-image.sh; base images made with debootstrap where no registry is reachable) and
# `make image-test` starts the image and checks /healthz, /plaintext, the user and the SIGTERM
# drain (deploy/image_test.py). By hand:
#   docker build -t greenhttp . && docker run --rm -p 8080:8080 greenhttp
#   podman build --isolation=chroot --format docker -t greenhttp .   (--format docker keeps
#                                                                      HEALTHCHECK)
# SIGTERM (docker stop, Kubernetes) drains: /readyz turns 503, in-flight requests finish,
# exit within --shutdown-timeout (30s by default; give `docker stop -t 35`).

FROM debian:bookworm AS build
WORKDIR /src
# The packages first, from the Makefile alone: a source change does not reinstall them.
COPY Makefile .
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make \
 && make deps-build \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make binary \
 && deploy/runtime-packages.sh build-binary/greenhttp > build-binary/runtime-packages.txt

FROM debian:bookworm-slim AS runtime
COPY --from=build /src/build-binary/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 greenhttp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin greenhttp
COPY --from=build /src/build-binary/greenhttp /usr/local/bin/greenhttp
COPY --from=build /src/config/greenhttp.toml /etc/greenhttp/greenhttp.toml
USER greenhttp:greenhttp
EXPOSE 8080
STOPSIGNAL SIGTERM
# bookworm-slim has no curl: ask /healthz through bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/greenhttp"]
CMD ["--config", "/etc/greenhttp/greenhttp.toml", "--listen", "0.0.0.0:8080"]
