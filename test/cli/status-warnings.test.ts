// `keyedge status` names the two states an operator must act on that a healthy stack never shows: a
// sealed keyd (up, answering SEALED: exit 1 and how to unseal) and a certificate with fewer than 14
// days left (marked in the table, listed as a problem, exit 1). Real processes: a keyd initialised
// with Shamir shares and never unsealed, and a proxy serving a 2-day certificate.
import t from 'tap'
import { execFile } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempHome, CLI } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import type { StatusReport } from '../../src/cli/status.js'

t.test('a sealed keyd and a certificate about to expire: named, marked, exit 1', async t => {
  const home = tempHome('keyedge-status-warn-')
  t.teardown(() => { rmSync(home, { recursive: true, force: true }) })

  const init = await new Promise<{ code: number, out: string }>(resolve => {
    execFile(process.execPath, [CLI, 'keyd', 'init', '--shares', '3', '--threshold', '2'], { env: { ...process.env, KEYEDGE_HOME: home } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number(err.code), out: stdout + stderr })
    })
  })
  t.equal(init.code, 0, init.out)
  const keyd = spawnCli(['keyd', 'serve', '--metrics-port', '0'], { KEYEDGE_HOME: home })
  t.teardown(async () => { await keyd.stop() })
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready', 30_000)
  t.equal(ready.sealed, true, 'keyd starts sealed')

  const cert = selfSigned(home, 'soon', ['localhost']) // valid for 2 days
  const file = join(home, 'proxy.json')
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'soon', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes: [{ host: '*', upstream: 'http://127.0.0.1:9' }],
    admin: { port: 0 },
    log: { level: 'info' }
  }))
  const proxy = spawnCli(['proxy', '--config', file])
  t.teardown(async () => { await proxy.stop() })
  await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)
  const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number

  const args = ['--config', file, '--home', home, '--admin', `http://127.0.0.1:${adminPort}`,
    '--keyd-metrics', `http://127.0.0.1:${String(ready.metricsPort)}`, '--interval', '0', '--timeout', '3000']
  async function status (extra: string[] = []): Promise<{ code: number | null, out: string }> {
    const p = spawnCli(['status', ...args, ...extra])
    const { code } = await p.exited
    return { code, out: p.lines.join('\n') }
  }

  const human = await status()
  t.equal(human.code, 1, human.out)
  t.match(human.out, /^keyd .* SEALED/m, 'keyd is shown up but sealed')
  t.match(human.out, /keyd is sealed: unseal it with "npx keyedge keyd unseal"/)
  t.match(human.out, /^ {2}soon +ec +[12] ! +\d{4}-\d\d-\d\d/m, 'the certificate\'s days left are marked')
  t.match(human.out, /certificate soon \(ec\) expires in (1 day|2 days): renew it/)

  const json = await status(['--json'])
  t.equal(json.code, 1, json.out)
  const r = JSON.parse(json.out) as StatusReport
  t.equal(r.ok, false)
  t.equal(r.keyd.up, true)
  t.equal(r.keyd.sealed, true)
  t.equal(r.proxy.up, true)
  t.same(r.certificates?.map(c => c.entry), ['soon'])
  t.ok(r.certificates?.every(c => c.daysLeft >= 1 && c.daysLeft <= 2), JSON.stringify(r.certificates))
  t.ok(r.problems.some(p => p.startsWith('keyd is sealed')), 'the sealed keyd is a problem')
  t.ok(r.problems.some(p => p.startsWith('certificate soon (ec) expires in')), 'the expiring certificate is a problem')
})
