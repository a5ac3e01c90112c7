# syntax=docker/dockerfile:1
#
# switchboard in a container: STUN/TURN, the real-time hub and WebRTC signaling, one binary.
#
#   docker build -t switchboard .
#   docker run --rm --network host switchboard serve ...        # production: see docs/deploy.md
#   docker run --rm -p 8080:8080 switchboard                     # a look at /healthz and the console
#
# Production notes (docs/deploy.md has the whole story):
#
# * --network host is recommended for a TURN relay: every allocation gets its own UDP port from
#   --relay-ports (49152-65535, 16,384 ports, by default), and publishing such a range with -p is
#   slow (a NAT rule, by default a docker-proxy process, per port) and puts Docker's NAT between
#   the relay and its peers. On a bridge network, narrow --relay-ports, publish that range
#   (-p 49152-49251:49152-49251/udp) and set --external-ip to the host's public address, or the
#   relayed addresses handed to clients are the container's.
# * The process runs as uid 10001, not root. Ports below 1024 need privileges: on a bridge
#   network Docker (20.10 and later) lets any user of the container bind them, so
#   `-p 443:443 ... --https 0.0.0.0:443` works as is; with --network host they need
#   CAP_NET_BIND_SERVICE, and `--cap-add NET_BIND_SERVICE` alone does not reach a non-root
#   process (Docker sets no ambient capabilities): run with
#   `--user 0:0 --cap-drop ALL --cap-add NET_BIND_SERVICE`, or keep the ports at 1024 and above
#   (the defaults below) and redirect 443 to 8443 in the host's firewall.
# * A public node needs credentials and a real certificate, set by flags, SWITCHBOARD_*
#   environment variables or a TOML file mounted at /etc/switchboard/switchboard.toml (read when
#   it exists): --turn-realm with --turn-secret (TURN REST credentials, which GET /v1/ice-servers
#   hands out) or --turn-user; --jwt-hmac-secret (or --jwt-rsa-public-key, --jwt-ecdsa-public-key,
#   --jwks-file) for hub clients' tokens; --allow-anonymous false (the default, loopback, admits
#   only clients on the host; never true on a public node); --api-key for the server API;
#   --tls-cert and --tls-key (mounted PEM files; without them a self-signed certificate for
#   localhost is made); --user-quota and --total-quota. With TURN on and the wildcard listeners
#   below, --relay-ip (an address of the host, with --network host) or --external-ip (the public
#   address in front of it) is required: the server refuses to hand out 0.0.0.0 as a relayed
#   address. Pass secrets as SWITCHBOARD_TURN_SECRET, SWITCHBOARD_API_KEY and
#   SWITCHBOARD_JWT_HMAC_SECRET (docker run --env-file) rather than as arguments, which
#   `docker inspect` and `ps` show.
# * No HEALTHCHECK: the image has no HTTP client (no curl, no wget), and the HTTP listener's
#   address is the operator's choice. Probe GET /healthz from outside, or add one at run time
#   with bash's /dev/tcp, for the default listener:
#     --health-cmd 'bash -c "exec 3<>/dev/tcp/127.0.0.1/8080 && printf \"GET /healthz HTTP/1.0\r\n\r\n\" >&3 && head -n1 <&3 | grep -q \" 200 \""'
# * SIGTERM (docker stop) shuts down cleanly; SIGHUP (docker kill -s HUP) reloads TURN users,
#   secrets, peer policy and certificates; changed certificate files are picked up on their own.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds (BuildKit, the
# default builder); the binary is copied out of them in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard-cli \
    && install -D -m 0755 target/release/switchboard /out/switchboard

FROM debian:bookworm-slim
# ca-certificates: rediss:// (Redis over TLS) is verified against the system's trusted roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin switchboard
COPY --from=build /out/switchboard /usr/local/bin/switchboard
USER 10001:10001

# 3478 STUN/TURN over UDP and TCP, 5349 STUN/TURN over TLS, 8080 plain HTTP (behind a proxy, or
# for /healthz and /metrics), 8443 HTTPS (h2, HTTP/1.1) and HTTP/3 (QUIC, UDP). The TURN relay
# ports (--relay-ports) are not listed: see --network host above.
EXPOSE 3478/udp 3478/tcp 5349/tcp 8080/tcp 8443/tcp 8443/udp

ENTRYPOINT ["switchboard"]
# Every listener on all IPv4 addresses of the container (the built-in defaults are loopback
# only). Arguments given to `docker run IMAGE ...` replace these: start them with `serve`.
CMD ["serve", "--stun-udp", "0.0.0.0:3478", "--stun-tcp", "0.0.0.0:3478", "--stun-tls", "0.0.0.0:5349", "--http", "0.0.0.0:8080", "--https", "0.0.0.0:8443"]
