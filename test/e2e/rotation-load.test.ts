// The short version of `npm run bench -- rotation`: 5 certificate rotations under keep-alive and
// new-connection load, no failed request, and every new certificate seen by new connections.
import t from 'tap'
import { startStack, startProxy } from '../helpers/edge.js'
import { runRotationLoad } from '../../bench/rotation-load.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 2, admin: {} })
t.teardown(() => proxy.stop())

t.test('5 rotations under load: zero failed requests, each new certificate served', async t => {
  const r = await runRotationLoad(stack, proxy, { rotations: 5, connections: 4, newConnections: 2, pauseMs: 200, rotationTimeoutMs: 10_000 })
  t.comment(JSON.stringify(r))
  t.equal(r.rotationsSeen, 5, 'every rotation seen by a new connection')
  t.ok(r.keepAlive.requests > 100, `keep-alive load ran (${r.keepAlive.requests} requests)`)
  t.equal(r.keepAlive.errors + r.keepAlive.timeouts + r.keepAlive.non2xx, 0, 'no failed keep-alive request')
  t.ok(r.newConnections.ok > 10, `new-connection load ran (${r.newConnections.ok} requests)`)
  t.equal(r.newConnections.failed, 0, `no failed new connection ${r.newConnections.firstErrors.join('; ')}`)
  t.equal(r.staleAfterSwap, 0, 'no new connection got an older certificate after a swap')
})
