// deploy/prometheus/keyedge.rules.yml: promtool checks it and runs its unit tests
// (deploy/prometheus/tests/*.yml); every alert carries a severity, a summary and a runbook that
// exists and names it; the audit-completeness rule leaves out exactly the operations keyd never audits.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { ROOT } from '../helpers/paths.js'
import { OP_TABLE } from '../../keyd/server/dispatch.js'
import { opName } from '../../keyd/protocol/spec.js'

interface Rule { record?: string, alert?: string, expr: string, labels?: Record<string, string>, annotations?: Record<string, string> }

const rulesFile = join(ROOT, 'deploy', 'prometheus', 'keyedge.rules.yml')
const testsDir = join(ROOT, 'deploy', 'prometheus', 'tests')
const rules = (parse(readFileSync(rulesFile, 'utf8')) as { groups: Array<{ name: string, rules: Rule[] }> }).groups.flatMap(g => g.rules)
const alerts = rules.filter(r => r.alert !== undefined)

/** Runs promtool (bounded to 60 s); never throws. */
async function promtool (args: string[], cwd = ROOT): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile('promtool', args, { cwd, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      const missing = err !== null && err.code === 'ENOENT' ? 'promtool not found: apt-get install prometheus (Debian; .ci/run installs it)\n' : ''
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: `${missing}${stdout}${stderr}` })
    })
  })
}

t.test('promtool check rules accepts the rules file', async t => {
  const r = await promtool(['check', 'rules', rulesFile])
  t.equal(r.code, 0, r.out)
  t.match(r.out, new RegExp(`SUCCESS: ${rules.length} rules found`))
})

t.test('promtool test rules: the unit tests of every alert and SLI pass', async t => {
  const files = readdirSync(testsDir).filter(f => f.endsWith('.yml'))
  t.ok(files.length >= 1, 'there are unit tests')
  const r = await promtool(['test', 'rules', ...files], testsDir)
  t.equal(r.code, 0, r.out)
  t.notMatch(r.out, /FAILED/)
  // Every alert is exercised by at least one unit test.
  const tested = files.map(f => readFileSync(join(testsDir, f), 'utf8')).join('\n')
  for (const a of alerts) t.match(tested, new RegExp(`alertname: ${a.alert ?? ''}\\n`), `${a.alert ?? ''} has a unit test`)
})

t.test('every alert has a severity, a summary and a runbook that names it', async t => {
  t.ok(alerts.length >= 10)
  for (const a of alerts) {
    const name = a.alert ?? ''
    t.match(a.labels?.severity, /^(critical|warning|info)$/, `${name}: severity`)
    t.ok((a.annotations?.summary ?? '').length > 10, `${name}: summary`)
    const runbook = a.annotations?.runbook_url ?? ''
    t.match(runbook, /^docs\/runbooks\/[a-z-]+\.md$/, `${name}: runbook_url into docs/runbooks/`)
    const file = join(ROOT, runbook)
    t.ok(existsSync(file), `${name}: ${runbook} exists`)
    if (!existsSync(file)) continue
    const alertLine = readFileSync(file, 'utf8').split('\n').find(l => l.startsWith('Alert')) ?? ''
    t.match(alertLine, new RegExp(`\\b${name}\\b`), `${runbook} names ${name} on its Alert line`)
  }
  // And no runbook names an alert that does not exist.
  const names = new Set(alerts.map(a => a.alert))
  for (const f of readdirSync(join(ROOT, 'docs', 'runbooks')).filter(f => f.endsWith('.md') && f !== 'README.md')) {
    const alertLine = readFileSync(join(ROOT, 'docs', 'runbooks', f), 'utf8').split('\n').find(l => l.startsWith('Alert')) ?? ''
    t.notMatch(alertLine, /<name>/, `${f}: the Alert line is filled in`)
    for (const m of alertLine.matchAll(/`([A-Za-z]+)`/g)) t.ok(names.has(m[1]), `${f} names ${m[1] ?? ''}, an alert of the rules file`)
  }
})

t.test('audit completeness leaves out exactly the operations keyd never audits', async t => {
  const rule = rules.find(r => r.record === 'keyedge:keyd_unaudited_operations')
  const excluded = /op!~"([^"]+)"/.exec(rule?.expr ?? '')?.[1]?.split('|').sort()
  const unaudited = [...OP_TABLE.values()].filter(e => e.unaudited === true).map(e => opName(e.op)).sort()
  t.ok(unaudited.length > 0)
  t.same(excluded, unaudited)
})

t.test('the dashboard: a row per SLI, panels laid out without overlap, queries on the data source variable', async t => {
  interface GPanel { id: number, type: string, title: string, gridPos: { x: number, y: number, w: number, h: number }, datasource?: { uid: string }, targets?: Array<{ expr: string, datasource?: { uid: string } }> }
  const dash = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'keyedge.json'), 'utf8')) as { uid: string, panels: GPanel[], templating: { list: Array<{ name: string, type: string }> } }
  t.ok(dash.templating.list.some(v => v.name === 'datasource' && v.type === 'datasource'), 'a Prometheus data source variable')
  const rows = dash.panels.filter(p => p.type === 'row').map(p => p.title.toLowerCase())
  for (const sli of ['availability', 'errors by code', 'latency', 'capacity', 'audit completeness', 'rotation', 'backup', 'access violations', 'rng', 'handshakes', 'proxied requests', 'certificates']) {
    t.ok(rows.some(r => r.includes(sli)), `a row for ${sli}`)
  }
  t.equal(new Set(dash.panels.map(p => p.id)).size, dash.panels.length, 'unique panel ids')
  const cells = new Map<string, string>()
  const overlaps: string[] = []
  for (const p of dash.panels) {
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title}: within the 24 columns`)
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        const other = cells.get(`${x},${y}`)
        if (other !== undefined) overlaps.push(`${p.title} over ${other} at ${x},${y}`)
        cells.set(`${x},${y}`, p.title)
      }
    }
    if (p.type === 'row') continue
    t.ok((p.targets ?? []).length > 0, `${p.title}: has a query`)
    for (const q of p.targets ?? []) t.equal(q.datasource?.uid, '${datasource}', `${p.title}: query on the data source variable`)
  }
  t.same(overlaps, [], 'no panel overlaps another')
})
