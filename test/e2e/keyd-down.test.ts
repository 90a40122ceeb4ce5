// keyd stopped or stuck: new handshakes fail fast and the proxy stays up; keyd back: handshakes succeed again.
import t from 'tap'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { startKeyd } from '../helpers/keyd.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 1 })
t.teardown(() => proxy.stop())
const args = (): string[] => ['--cacert', stack.caFile, '--tlsv1.3', `https://localhost:${proxy.port}/`]

t.test('keyd stuck (SIGSTOP): the handshake fails within the bridge timeout', async t => {
  t.equal((await curl(args())).code, 0)
  stack.keyd.proc.kill('SIGSTOP')
  try {
    const r = await curl(args(), 10)
    t.not(r.code, 0, 'handshake fails')
    t.ok(r.ms < 3000, `failed after ${r.ms} ms (timeout 1000 ms)`)
  } finally {
    stack.keyd.proc.kill('SIGCONT')
  }
  // The bridge's circuit breaker fails fast until its interval (250 ms after one timeout) is over.
  let r = await curl(args())
  for (const deadline = Date.now() + 5000; r.code !== 0 && Date.now() < deadline;) r = await curl(args())
  t.equal(r.code, 0, `works again once keyd resumes: ${r.stderr}`)
})

t.test('keyd stopped: handshakes fail fast, the proxy stays up; keyd restarted: the next handshake succeeds', async t => {
  await stack.keyd.stop()
  const r = await curl(args())
  t.not(r.code, 0)
  t.ok(r.ms < 3000, `failed after ${r.ms} ms`)
  t.equal(proxy.proc.exitCode, null, 'proxy still running')
  t.equal(proxy.workerPids().length, 1, 'worker still running')
  const again = await startKeyd(stack.keyd.paths.home)
  t.teardown(() => again.stop())
  const ok = await curl(args())
  t.equal(ok.code, 0, `first handshake after restart: ${ok.stderr}`)
  t.match(ok.stdout, /keyedge demo upstream/)
})
