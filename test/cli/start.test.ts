// `keyedge start` (what `npm start` runs), with the readable log form a terminal gets: keyd, dev
// certificates, the demo upstream and the proxy come up and serve; keyd's ready line counts its
// keys; the hints say `npx keyedge`; Ctrl-C stops everything with exit 0.
import t from 'tap'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { spawnCli } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { curl } from '../helpers/edge.js'
import { until } from '../helpers/wait.js'
import { prettyLogLine } from '../../src/cli/pretty-log.js'

t.test('prettyLogLine: a JSON log line for a person; anything else untouched', async t => {
  const line = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), pid: 1, name: 'keyd', keyCount: 2, socket: '/x.sock', msg: 'keyd ready' })
  t.equal(prettyLogLine(line), '03:04:05.678 WARN  keyd: keyd ready  keyCount=2 socket=/x.sock')
  t.equal(prettyLogLine('keyedge: serving https://localhost:8443/'), 'keyedge: serving https://localhost:8443/')
  t.equal(prettyLogLine('{"not":"a log line"}'), '{"not":"a log line"}')
  t.equal(prettyLogLine('{broken'), '{broken')
})

t.test('keyedge start serves, with readable logs, and stops on Ctrl-C', async t => {
  const home = tempHome('keyedge-start-')
  const s = spawnCli(['start', '--home', home, '--port', '0', '--workers', '1'], { KEYEDGE_ADMIN_PORT: '0', KEYEDGE_LOG_FORMAT: 'pretty' })
  t.teardown(async () => { await s.stop('SIGKILL'); rmSync(home, { recursive: true, force: true }) })
  const listening = (): string | undefined => s.lines.find(l => / keyedge-proxy: proxy listening /.test(l))
  t.ok(await until(() => listening() !== undefined || s.proc.exitCode !== null, 60_000), `the proxy listens:\n${s.lines.join('\n')}`)
  const port = Number(/ port=(\d+)/.exec(listening() ?? '')?.[1])
  t.ok(port > 0, 'its port is in the readable line')
  t.notOk(s.lines.some(l => l.startsWith('{"level"')), 'no raw JSON log line on the terminal')
  t.ok(s.lines.some(l => / keyd: keyd ready .*keyCount=0/.test(l)), 'keyd\'s ready line counts its keys (none yet at its first start)')
  t.ok(s.lines.some(l => l.includes('renew live: npx keyedge cert renew --name localhost-ec')), 'the hint says npx keyedge')
  const r = await curl(['--cacert', join(home, 'certs', 'ca.crt'), `https://localhost:${port}/`])
  t.equal(r.code, 0, r.stderr)
  await s.stop('SIGINT')
  t.equal(s.proc.exitCode, 0, 'Ctrl-C stops everything, exit 0')
})
