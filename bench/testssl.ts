// `bench testssl`: testssl.sh scans keyedge (as `npm start` runs it, keys in keyd) and nginx (the
// same certificates, Mozilla-intermediate-like settings) side by side, and prints every finding
// whose severity differs. Not a speed measurement: the two scans run at the same time.
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { NGINX_MISSING } from './nginx.js'
import { intOption, listOption, outOption, resultStamp, runBench, runtimeEnv, writeResultFiles, type BenchContext, type OptionValues } from './runner.js'
import { compare, differenceTable, notableTable, testsslMarkdown, type TargetScan, type TestsslResult } from './testssl-report.js'
import { runTestssl, TESTSSL_MISSING, testsslCommand, testsslVersion } from './testssl-scan.js'
import { prepareScan, startKeyedgeScan, startNginxScan, type ScanTarget } from './testssl-servers.js'

/** testssl's check groups by the names `--checks` takes. */
const CHECKS: Record<string, string> = {
  protocols: '-p',
  ciphers: '-s',
  fs: '-f',
  preference: '-P',
  defaults: '-S',
  headers: '-h',
  vulnerabilities: '-U',
  clients: '-c'
}

export const USAGE = `usage: node dist/bench/run.js testssl [options]   (or: npm run bench -- testssl [options])

testssl.sh (Debian: apt-get install -y testssl.sh) scans keyedge and nginx side by side on
127.0.0.1: keyedge as \`npm start\` runs it (every TLS setting at its default, an ECDSA and an RSA
certificate, keys in keyd) and nginx with the same certificates and Mozilla's intermediate
settings, both proxying to the same upstream. Prints every finding whose severity differs; writes
bench/results/testssl-<date>.json and .md. Both scans run at once: about 3 minutes with every group.

options:
  --checks LIST   check groups (default all): ${Object.entries(CHECKS).map(([n, f]) => `${n} (${f})`).join(', ')}
  --timeout S     deadline of each scan in seconds; past it testssl is killed and what it found is
                  kept, marked as cut short (default 480)
  --no-nginx      scan keyedge only
  --out DIR       results directory (default bench/results)
  -h, --help      this help
`

interface Options { checks: string[], timeoutS: number, nginx: boolean, out: string }

function parse (v: OptionValues): Options {
  return {
    checks: listOption('checks', v.checks, CHECKS),
    timeoutS: intOption('timeout', v.timeout, 480, 10, 3600),
    nginx: v['no-nginx'] !== true,
    out: outOption(v.out)
  }
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say, defer } = ctx
  const cmd = testsslCommand()
  if (cmd === undefined) { say(TESTSSL_MISSING); return 1 }
  const version = testsslVersion(cmd)
  const notes: string[] = []
  say(`testssl ${version}: starting keyd, the upstream and the servers`)
  const m = await prepareScan()
  defer(m.stop)
  const targets: ScanTarget[] = []
  const keyedge = await startKeyedgeScan(m)
  defer(keyedge.stop)
  targets.push(keyedge)
  if (o.nginx) {
    const nginx = await startNginxScan(m)
    if (nginx === undefined) { say(NGINX_MISSING); notes.push(NGINX_MISSING) } else { defer(nginx.stop); targets.push(nginx) }
  }
  say(`scanning ${targets.map(t => `${t.label} on port ${t.port}`).join(' and ')} (${o.checks.join(' ')}; deadline ${o.timeoutS} s each)`)
  const scans: TargetScan[] = await Promise.all(targets.map(async t => ({
    label: t.label,
    version: t.version,
    scan: await runTestssl({ cmd, port: t.port, checks: o.checks, caFile: m.caFile, timeoutMs: o.timeoutS * 1000, dir: m.dir, name: t.label })
  })))
  for (const s of scans) {
    say(`${s.label}: ${s.scan.findings.length} findings in ${Math.round(s.scan.ms / 1000)} s${s.scan.timedOut ? ' (CUT SHORT by the deadline)' : ''}`)
    if (s.scan.findings.length === 0) say(`  testssl said: ${s.scan.stderr.trim().slice(-500)}`)
  }
  const k = scans.find(s => s.label === 'keyedge')
  const n = scans.find(s => s.label === 'nginx')
  const { severity, wording } = compare(k?.scan.findings ?? [], n?.scan.findings ?? [])
  const result: TestsslResult = {
    benchmark: 'testssl',
    startedAt: ctx.startedAt.toISOString(),
    env: runtimeEnv(),
    testssl: version,
    options: { checks: o.checks, timeoutS: o.timeoutS },
    targets: scans,
    severityDiffers: n === undefined ? [] : severity,
    wordingDiffers: n === undefined ? [] : wording,
    notes
  }
  const markdown = testsslMarkdown(result)
  const files = writeResultFiles(o.out, 'testssl', ctx.startedAt, result, markdown)
  const dated = join(o.out, `testssl-${resultStamp(ctx.startedAt)}.md`)
  writeFileSync(dated, markdown)
  process.stdout.write(n === undefined
    ? `keyedge alone (no nginx to compare with): findings at LOW or above\n\n${k === undefined ? '(no scan)' : notableTable(k.scan)}\n`
    : `Findings whose severity differs (${severity.length}):\n\n${differenceTable(severity, 60)}\n`)
  say(`\nresults: ${files.json}, ${dated}, ${files.md}`)
  // A scan cut short or with nothing to read is not a result to compare: say so in the exit code.
  return scans.some(s => s.scan.findings.length === 0 || s.scan.timedOut) ? 1 : 0
}

/** Entry point for `node dist/bench/run.js testssl`. */
export async function main (argv: string[]): Promise<number> {
  return await runBench({ name: 'testssl', usage: USAGE, options: { checks: { type: 'string' }, timeout: { type: 'string' }, 'no-nginx': { type: 'boolean' }, out: { type: 'string' } }, parse, run }, argv)
}
