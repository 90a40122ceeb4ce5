// The TLS front of a real proxy (keyd, 1 worker) beside OpenSSL's own server (openssl s_server):
// client renegotiation refused the same way, a fresh ticket after every TLS 1.3 resumption, strict
// SNI's alert byte for byte, the ClientHello and handshake timeouts, and the per-client limits.
import t from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Agent, request as httpsRequest } from 'node:https'
import { readFileSync } from 'node:fs'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { admin } from '../helpers/rotation.js'
import { captureFirstFlight, describe, exchange, firstHandshakeMessage, frame } from '../helpers/hello-forge.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const ca = readFileSync(stack.caFile)
const proxy = await startProxy(stack, {
  admin: {},
  tls: { strictSni: true },
  extra: { timeouts: { clientHelloMs: 1000, handshakeMs: 2000 } }
})
t.teardown(() => proxy.stop())

// OpenSSL alone, for comparison: s_server with a certificate of its own (made now), defaults otherwise.
const dir = stack.keyd.paths.home
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ref.key'),
  '-out', join(dir, 'ref.crt'), '-subj', '/CN=localhost', '-days', '1'], { stdio: 'ignore' })
async function sServer (args: string[]): Promise<{ port: number, proc: ChildProcess }> {
  const proc = spawn('openssl', ['s_server', '-accept', '127.0.0.1:0', '-cert', join(dir, 'ref.crt'), '-key', join(dir, 'ref.key'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => { proc.kill() })
  let out = ''
  for await (const chunk of proc.stdout) {
    out += String(chunk)
    const m = /ACCEPT 127\.0\.0\.1:(\d+)/.exec(out)
    if (m !== null) return { port: Number(m[1]), proc }
  }
  throw new Error(`s_server did not start: ${out}`)
}

/** Runs `openssl s_client` with `-msg`, writing each of `inputs` once the output matches its pattern; ends within 10 s. */
async function sClientScript (port: number, args: string[], inputs: Array<[RegExp, string]>, until: RegExp): Promise<string> {
  const c = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-msg', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  const timer = setTimeout(() => c.kill(), 10_000)
  await new Promise<void>(resolve => {
    const onData = (chunk: Buffer): void => {
      out += String(chunk)
      for (let next = inputs[0]; next !== undefined && next[0].test(out); next = inputs[0]) { inputs.shift(); c.stdin.write(next[1]) }
      if (until.test(out)) { c.stdin.end(); resolve() }
    }
    c.stdout.on('data', onData)
    c.stderr.on('data', onData)
    c.on('exit', () => resolve())
  })
  await once(c, 'exit').catch(() => {})
  clearTimeout(timer)
  return out
}

const metric = async (re: RegExp): Promise<number> => Number(re.exec((await admin(proxy.adminPort as number, '/metrics')).body)?.[1] ?? 0)

t.test('client-initiated renegotiation (TLS 1.2) refused with no_renegotiation, as openssl s_server does', async t => {
  const reference = await sServer([])
  const ask = async (port: number, caFile: string[]): Promise<string> => await sClientScript(port, ['-tls1_2', '-servername', 'localhost', ...caFile],
    [[/Verify return code|Verification/, 'R\n']], /no_renegotiation|RENEGOTIATING[\s\S]*ServerHelloDone/)
  const theirs = await ask(reference.port, [])
  const mine = await ask(proxy.port, ['-CAfile', stack.caFile])
  t.match(theirs, /<<< TLS 1\.2, Alert \[length 0002\], warning no_renegotiation/, 'OpenSSL: warning alert no_renegotiation')
  t.match(mine, /RENEGOTIATING/, 'the client asked to renegotiate')
  t.match(mine, /<<< TLS 1\.2, Alert \[length 0002\], warning no_renegotiation/, 'keyedge: the same alert')
  t.notMatch(mine, /RENEGOTIATING[\s\S]*<<< TLS 1\.2, Handshake \[length [0-9a-f]+\], ServerHello/, 'and no second ServerHello')
})

t.test('a fresh NewSessionTicket after every TLS 1.3 resumption, as openssl s_server sends', async t => {
  const reference = await sServer(['-www'])
  const tickets = async (port: number, extra: string[]): Promise<{ reused: boolean, tickets: number }[]> => {
    const runs: Array<{ reused: boolean, tickets: number }> = []
    let sessIn: string | undefined
    for (let i = 0; i < 3; i++) {
      const sessOut = join(dir, `sess-${port}-${i}`)
      const out = await sClientScript(port, ['-tls1_3', '-servername', 'localhost', '-ign_eof', '-sess_out', sessOut, ...(sessIn !== undefined ? ['-sess_in', sessIn] : []), ...extra],
        [[/Verify return code|Verification/, 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n']], /\n(closed|read:errno=0)\b|DONE/)
      runs.push({ reused: /Reused, TLSv1\.3/.test(out), tickets: (out.match(/<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket/g) ?? []).length })
      sessIn = sessOut
    }
    return runs
  }
  const theirs = await tickets(reference.port, [])
  const mine = await tickets(proxy.port, ['-CAfile', stack.caFile])
  t.same(theirs.map(r => r.reused), [false, true, true], 'OpenSSL: full, then resumed twice (each time with the ticket just received)')
  t.ok(theirs.slice(1).every(r => r.tickets >= 1), `OpenSSL: a ticket after each resumption (${theirs.map(r => r.tickets).join(', ')})`)
  t.same(mine.map(r => r.reused), [false, true, true], 'keyedge: full, then resumed twice with the newest ticket')
  t.ok(mine.slice(1).every(r => r.tickets >= 1), `keyedge: a ticket after each resumption (${mine.map(r => r.tickets).join(', ')})`)
})

t.test('strict SNI refuses an unknown name with the bytes OpenSSL sends (servername_fatal)', async t => {
  const reference = await sServer(['-servername', 'known.test', '-cert2', join(dir, 'ref.crt'), '-key2', join(dir, 'ref.key'), '-servername_fatal'])
  const hello = frame(firstHandshakeMessage(await captureFirstFlight({ servername: 'unknown.test' })) as Buffer, 16_384)
  const [mine, theirs] = await Promise.all([exchange(proxy.port, hello, { ms: 5000 }), exchange(reference.port, hello, { ms: 5000 })])
  t.equal(theirs.bytes.toString('hex'), '15030300020270', 'OpenSSL: fatal unrecognized_name')
  t.equal(mine.bytes.toString('hex'), theirs.bytes.toString('hex'), 'keyedge: the same bytes')
  t.equal(mine.end, theirs.end, `then the same close (${theirs.end})`)
  t.equal((await curl(['--cacert', stack.caFile, `https://localhost:${proxy.port}/`])).code, 0, 'a known name is served')
})

// The per-client limits have proxies of their own: they run beside the ClientHello timeout, which
// waits on the main proxy's clock (the handshake timeout after it: both count on the main proxy).
t.test('ClientHello timeout and per-client limits, side by side', { jobs: 3 }, async t => {
  t.test('ClientHello timeout: nothing, or bytes trickled, closed after clientHelloMs; counted', async t => {
    const before = await metric(/edge_timeouts_total\{kind="client_hello"\} (\d+)/)
    const silent = await exchange(proxy.port, Buffer.alloc(0), { ms: 6000 })
    t.equal(silent.end, 'fin', 'a silent connection is closed')
    t.ok(silent.ms >= 950 && silent.ms < 4000, `after ${silent.ms} ms (clientHelloMs 1000)`)
    const hello = frame(firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer, 16_384)
    const trickle = netConnect({ host: '127.0.0.1', port: proxy.port })
    await once(trickle, 'connect')
    const t0 = Date.now()
    let sent = 0
    const timer = setInterval(() => { trickle.write(hello.subarray(sent, sent + 1)); sent++ }, 100)
    trickle.on('error', () => {})
    await once(trickle, 'close')
    clearInterval(timer)
    const ms = Date.now() - t0
    t.ok(ms >= 950 && ms < 4000, `a ClientHello trickled a byte every 100 ms is cut after ${ms} ms`)
    t.equal(await metric(/edge_timeouts_total\{kind="client_hello"\} (\d+)/) - before, 2, 'edge_timeouts_total{kind="client_hello"} counts both')
  })

  t.test('per-client connection cap: the connection over the limit is closed at accept; counted', async t => {
    const capped = await startProxy(stack, { name: 'capped', admin: {}, extra: { limits: { maxConnectionsPerClient: 3 } } })
    t.teardown(() => capped.stop())
    const open: Array<{ destroy: () => void }> = []
    for (let i = 0; i < 3; i++) t.ok(await handshake(capped.port, open), `connection ${i + 1} of 3 served`)
    t.notOk(await handshake(capped.port), 'a fourth from the same address is refused')
    open.pop()?.destroy()
    t.ok(await servedWithin(capped.port, 3000, open), 'once one closed, a new one is served')
    for (const s of open) s.destroy()
    const body = (await admin(capped.adminPort as number, '/metrics')).body
    t.match(body, /edge_connections_refused_total\{limit="connections_per_client"\} [1-9]/)
  })

  t.test('per-client new-connection rate: a token bucket (burst 3, 2 per second)', async t => {
    const limited = await startProxy(stack, { name: 'rated', admin: {}, extra: { limits: { newConnectionsPerSecondPerClient: 2, newConnectionBurstPerClient: 3 } } })
    t.teardown(() => limited.stop())
    const results: boolean[] = []
    for (let i = 0; i < 4; i++) results.push(await handshake(limited.port))
    t.same(results.slice(0, 3), [true, true, true], 'the burst is served')
    t.equal(results[3], false, 'the next one at once is refused')
    const t0 = Date.now()
    t.ok(await servedWithin(limited.port, 3000), 'a token comes back')
    t.ok(Date.now() - t0 >= 250, `not before it is earned (${Date.now() - t0} ms; one token per 500 ms)`)
    const body = (await admin(limited.adminPort as number, '/metrics')).body
    t.match(body, /edge_connections_refused_total\{limit="new_connections_per_client"\} [1-9]/)
  })
})

t.test('handshake timeout: a ClientHello then nothing, closed handshakeMs after accept; counted by reason', async t => {
  const failuresBefore = await metric(/edge_tls_handshake_failures_total\{reason="timeout"\} (\d+)/)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.equal((await getOn(agent)).reused, false, 'a keep-alive connection, handshake done')
  const hello = frame(firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer, 16_384)
  const a = await exchange(proxy.port, hello, { ms: 8000 })
  t.ok(describe(a.bytes).includes('handshake:2'), 'the server answered the hello (ServerHello …)')
  t.equal(a.end, 'fin')
  t.ok(a.ms >= 1950 && a.ms < 5000, `then closed after ${a.ms} ms (handshakeMs 2000)`)
  t.ok(await metric(/edge_timeouts_total\{kind="handshake"\} (\d+)/) >= 1, 'edge_timeouts_total{kind="handshake"}')
  t.equal(await metric(/edge_tls_handshake_failures_total\{reason="timeout"\} (\d+)/) - failuresBefore, 1, 'edge_tls_handshake_failures_total{reason="timeout"}, once')
  const r = await curl(['--cacert', stack.caFile, '-w', '%{http_code}', '-o', '/dev/null', `https://localhost:${proxy.port}/`])
  t.equal(r.stdout, '200', 'a normal client is served meanwhile and after')
  const again = await getOn(agent)
  t.same(again, { status: 200, reused: true }, 'the keep-alive connection made before outlived handshakeMs: the timer ends at Finished')
})

/** One GET through `agent`: its status and whether it reused a connection. */
async function getOn (agent: Agent): Promise<{ status: number, reused: boolean }> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: proxy.port, servername: 'localhost', path: '/', headers: { host: 'localhost' }, ca, agent }, res => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** A TLS handshake from 127.0.0.1: whether it completed. The socket is kept open in `keep`, else closed. */
async function handshake (port: number, keep?: Array<{ destroy: () => void }>): Promise<boolean> {
  const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca })
  s.on('error', () => {})
  return await new Promise(resolve => {
    s.once('secureConnect', () => {
      if (keep !== undefined) keep.push(s)
      else s.destroy()
      resolve(true)
    })
    s.once('close', () => resolve(false))
  })
}

/** Tries a handshake every 50 ms until one completes or `ms` pass. */
async function servedWithin (port: number, ms: number, keep?: Array<{ destroy: () => void }>): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise(resolve => setTimeout(resolve, 50))) {
    if (await handshake(port, keep)) return true
  }
  return false
}
