// keyd stopped or stuck: new handshakes fail fast and the proxy stays up; keyd back: handshakes succeed again.
import t from 'tap'
import { startStack, startProxy, curl } from '../helpers/edge.js'
import { startKeyd } from '../helpers/keyd.js'

const stack = await startStack()
t.teardown(() => stack.stop())
const proxy = await startProxy(stack, { workers: 1 })
t.teardown(() => proxy.stop())
// "Fails fast" is asserted as "the proxy ended the handshake before the client gave up": a deadline
// ten times the bridge's keyd timeout (1000 ms in startProxy), rather than a tight wall-clock bound.
const CLIENT_DEADLINE_S = 10
/** curl's exit code for --max-time reached. */
const CURL_TIMED_OUT = 28
const args = (): string[] => ['--cacert', stack.caFile, '--tlsv1.3', `https://localhost:${proxy.port}/`]

t.test('keyd stuck (SIGSTOP): the handshake fails within the bridge timeout', async t => {
  t.equal((await curl(args())).code, 0)
  stack.keyd.proc.kill('SIGSTOP')
  try {
    const r = await curl(args(), CLIENT_DEADLINE_S)
    t.not(r.code, 0, 'handshake fails')
    t.not(r.code, CURL_TIMED_OUT, `the proxy ended it (bridge timeout 1000 ms), not curl's own ${CLIENT_DEADLINE_S} s deadline: ${r.stderr}`)
    t.comment(`failed after ${r.ms} ms`)
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
  const r = await curl(args(), CLIENT_DEADLINE_S)
  t.not(r.code, 0)
  t.not(r.code, CURL_TIMED_OUT, `the proxy ended it, not curl's own ${CLIENT_DEADLINE_S} s deadline: ${r.stderr}`)
  t.comment(`failed after ${r.ms} ms`)
  t.equal(proxy.proc.exitCode, null, 'proxy still running')
  t.equal(proxy.workerPids().length, 1, 'worker still running')
  const again = await startKeyd(stack.keyd.paths.home)
  t.teardown(() => again.stop())
  const ok = await curl(args())
  t.equal(ok.code, 0, `first handshake after restart: ${ok.stderr}`)
  t.match(ok.stdout, /keyedge demo upstream/)
})
