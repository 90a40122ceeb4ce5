// The young-generation flag proxy workers start with (src/proxy/worker-heap.ts): on a real
// worker's command line by default, and left out when the operator sets a semi-space size.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { workerHeapArgv, WORKER_SEMI_SPACE_MB } from '../../src/proxy/worker-heap.js'
import { countingUpstream, startFront } from '../helpers/http-front.js'

const FLAG = `--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`

t.test('the flag unless the command line or NODE_OPTIONS sets a semi-space size', async t => {
  t.same(workerHeapArgv([], ''), [FLAG])
  t.same(workerHeapArgv(['--enable-source-maps'], '--no-warnings'), [FLAG])
  t.same(workerHeapArgv(['--max-semi-space-size=8'], ''), [])
  t.same(workerHeapArgv(['--max_semi_space_size', '8'], ''), [])
  t.same(workerHeapArgv([], '--no-warnings --max-semi-space-size=1'), [])
  // A different flag that merely starts the same way is not a semi-space size.
  t.same(workerHeapArgv(['--max-semi-space-sizes=8'], ''), [FLAG])
})

// The operator's-own-flag case is checked above on the function: under tap, the spawned proxy's
// NODE_OPTIONS is rewritten by tap's process tracking, so a real worker cannot show it here.
t.test('a real worker runs with it', async t => {
  const upstream = await countingUpstream()
  t.teardown(async () => await upstream.close())
  const front = await startFront({ upstream: upstream.url })
  t.teardown(async () => await front.stop())
  const argv = readFileSync(`/proc/${front.workerPid()}/cmdline`, 'utf8').split('\0')
  t.ok(argv.includes(FLAG), 'the worker has the flag', { argv })
})
