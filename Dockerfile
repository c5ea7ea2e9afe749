# syntax=docker/dockerfile:1
#
# messenger-sip-bridge container image.
#
# Base: the official Node.js 20 image on Debian 12 (bookworm-slim). Debian 12's
# own nodejs is 18 and the project needs Node >= 20; this image is plain
# debian:bookworm-slim plus the Node project's own Node 20 build, so the
# mediasoup worker below comes from the same Debian release that the host
# install (scripts/install.sh) targets and its library dependencies match.
#
# Build:  docker build -t messenger-sip-bridge .
# Run:    see docs/DEPLOY.md (host networking for RTP, config mounted read-only,
#         stop timeout longer than calls.drain_timeout_ms).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- deps: production node_modules only ------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /build
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: the only install script among production dependencies is
# mediasoup's, which would compile its own worker; Debian's worker is used.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- build: compile TypeScript to dist/ ------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime ---------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# mediasoup-worker from Debian's experimental suite, taken from the archive
# this image is already configured for and pinned at priority 1: the same
# source and pin as scripts/install.sh. The worker is selected by exact
# version rather than by release ("/experimental"), because selecting by
# release lets apt take any dependency that is not installed yet from
# experimental too; by version, every dependency comes from bookworm.
# The version must be the release of the npm mediasoup package (checked below).
ARG MEDIASOUP_WORKER_VERSION=3.8.4~dfsg1-1
RUN set -eu; \
    uri="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"; \
    test -n "$uri"; \
    printf 'Types: deb\nURIs: %s\nSuites: experimental\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" > /etc/apt/sources.list.d/messenger-sip-bridge-experimental.sources; \
    printf 'Package: *\nPin: release a=experimental\nPin-Priority: 1\n' \
      > /etc/apt/preferences.d/messenger-sip-bridge-experimental; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "mediasoup-worker=${MEDIASOUP_WORKER_VERSION}"; \
    rm -rf /var/lib/apt/lists/*; \
    test -x /usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker

# A fixed numeric id lets orchestrators check runAsNonRoot without a passwd
# lookup; the name matches the systemd unit's user.
RUN groupadd --system --gid 10001 messenger-sip-bridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin messenger-sip-bridge \
 && install -d -o root -g messenger-sip-bridge -m 0750 /etc/messenger-sip-bridge

WORKDIR /opt/messenger-sip-bridge
# Application files stay owned by root: the service user can read, not change them.
COPY package.json ./
COPY --from=deps /build/node_modules ./node_modules
COPY --from=build /build/dist ./dist

# The npm mediasoup package talks to its worker over a versioned protocol:
# refuse to build an image whose Debian worker is another release.
RUN set -eu; \
    npm_version="$(node -p "require('./node_modules/mediasoup/package.json').version")"; \
    deb_version="$(dpkg-query -W -f '${Version}' mediasoup-worker)"; \
    case "$deb_version" in \
      "$npm_version"~*|"$npm_version"-*|"$npm_version") ;; \
      *) echo "mediasoup-worker $deb_version does not match npm mediasoup $npm_version" >&2; exit 1 ;; \
    esac

ENV NODE_ENV=production \
    MEDIASOUP_WORKER_BIN=/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker

# 8080: Meta webhook (HTTP; terminate TLS in front). 9090: /metrics, /healthz,
# /readyz (config must set admin.listen.host to 0.0.0.0 for it to be reachable
# from outside the container). RTP and ICE use UDP port ranges from the config;
# run with host networking rather than publishing thousands of ports.
EXPOSE 8080/tcp 9090/tcp

USER 10001:10001

# The daemon drains calls on SIGTERM; give `docker stop` a matching timeout.
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/readyz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

ENTRYPOINT ["node", "/opt/messenger-sip-bridge/dist/main.js"]
CMD ["--config", "/etc/messenger-sip-bridge/config.yaml"]
