// nginx from the distribution as the reference server of `bench abuse`: TLS on 127.0.0.1, HTTP/2,
// proxying to the same upstream as keyedge, its timeouts left at their defaults.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { childPids } from './proc-cpu.js'

export const NGINX_MISSING = 'nginx not found: install it with `apt-get install -y nginx` (Debian/Ubuntu); the nginx column is skipped'

export interface Nginx {
  version: string
  port: number
  /** The master and its workers. */
  pids: () => number[]
  stop: () => Promise<void>
}

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  server.close()
  await once(server, 'close')
  return port
}

async function accepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = connect({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/**
 * The head every bench's nginx.conf shares: user (as root), workers, pid and error log, events, and
 * the opening of `http` with the access log off and every temp path inside `dir` (created here), so
 * that nginx run by a bench touches nothing outside its own directory. The caller writes the rest of
 * the `http` block and closes it.
 */
export function nginxConfHead (dir: string, o: { workers: number, workerConnections: number, rlimitNofile?: number }): string {
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, t), { recursive: true })
  return `${process.getuid?.() === 0 ? 'user root root;\n' : ''}worker_processes ${o.workers};
${o.rlimitNofile === undefined ? '' : `worker_rlimit_nofile ${o.rlimitNofile};\n`}daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${o.workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
`
}

/** The `nginx -v` version, or undefined when nginx is not installed. */
export function nginxVersion (): string | undefined {
  const r = spawnSync('nginx', ['-v'], { encoding: 'utf8' })
  if (r.error !== undefined) return undefined
  return /nginx\/(\S+)/.exec(`${r.stderr}${r.stdout}`)?.[1] ?? 'unknown'
}

/**
 * Starts nginx with `workers` worker processes. Request and response buffering are off (keyedge
 * streams; nginx would otherwise spool bodies to disk) and client_max_body_size is unlimited, so
 * both servers stream the same bytes; every timeout keeps nginx's default.
 */
export async function startNginx (opts: { upstream: string, cert: string, key: string, workers: number }): Promise<Nginx | undefined> {
  const version = nginxVersion()
  if (version === undefined) return undefined
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-bench-nginx-'))
  const port = await freePort()
  const upstream = new URL(opts.upstream)
  const conf = `${nginxConfHead(dir, { workers: opts.workers, workerConnections: 8192, rlimitNofile: 16384 })}  upstream backend { server ${upstream.host}; keepalive 64; }
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${opts.cert};
    ssl_certificate_key ${opts.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
`
  writeFileSync(join(dir, 'nginx.conf'), conf)
  const proc: ChildProcess = spawn('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
  const deadline = Date.now() + 10_000
  while (!(await accepts(port))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
      throw new Error(`nginx did not start: ${stderr.slice(0, 500)}`)
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const master = proc.pid as number
  return {
    version,
    port,
    pids: () => [master, ...childPids(master)],
    stop: async () => {
      if (proc.exitCode === null) {
        const gone = once(proc, 'exit')
        proc.kill('SIGTERM')
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
        await gone
        clearTimeout(t)
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
