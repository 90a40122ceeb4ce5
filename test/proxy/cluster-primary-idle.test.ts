// The primary does no work per connection: while a worker opens, serves and holds hundreds of
// keep-alive TLS connections, and while SIGTERM drains them, the primary's own CPU time (utime +
// stime from /proc, every thread) stays near zero. A primary seen spinning during a bench round
// (idle connections held, then SIGTERM) is what this guards against.
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, type TLSSocket } from 'node:tls'
import t from 'tap'
import { startDemoUpstream } from '../../src/proxy/demo-upstream.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { defined } from '../helpers/defined.js'
import { errorMessage } from '../../lib/errors.js'

const CONNECTIONS = 400
/** The primary's CPU allowed for all of it; it measured 10–30 ms (a spin at 40 % would take seconds). */
const PRIMARY_BUDGET_MS = 400

/** utime + stime of `pid`, every thread, in ms. */
function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** Opens one TLS connection, makes one keep-alive GET and resolves the socket once the answer began. */
async function idleConnection (port: number, ca: string): Promise<TLSSocket> {
  return await new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ALPNProtocols: ['http/1.1'] })
    s.once('secureConnect', () => s.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'))
    s.once('data', (b: Buffer) => {
      if (b.toString('latin1').startsWith('HTTP/1.1 200')) resolve(s)
      else { s.destroy(); reject(new Error(`answer: ${b.toString('latin1').slice(0, 40)}`)) }
    })
    s.once('error', reject)
  })
}

t.test('the primary spends next to no CPU while a worker holds idle connections and drains them', { skip: process.platform !== 'linux' && 'reads /proc' }, async t => {
  const home = tempHome('keyedge-primary-idle-')
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const cert = selfSigned(home, 'a', ['localhost'])
  const demo = await startDemoUpstream({ port: 0 })
  t.teardown(async () => await demo.close())
  const config = join(home, 'proxy.json')
  writeFileSync(config, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    admin: { port: 0, drainDelayMs: 0 },
    timeouts: { keepAliveIdleMs: 120_000 },
    certificates: [{ name: 'localhost', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes: [{ upstream: demo.url }]
  }))
  const proxy = spawnCli(['proxy', '--config', config, '--workers', '1'])
  const sockets: TLSSocket[] = []
  t.teardown(async () => { for (const s of sockets) s.destroy(); await proxy.stop('SIGKILL') })
  const { port } = await proxy.waitFor(o => o.msg === 'proxy listening') as { port: number }
  const primary = defined(proxy.proc.pid, 'primary pid')
  const before = cpuMs(primary)

  let started = 0
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (started < CONNECTIONS) {
      started++
      sockets.push(await idleConnection(port, cert.certPem))
    }
  }))
  t.equal(sockets.length, CONNECTIONS, 'every connection answered and held')
  const held = cpuMs(primary) - before

  // SIGTERM with every connection still open: the worker ends them, then the primary exits.
  let closed = 0
  for (const s of sockets) s.once('close', () => { closed++ })
  const drainedAt = cpuMs(primary)
  let drained = 0
  const sampler = setInterval(() => {
    try { drained = cpuMs(primary) - drainedAt } catch (err) { t.comment(`primary gone: ${errorMessage(err)}`) }
  }, 20)
  proxy.proc.kill('SIGTERM')
  const exit = await proxy.exited
  clearInterval(sampler)
  t.equal(exit.code, 0, 'the proxy stopped cleanly')
  t.equal(closed, CONNECTIONS, 'the drain closed every idle connection')
  t.comment(`primary CPU: ${held} ms while ${CONNECTIONS} connections were opened and held, ≥ ${drained} ms during the drain`)
  t.ok(held + drained < PRIMARY_BUDGET_MS, `primary CPU ${held} + ${drained} ms < ${PRIMARY_BUDGET_MS} ms`)
})
