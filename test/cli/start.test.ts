// `keyedge start` (what `npm start` runs), with the readable log form a terminal gets: keyd, dev
// certificates, the demo upstream and the proxy come up and serve; keyd's ready line counts its
// keys; the summary names every endpoint (the admin URL answers, the printed token command gets a
// JWT that verifies with the served JWKS, the secret shown once); the hints say `npx keyedge`;
// Ctrl-C stops everything with exit 0.
import t, { type Test } from 'tap'
import { readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { spawnCli, type Spawned } from '../helpers/processes.js'
import { tempHome } from '../helpers/paths.js'
import { curl } from '../helpers/edge.js'
import { until } from '../helpers/wait.js'
import { prettyLogLine } from '../../src/cli/pretty-log.js'
import { summaryText } from '../../src/cli/start.js'

t.test('prettyLogLine: a JSON log line for a person; anything else untouched', async t => {
  const line = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), pid: 1, name: 'keyd', keyCount: 2, socket: '/x.sock', msg: 'keyd ready' })
  t.equal(prettyLogLine(line), '03:04:05.678 WARN  keyd: keyd ready  keyCount=2 socket=/x.sock')
  t.equal(prettyLogLine('keyedge: serving https://localhost:8443/'), 'keyedge: serving https://localhost:8443/')
  t.equal(prettyLogLine('{"not":"a log line"}'), '{"not":"a log line"}')
  t.equal(prettyLogLine('{broken'), '{broken')
})

/** Runs a shell command line as printed (bounded to 20 s); never throws. */
async function sh (line: string): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise(resolve => {
    execFile('sh', ['-c', line], { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

/** Starts `keyedge start` in `home` (every port 0, logs for a person or JSON) and waits for its summary. */
async function start (t: Test, home: string, format: 'pretty' | 'json' = 'pretty'): Promise<{ s: Spawned, summary: string[] }> {
  const s = spawnCli(['start', '--home', home, '--port', '0', '--workers', '1'], { KEYEDGE_ADMIN_PORT: '0', KEYEDGE_TOKEN_PORT: '0', KEYEDGE_KEYD_METRICS_PORT: '0', KEYEDGE_LOG_FORMAT: format })
  t.teardown(async () => { await s.stop('SIGKILL') })
  const at = (): number => s.lines.findIndex(l => format === 'pretty' ? l.startsWith('keyedge is running') : l.includes('"msg":"keyedge running"'))
  const done = (): boolean => at() >= 0 && (format === 'json' || s.lines.slice(at()).some(l => l.includes('Ctrl-C stops')))
  t.ok(await until(() => done() || s.proc.exitCode !== null, 90_000), `the summary is printed:\n${s.lines.join('\n')}`)
  return { s, summary: s.lines.slice(at(), at() + 12) }
}

const field = (summary: string[], name: string): string => summary.find(l => l.startsWith(`  ${name} `))?.trim().split(/\s+/)[1] ?? ''

t.test('keyedge start serves, with readable logs and a summary of every endpoint; a token with the printed curl command; Ctrl-C stops it', async t => {
  const home = tempHome('keyedge-start-')
  t.teardown(() => { rmSync(home, { recursive: true, force: true }) })
  const { s, summary } = await start(t, home)
  t.notOk(s.lines.some(l => l.startsWith('{"level"')), 'no raw JSON log line on the terminal')
  t.ok(s.lines.some(l => / keyd: keyd ready .*keyCount=0/.test(l)), 'keyd\'s ready line counts its keys (none yet at its first start)')
  t.ok(summary.some(l => /^ {2}renew +npx keyedge cert renew --name localhost-ec/.test(l)), 'the hint says npx keyedge')
  t.ok(summary.some(l => /^ {2}status +npx keyedge status/.test(l)), 'and points at keyedge status')
  t.notOk(s.lines.some(l => /access violation|USAGE_FORBIDDEN/.test(l)), 'granting the token key costs no refused request')

  const https = field(summary, 'https')
  t.match(https, /^https:\/\/localhost:\d+\/$/)
  const r = await curl(['--cacert', join(home, 'certs', 'ca.crt'), https])
  t.equal(r.code, 0, r.stderr)

  // The admin listener's URL works.
  const admin = field(summary, 'admin')
  t.match(admin, /^http:\/\/127\.0\.0\.1:\d+$/)
  const health = await curl([`${admin}/healthz`])
  t.equal(health.code, 0, health.stderr)
  t.equal((JSON.parse(health.stdout) as { status: string }).status, 'ok')
  const ready = await curl(['-o', '/dev/null', '-w', '%{http_code}', `${admin}/ready`])
  t.equal(ready.stdout, '200')

  // The token command, pasted as printed, gets a JWT that verifies with the served JWKS.
  const secretFile = join(home, 'token', 'dev.secret')
  t.equal(statSync(secretFile).mode & 0o777, 0o600, 'the caller secret is 0600')
  const secret = readFileSync(secretFile, 'utf8').trim()
  const command = summary.find(l => l.startsWith('    curl -s http://127.0.0.1:'))?.trim() ?? ''
  t.ok(command.includes(`Bearer ${secret}'`), 'the first run shows the secret in the command')
  t.ok(summary.some(l => l.includes('shown only this once') && l.includes(secretFile)), 'and says where it is kept')
  t.equal(s.lines.filter(l => l.includes(secret)).length, 1, 'the secret appears in one line only: the command')
  const got = await sh(command)
  t.equal(got.code, 0, got.stderr)
  const token = (JSON.parse(got.stdout) as { access_token: string }).access_token
  const jwks = summary.find(l => l.startsWith('  token '))?.match(/JWKS: (\S+)/)?.[1] ?? ''
  t.match(jwks, /^http:\/\/127\.0\.0\.1:\d+\/\.well-known\/jwks\.json$/)
  const keySet = await (await fetch(jwks)).json() as JSONWebKeySet
  // KEYEDGE_TOKEN_PORT=0: the issuer carries the port the endpoint got.
  const tokenPort = /^http:\/\/127\.0\.0\.1:(\d+)\//.exec(jwks)?.[1] ?? ''
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(keySet), { audience: 'dev', issuer: `http://localhost:${tokenPort}` })
  t.equal(protectedHeader.alg, 'ES256')
  t.equal(payload.client_id, 'dev')
  t.equal(payload.sub, 'me')

  // keyedge status finds this stack by itself.
  const st = spawnCli(['status', '--home', home, '--json', '--interval', '0'])
  const stExit = await st.exited
  t.equal(stExit.code, 0, st.lines.join('\n'))
  const report = JSON.parse(st.lines.join('\n')) as { ok: boolean, proxy: { admin: string }, keys: Array<{ name: string }> }
  t.equal(report.proxy.admin, admin)
  t.ok(report.keys.some(k => k.name === 'dev-token'), 'the token key is in keyd')

  await s.stop('SIGINT')
  t.equal(s.proc.exitCode, 0, 'Ctrl-C stops everything, exit 0')

  // A later run keeps the secret and prints a command that reads it from its file: on a terminal …
  const later = summaryText({ https: 'https://localhost:1/', admin: 'http://127.0.0.1:2', keydSocket: '/k.sock', keydMetrics: 'http://127.0.0.1:3', token: 'http://127.0.0.1:4', caFile: '/ca.crt', proxyConfig: '/p.json' }, { secretFile: '/h/token/dev.secret' }, '/h')
  t.match(later, /^ {2}a token for caller "dev" \(secret in \/h\/token\/dev\.secret\):\n {4}curl -s http:\/\/127\.0\.0\.1:4\/token -H "authorization: Bearer \$\(cat '\/h\/token\/dev\.secret'\)" /m)
  // … and in a log: one JSON line, with the URLs and that command, never the secret.
  const again = await start(t, home, 'json')
  const line = JSON.parse(again.summary[0] ?? '{}') as Record<string, string>
  t.match(line, { level: 30, name: 'keyedge-start', msg: 'keyedge running', admin: /^http:\/\/127\.0\.0\.1:\d+$/, token: /^http:\/\/127\.0\.0\.1:\d+$/, keydMetrics: /^http:\/\/127\.0\.0\.1:\d+$/, tokenSecretFile: secretFile })
  const command2 = line.tokenCurl ?? ''
  t.ok(command2.includes(`$(cat '${secretFile}')`), 'later runs read the secret from its file')
  t.notOk(again.s.lines.some(l => l.includes(secret)), 'and never print it')
  const got2 = await sh(command2)
  t.equal(got2.code, 0, got2.stderr)
  t.match((JSON.parse(got2.stdout) as { access_token: string }).access_token, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/)
  await again.s.stop('SIGINT')
  t.equal(again.s.proc.exitCode, 0)
})
