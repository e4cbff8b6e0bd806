# syntax=docker/dockerfile:1
#
# kmproxy container image: a multi-stage build, a small Debian runtime, a
# non-root user.
#
#   docker build -t kmproxy .
#   docker run --rm -v "$PWD/kmproxy.toml:/etc/kmproxy/kmproxy.toml:ro" kmproxy          # serve
#   docker run --rm -v "$PWD/kmproxy.toml:/etc/kmproxy/kmproxy.toml:ro" kmproxy check    # validate it
#   docker run --rm kmproxy --help                                                    # any command
#   docker inspect --format '{{json .State.Health}}' CONTAINER                        # the HEALTHCHECK (kmproxy probe)
#
# Base images are pinned by tag. For reproducible builds, pin them by digest
# as well, e.g. `FROM rust:1.95-slim-bookworm@sha256:<digest> AS builder`
# (`docker buildx imagetools inspect rust:1.95-slim-bookworm` prints the
# digest); a bot such as Renovate or Dependabot can then keep the digests
# current. Builder and runtime must stay on the same Debian release
# (bookworm) so the binary's glibc matches.

# ---------------------------------------------------------------- builder
FROM rust:1.95-slim-bookworm AS builder

WORKDIR /build

# Dependency layer: build every crate in Cargo.lock against an empty
# kmproxy, so this layer is rebuilt only when Cargo.toml or Cargo.lock
# change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() { panic!("dependency-caching dummy") }' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src \
           target/release/kmproxy* \
           target/release/libkmproxy* \
           target/release/deps/kmproxy-* \
           target/release/deps/libkmproxy-* \
           target/release/.fingerprint/kmproxy-*

# The real build. config/ is needed at compile time: the demo config is
# built into the binary (include_str!). Dropping the kmproxy fingerprints
# above, and touching the sources here, make sure cargo never mistakes the
# dummy build for an up-to-date one (COPY keeps the sources' old mtimes);
# `--version` fails the build if the panicking dummy slipped through anyway.
COPY src ./src
COPY config ./config
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && ./target/release/kmproxy --version

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

# ca-certificates only: kmproxy uses rustls with the system trust roots
# (plus upstream.ca_file, if set) and needs no OpenSSL or other packages.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed, numeric non-root user, so Kubernetes' runAsNonRoot can verify it
# and mounted secret files can be granted to uid/gid 10001.
RUN groupadd --system --gid 10001 kmproxy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin kmproxy \
 && mkdir -p /etc/kmproxy

COPY --from=builder /build/target/release/kmproxy /usr/local/bin/kmproxy
# For reference only; the real config is mounted at /etc/kmproxy/kmproxy.toml.
COPY config/kmproxy.example.toml /etc/kmproxy/kmproxy.example.toml

# The config is NOT baked in: mount it (read-only) at this path, with its
# secrets as files under /run/secrets/ (`password = { file = "/run/secrets/..." }`)
# or environment variables (`{ env = "..." }`).
#
# Listen addresses: kmproxy defaults to loopback (127.0.0.1:8080 for the
# data plane, 127.0.0.1:9090 for admin). In a container, loopback is
# reachable only from inside the container's own network namespace:
#   - as a sidecar in a pod (or with compose's `network_mode: service:...`),
#     the app shares that namespace, so the data plane should stay on
#     127.0.0.1:8080;
#   - anything that must reach kmproxy from another container or the
#     kubelet's probes needs `0.0.0.0:8080` / `0.0.0.0:9090` set in the
#     mounted config (server.listen / server.admin_listen). Publishing a port
#     (`docker run -p`) does not reach a loopback listener.
ENV KMPROXY_CONFIG=/etc/kmproxy/kmproxy.toml

USER 10001:10001

# 8080: data plane (server.listen); 9090: admin (server.admin_listen).
EXPOSE 8080 9090

# Health: the image has no curl or wget, so the binary probes itself.
# `kmproxy probe` sends one GET /healthz to the admin port of the mounted
# config (server.admin_listen; 0.0.0.0 is probed on loopback, so the default
# 127.0.0.1:9090 works too: the check runs inside the container) and exits
# 0 on a 200, else 1 with the reason on stderr (`docker inspect` shows it
# under .State.Health.Log). It needs admin_listen on (not "off").
#
# Liveness (/healthz), not readiness (/readyz), on purpose: an orchestrator
# that restarts unhealthy containers (Swarm, autoheal) would otherwise
# restart a kmproxy whose API user is parked after a rejected login, and a
# fresh process (without fleet mode) no longer knows the verdict and tries
# the password again; B2C locks an account after 5 failures. For "can it
# serve yet", run `kmproxy probe --ready` (`docker exec CONTAINER kmproxy
# probe --ready`, a deploy script) or use a Kubernetes readinessProbe.
# An image run as something else (the simulator, `check`) turns the check
# off: compose's `healthcheck: {disable: true}`, `docker run --no-healthcheck`.
#
# timeout 3s > the probe's own 2s, so an answer that is slow is reported
# by the probe with its reason rather than killed by Docker.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["kmproxy", "probe"]

# Signals (kmproxy runs as PID 1 and handles them itself):
#   SIGTERM (Docker's default stop signal): stop accepting, finish in-flight
#     calls for up to server.drain_timeout (default 30s), exit 0. Docker's
#     default stop timeout is only 10s: use `docker run --stop-timeout 40`,
#     compose's stop_grace_period or the pod's terminationGracePeriodSeconds.
#   SIGHUP: re-read the config and its secrets (`docker kill -s HUP ...`).
ENTRYPOINT ["kmproxy"]
CMD ["serve"]
