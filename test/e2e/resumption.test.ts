// Session resumption end to end: tickets from keyd's ticket keys resume on any worker with no keyd
// signature, the TLS 1.2 session-ID cache is shared by the workers, a ticket-key rotation keeps
// outstanding tickets resumable, and with keyd stopped resumed handshakes still work.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { startStack, startProxy } from '../helpers/edge.js'
import { startKeyd } from '../helpers/keyd.js'
import { visit, workersPastEpoch, type Version } from '../helpers/resume.js'

const ROTATION_SECONDS = 10
const stack = await startStack()
t.teardown(() => stack.stop())
// A keyd of our own from here, so its final `signatures` count is this test's alone.
await stack.keyd.stop()
const keyd = await startKeyd(stack.keyd.paths.home)
t.teardown(() => keyd.stop())
const ca = readFileSync(stack.caFile)
const proxy = await startProxy(stack, { workers: 2, tls: { ticketRotationSeconds: ROTATION_SECONDS, ticketPreviousKeys: 1 } })
t.teardown(() => proxy.stop())
const noTickets = await startProxy(stack, { workers: 2, tls: { sessionTickets: false }, name: 'no-tickets' })
t.teardown(() => noTickets.stop())

/** Full handshakes made by this test (each costs keyd exactly one signature). */
let full = 0
const sessions = new Map<Version, Buffer | undefined>()

async function reconnects (port: number, version: Version, n: number, opts: { noTicket?: boolean } = {}): Promise<{ resumed: number, workers: Set<number>, errors: string[] }> {
  const first = await visit(port, ca, version, undefined, opts)
  if (first.error === undefined) full++
  let session = first.session
  let resumed = 0
  const workers = new Set<number>()
  const errors: string[] = []
  for (let i = 0; i < n; i++) {
    const v = await visit(port, ca, version, session, { ...opts, findWorker: true })
    if (v.error !== undefined) errors.push(v.error)
    else if (v.reused) resumed++
    else full++
    if (v.workerPid !== undefined) workers.add(v.workerPid)
    session = v.session
  }
  if (port === proxy.port) sessions.set(version, session)
  return { resumed, workers, errors }
}

t.test('tickets resume on any worker, TLS 1.3 and 1.2', async t => {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const r = await reconnects(proxy.port, version, 30)
    t.same(r.errors, [], `${version}: no errors`)
    t.equal(r.resumed, 30, `${version}: 30 of 30 reconnects resumed`)
    t.equal(r.workers.size, 2, `${version}: served by both workers (${[...r.workers].join(', ')})`)
  }
})

t.test('TLS 1.2 session IDs (tickets off) resume across workers through the shared cache', async t => {
  const r = await reconnects(noTickets.port, 'TLSv1.2', 30, { noTicket: true })
  t.same(r.errors, [])
  t.equal(r.resumed, 30, '30 of 30 reconnects resumed by session ID')
  t.equal(r.workers.size, 2, `served by both workers (${[...r.workers].join(', ')})`)
})

t.test('a ticket-key rotation keeps outstanding tickets resumable', async t => {
  const epoch = (): number => Math.floor(Date.now() / 1000 / ROTATION_SECONDS)
  // New clients get tickets of this epoch's key; then wait for the next epoch (a new key encrypts).
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const v = await visit(proxy.port, ca, version)
    if (v.error === undefined) full++
    sessions.set(version, v.session)
  }
  // Read after the tickets were issued: their key's epoch is at most this one, whichever side of a boundary they fell.
  const before = epoch()
  await workersPastEpoch(proxy, before)
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const v = await visit(proxy.port, ca, version, sessions.get(version))
    t.equal(v.error, undefined)
    t.ok(v.reused, `${version}: a ticket of the previous key resumes after the rotation`)
    if (!v.reused) full++
    const fresh = await visit(proxy.port, ca, version)
    full++
    t.notOk(fresh.reused, `${version}: a new client gets a full handshake`)
    sessions.set(version, fresh.session)
  }
})

t.test('resumed handshakes make no keyd signature; keyd stopped: resumed still work, full ones fail fast', async t => {
  const r = await reconnects(proxy.port, 'TLSv1.3', 5)
  t.equal(r.resumed, 5)
  await keyd.stop()
  const line = keyd.lines.map(l => { try { return JSON.parse(l) as { msg?: string, signatures?: number } } catch { return {} } }).find(o => o.msg === 'keyd stopping')
  t.equal(line?.signatures, full, `keyd made ${String(line?.signatures)} signatures: one per full handshake (${full}), none for resumed ones`)
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    const v = await visit(proxy.port, ca, version, sessions.get(version))
    t.equal(v.error, undefined, `${version}: no error with keyd stopped`)
    t.ok(v.reused, `${version}: resumed with keyd stopped`)
    const f = await visit(proxy.port, ca, version)
    t.ok(f.error !== undefined, `${version}: a full handshake fails with keyd stopped (${String(f.error)})`)
    t.not(f.error, 'timeout', `${version}: the proxy ended it, not the client's own 10 s deadline`)
  }
})
