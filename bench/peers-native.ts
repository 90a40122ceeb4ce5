// The native peers of `bench peers`, as Debian ships them: nginx and HAProxy (key in process) and
// h2o, whose neverbleed keeps the private keys in a separate process that signs over a socket.
// Each gets a config written into a private temp dir: the same two certificates (ECDSA P-256 and
// RSA-2048, chosen per client by its signature algorithms), TLS 1.2–1.3, HTTP/2 and HTTP/1.1,
// keep-alive to the upstream, idle client connections kept 10 minutes, no access log.
import { execFileSync, spawnSync } from 'node:child_process'
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import type { KeyKind } from './handshake-client.js'
import { nginxConfHead } from './nginx.js'
import { commName, processTree } from './proc-tree.js'
import { freePort, openFilesHardLimit, pinTree, spawnServer, stopTree, waitReady, type Instance, type InstanceShape, type PeerId } from './peers-process.js'

export interface NativeSetup {
  /** A private directory for configs, pid files and logs (removed by the caller). */
  dir: string
  ec: { cert: string, key: string }
  rsa: { cert: string, key: string }
  upstreamPort: number
  serverCpus: string | null
}

export interface NativePeer {
  id: Extract<PeerId, 'nginx' | 'haproxy' | 'h2o'>
  binary: string
  /** What to run when the binary is missing. */
  install: string
  /** Version line(s), with the OpenSSL it runs on. */
  version: () => string
  start: (setup: NativeSetup, shape: InstanceShape) => Promise<Instance>
}

/** Whether `binary` is an executable file in a directory of PATH (or `binary` is such a path). */
export function haveBinary (binary: string): boolean {
  const dirs = binary.includes('/') ? [''] : (process.env.PATH ?? '').split(delimiter).filter(d => d !== '')
  return dirs.some(d => {
    try { accessSync(d === '' ? binary : join(d, binary), constants.X_OK); return true } catch { return false }
  })
}

const asRoot = process.getuid?.() === 0
/** Connections a server may hold: 4,000 idle clients plus upstream connections fit, within the open-files limit. */
const maxConnections = (): number => Math.max(1024, Math.min(9000, Math.floor((openFilesHardLimit() - 200) / 2)))

function instanceDir (setup: NativeSetup, name: string): string {
  const d = join(setup.dir, name)
  mkdirSync(d, { recursive: true, mode: 0o700 })
  return d
}

const tag = (s: InstanceShape): string => `w${s.workers}-${s.resumption ? 'resume' : 'full'}`

export const NGINX: NativePeer = {
  id: 'nginx',
  binary: 'nginx',
  install: 'apt-get install -y nginx',
  version: () => {
    const r = spawnSync('nginx', ['-V'], { encoding: 'utf8' }) // nginx -V writes to stderr
    const v = `${r.stderr}${r.stdout}`
    return `nginx ${/nginx\/(\S+)/.exec(v)?.[1] ?? '?'} (${/running with (OpenSSL [\d.]+)/.exec(v)?.[1] ?? /built with (OpenSSL [\d.]+)/.exec(v)?.[1] ?? 'OpenSSL ?'})`
  },
  async start (setup, shape) {
    const dir = instanceDir(setup, `nginx-${tag(shape)}`)
    const port = await freePort()
    const conf = join(dir, 'nginx.conf')
    writeFileSync(conf, `${nginxConfHead(dir, { workers: shape.workers, workerConnections: maxConnections(), rlimitNofile: maxConnections() * 2 + 100 })}  keepalive_timeout 600s;
  keepalive_requests 10000000;
  ssl_protocols TLSv1.2 TLSv1.3;
  ${shape.resumption ? 'ssl_session_tickets on;\n  ssl_session_cache shared:SSL:10m;' : 'ssl_session_tickets off;\n  ssl_session_cache off;'}
  upstream up {
    server 127.0.0.1:${setup.upstreamPort};
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:${port} ssl http2;
    server_name localhost;
    ssl_certificate ${setup.ec.cert};
    ssl_certificate_key ${setup.ec.key};
    ssl_certificate ${setup.rsa.cert};
    ssl_certificate_key ${setup.rsa.key};
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # stream large bodies through memory buffers, never through a temp file
      proxy_max_temp_file_size 0;
    }
  }
}
`)
    const sp = spawnServer('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], setup.serverCpus)
    const workers = (): number[] => processTree(sp.pid).slice(1)
    try {
      await waitReady(sp, [port], 'nginx', () => workers().length >= shape.workers)
    } catch (err) { await stopTree(sp); throw err }
    pinTree(sp.pid, setup.serverCpus)
    return { peer: 'nginx', ...shape, http2: true, port: () => port, pids: () => processTree(sp.pid), keyPids: () => [], workerPids: workers, stop: async () => await stopTree(sp) }
  }
}

export const HAPROXY: NativePeer = {
  id: 'haproxy',
  binary: 'haproxy',
  install: 'apt-get install -y haproxy',
  version: () => {
    const v = execFileSync('haproxy', ['-vv'], { encoding: 'utf8' })
    return `HAProxy ${/version (\S+)/.exec(v)?.[1] ?? '?'} (${/Running on OpenSSL version : (OpenSSL [\d.]+)/.exec(v)?.[1] ?? 'OpenSSL ?'})`
  },
  async start (setup, shape) {
    const dir = instanceDir(setup, `haproxy-${tag(shape)}`)
    const port = await freePort()
    // HAProxy wants each certificate and its key in one PEM.
    const pem = (kind: KeyKind): string => {
      const f = join(dir, `${kind}.pem`)
      const p = kind === 'ec' ? setup.ec : setup.rsa
      writeFileSync(f, Buffer.concat([readFileSync(p.cert), readFileSync(p.key)]), { mode: 0o600 })
      return f
    }
    const conf = join(dir, 'haproxy.cfg')
    writeFileSync(conf, `global
  nbthread ${shape.workers}
  maxconn ${maxConnections()}
${shape.resumption ? '' : '  tune.ssl.cachesize 0\n'}
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 60s
  timeout http-request 60s
  timeout http-keep-alive 600s

frontend fe
  bind 127.0.0.1:${port} ssl crt ${pem('ec')} crt ${pem('rsa')} alpn h2,http/1.1 ssl-min-ver TLSv1.2${shape.resumption ? '' : ' no-tls-tickets'}
  default_backend up

backend up
  server up 127.0.0.1:${setup.upstreamPort}
`)
    const sp = spawnServer('haproxy', ['-f', conf, '-db'], setup.serverCpus)
    try {
      await waitReady(sp, [port], 'haproxy')
    } catch (err) { await stopTree(sp); throw err }
    pinTree(sp.pid, setup.serverCpus)
    return { peer: 'haproxy', ...shape, http2: true, port: () => port, pids: () => processTree(sp.pid), keyPids: () => [], workerPids: () => [sp.pid], stop: async () => await stopTree(sp) }
  }
}

export const H2O: NativePeer = {
  id: 'h2o',
  binary: 'h2o',
  install: 'apt-get install -y h2o',
  version: () => {
    const v = execFileSync('h2o', ['-v'], { encoding: 'utf8' })
    return `h2o ${/version (\S+)/.exec(v)?.[1] ?? '?'} (${/OpenSSL: (OpenSSL [\d.]+)/.exec(v)?.[1] ?? 'OpenSSL ?'})`
  },
  async start (setup, shape) {
    const dir = instanceDir(setup, `h2o-${tag(shape)}`)
    // h2o 2.2 holds one certificate per listener: one port per key type.
    const ports: Record<KeyKind, number> = { ec: await freePort(), rsa: await freePort() }
    const listen = (kind: KeyKind): string => {
      const p = kind === 'ec' ? setup.ec : setup.rsa
      return `listen:
  host: 127.0.0.1
  port: ${ports[kind]}
  ssl:
    certificate-file: ${p.cert}
    key-file: ${p.key}
    minimum-version: TLSv1.2
    ocsp-update-interval: 0
`
    }
    const conf = join(dir, 'h2o.conf')
    writeFileSync(conf, `${asRoot ? 'user: root\n' : ''}num-threads: ${shape.workers}
max-connections: ${maxConnections()}
http1-request-timeout: 600
http2-idle-timeout: 600
error-log: ${dir}/error.log
pid-file: ${dir}/h2o.pid
ssl-session-resumption:
  mode: ${shape.resumption ? 'all' : 'off'}
${listen('ec')}${listen('rsa')}hosts:
  "localhost":
    paths:
      "/":
        proxy.reverse.url: http://127.0.0.1:${setup.upstreamPort}/
`)
    const sp = spawnServer('h2o', ['-c', conf], setup.serverCpus)
    // neverbleed is a fork of h2o (same command name); the crash-log helper is perl.
    const keyPids = (): number[] => processTree(sp.pid).slice(1).filter(p => commName(p) === 'h2o')
    try {
      await waitReady(sp, [ports.ec, ports.rsa], 'h2o', () => keyPids().length > 0)
    } catch (err) { await stopTree(sp); throw err }
    pinTree(sp.pid, setup.serverCpus)
    return { peer: 'h2o', ...shape, http2: true, port: kind => ports[kind], pids: () => processTree(sp.pid), keyPids, workerPids: () => [sp.pid], stop: async () => await stopTree(sp) }
  }
}

export const NATIVE_PEERS: NativePeer[] = [NGINX, HAPROXY, H2O]
