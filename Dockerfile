# greenhttp container image. Two stages on Debian bookworm:
#   build   - the same `make deps` and `make build` a developer runs on Debian 12, so the one
#             list of packages is the Makefile's DEBIAN_PACKAGES (not a second list here);
#   runtime - bookworm-slim with only the shared libraries build/greenhttp links against
#             (found by deploy/runtime-packages.sh from the binary itself), run as a non-root
#             user, config in /etc/greenhttp/.
# No Docker engine runs on the project's machines: this file is kept consistent with the
# Makefile by review, not by CI. Build and run elsewhere with:
#   docker build -t greenhttp . && docker run --rm -p 8080:8080 greenhttp
# SIGTERM (docker stop, Kubernetes) drains: /readyz turns 503, in-flight requests finish,
# exit within --shutdown-timeout (30s by default; give `docker stop -t 35`).

FROM debian:bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make deps && make build BUILD=build \
 && deploy/runtime-packages.sh build/greenhttp > build/runtime-packages.txt

FROM debian:bookworm-slim AS runtime
COPY --from=build /src/build/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 greenhttp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin greenhttp
COPY --from=build /src/build/greenhttp /usr/local/bin/greenhttp
COPY --from=build /src/config/greenhttp.toml /etc/greenhttp/greenhttp.toml
USER greenhttp:greenhttp
EXPOSE 8080
STOPSIGNAL SIGTERM
# bookworm-slim has no curl: ask /healthz through bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/greenhttp"]
CMD ["--config", "/etc/greenhttp/greenhttp.toml", "--listen", "0.0.0.0:8080"]
