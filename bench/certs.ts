// `bench certs`: keyedge with many certificate entries (1k, 10k, 100k by default), beside nginx with
// the same certificates (up to --nginx-max) and, with --baseline, another keyedge build: time to
// listen, resident memory of the primary and the worker (at listen and once settled), the first
// handshake of a cold name against a warm one, and how long one changed certificate takes to be
// served. One worker each, keys in process (one shared key file: many certificates may share a
// key), the server on CPU 0 and this process (the client) on the others.
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { connect } from 'node:tls'
import { errorMessage } from '../lib/errors.js'
import { hostOf, makeManyCerts, reissue, type ManyCerts } from '../test/helpers/many-certs.js'
import { startStack } from '../test/helpers/edge.js'
import { CLI } from '../test/helpers/paths.js'
import { startKeyedgeCerts, startNginxCerts, type CertsServer, type ServerSetup } from './certs-servers.js'
import { haveBinary } from './peers-native.js'
import { pin, placement, rssKiB } from './proc-tree.js'
import { intOption, listOption, outOption, runBench, runtimeEnv, writeResultFiles, type BenchContext, type OptionValues } from './runner.js'

export const USAGE = `usage: node dist/bench/run.js certs [options]   (or: npm run bench -- certs [options])

keyedge with many certificate entries beside nginx (and another keyedge build): time to listen,
memory of the primary and the worker, the first handshake of a cold name, one changed certificate
served. One worker, one name per entry, every entry naming one shared key (~25 s per 100,000
certificates, made at start in a temp dir removed at the end unless --keep-certs).

options:
  --sizes LIST        entries per case (default 1000,10000,100000)
  --custody LIST      in-process (keys in the proxy, as nginx has them), keyd (one key reference
                      into a keyd started for the run, all entries sharing it); default in-process
  --nginx-max N       run nginx up to this many entries (default 10000; 0: never)
  --baseline DIR      also run the keyedge built in DIR (its dist/src/cli/main.js), e.g. a checkout of main
  --baseline-max N    run the baseline up to this many entries (default 10000)
  --cold N            cold names whose first handshake is timed (default 20)
  --settle S          seconds idle before the settled memory reading (default 10)
  --keep-certs DIR    make (or reuse) the certificates in DIR and keep them
  --no-pin            do not pin the server and the client to CPUs
  --out DIR           results directory (default bench/results)
  -h, --help          this help
`

type Custody = 'in-process' | 'keyd'

interface Options { sizes: number[], custody: Custody[], nginxMax: number, baseline: string | undefined, baselineMax: number, cold: number, settleS: number, keepCerts: string | undefined, pin: boolean, out: string }

function parse (v: OptionValues): Options {
  const sizes = (typeof v.sizes === 'string' ? v.sizes : '1000,10000,100000').split(',').map(s => intOption('sizes', s.trim(), 0, 1, 1_000_000))
  return {
    sizes,
    custody: listOption('custody', v.custody ?? 'in-process', { 'in-process': 'in-process', keyd: 'keyd' }),
    nginxMax: intOption('nginx-max', v['nginx-max'], 10_000, 0, 1_000_000),
    baseline: typeof v.baseline === 'string' ? resolve(v.baseline) : undefined,
    baselineMax: intOption('baseline-max', v['baseline-max'], 10_000, 0, 1_000_000),
    cold: intOption('cold', v.cold, 20, 1, 1000),
    settleS: intOption('settle', v.settle, 10, 0, 600),
    keepCerts: typeof v['keep-certs'] === 'string' ? resolve(v['keep-certs']) : undefined,
    pin: v['no-pin'] !== true,
    out: outOption(v.out)
  }
}

export interface CertsRow {
  entries: number
  server: string
  listenMs: number
  primaryMiB: number
  primarySettledMiB: number
  workerMiB: number
  workerSettledMiB: number
  /** Median TLS 1.3 handshake of a name never asked for, and of the same name right after. */
  coldMs: number
  warmMs: number
  /** Mean time of the contexts built on demand (keyedge's own histogram), ms. */
  contextBuildMs: number | null
  /** From the renewed file's rename to its certificate being served. */
  changeServedMs: number | null
  /** POST /reload with nothing changed (every file looked at): wall time. */
  fullReloadMs: number | null
  problems: string[]
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const lo = s[(s.length - 1) >> 1]
  const hi = s[s.length >> 1]
  if (lo === undefined || hi === undefined) throw new Error('median: index out of range')
  return (lo + hi) / 2
}
const mib = (kib: number): number => Math.round(kib / 102.4) / 10

/** One TLS 1.3 handshake for host `i`: its time (ms) and the serial served. */
async function handshake (port: number, i: number, ca: Buffer): Promise<{ ms: number, serial: string }> {
  const t0 = process.hrtime.bigint()
  const socket = connect({ host: '127.0.0.1', port, servername: hostOf(i), ca, minVersion: 'TLSv1.3' })
  try {
    await Promise.race([once(socket, 'secureConnect'), sleep(10_000).then(() => { throw new Error(`no handshake for ${hostOf(i)} within 10 s`) })])
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, serial: socket.getPeerCertificate().serialNumber }
  } finally {
    socket.destroy()
  }
}

/** Rewrites entry `i`'s certificate (a renewal: same key and name) by a rename, as a deploy tool would. */
function renew (certs: ManyCerts, i: number): string {
  const pem = reissue(certs, 'ec', i)
  const file = certs.certFile('ec', i)
  writeFileSync(`${file}.tmp`, pem)
  renameSync(`${file}.tmp`, file)
  return new X509Certificate(pem).serialNumber
}

async function measure (server: CertsServer, n: number, o: Options, certs: ManyCerts, ca: Buffer, say: (l: string) => void): Promise<CertsRow> {
  const problems: string[] = []
  const workerRss = (): number => server.workerPids().reduce((sum, pid) => sum + rssKiB(pid), 0)
  const primaryPid = (): number => {
    const pid = server.pids()[0]
    if (pid === undefined) throw new Error('the certs server has no primary process')
    return pid
  }
  const primaryMiB = mib(rssKiB(primaryPid()))
  const workerMiB = mib(workerRss())
  await sleep(o.settleS * 1000)
  const workerSettledMiB = mib(workerRss())
  const primarySettledMiB = mib(rssKiB(primaryPid()))
  // Cold names spread over the entries, none asked for before; each timed, then again warm.
  const cold: number[] = []
  const warm: number[] = []
  for (let k = 0; k < o.cold; k++) {
    const i = 1 + Math.floor((n - 2) * (k + 0.5) / o.cold)
    try {
      cold.push((await handshake(server.port, i, ca)).ms)
      warm.push((await handshake(server.port, i, ca)).ms)
    } catch (err) { problems.push(errorMessage(err)) }
  }
  const contextBuildMs = await server.contextBuildMs?.().catch(() => null) ?? null
  let changeServedMs: number | null = null
  const r = n - 1
  try {
    const t0 = Date.now()
    const serial = renew(certs, r)
    server.notifyChanged(r)
    for (;;) {
      // A server busy reloading may not answer within a handshake's 10 s: that counts as not yet.
      const got = await handshake(server.port, r, ca).catch(() => undefined)
      if (got?.serial === serial) { changeServedMs = Date.now() - t0; break }
      if (Date.now() - t0 > 120_000) { problems.push('the renewed certificate was not served within 120 s'); break }
      await sleep(20)
    }
  } catch (err) { problems.push(errorMessage(err)) }
  let fullReloadMs: number | null = null
  if (server.adminReload !== undefined) {
    try {
      const rep = await server.adminReload()
      fullReloadMs = rep.wallMs
      say(`    POST /reload, nothing changed: ${rep.wallMs} ms (report ${rep.durationMs} ms, ${rep.loaded} loaded, ${String(rep.unchanged)} unchanged)`)
    } catch (err) { problems.push(`POST /reload: ${errorMessage(err)}`) }
  }
  return { entries: n, server: server.label, listenMs: server.listenMs, primaryMiB, primarySettledMiB, workerMiB, workerSettledMiB, coldMs: median(cold), warmMs: median(warm), contextBuildMs, changeServedMs, fullReloadMs, problems }
}

const fmt = (v: number | null, digits = 0): string => v === null || Number.isNaN(v) ? '–' : v.toFixed(digits)

function markdown (rows: CertsRow[], env: Record<string, unknown>, o: Options): string {
  const lines = [
    '# bench certs',
    '',
    `Node ${String(env.node)} (OpenSSL ${String(env.openssl)}), ${String(env.cpus)} × ${String(env.cpuModel)}; ${String(env.placement)}. One worker, one name per entry, every entry naming one key file (a plain key in process, or a keyd key reference); cold handshakes: ${o.cold} names, TLS 1.3, medians; memory settled after ${o.settleS} s idle.`,
    '',
    '| entries | server | listening (s) | worker RSS at listen → settled (MB) | primary / master RSS at listen → settled (MB) | cold name, first handshake (ms) | warm (ms) | context build, mean (ms) | renewed file → served (ms) | POST /reload, nothing changed (ms) |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(r => `| ${r.entries.toLocaleString('en-US')} | ${r.server} | ${fmt(r.listenMs / 1000, 1)} | ${fmt(r.workerMiB)} → ${fmt(r.workerSettledMiB)} | ${fmt(r.primaryMiB)} → ${fmt(r.primarySettledMiB)} | ${fmt(r.coldMs, 1)} | ${fmt(r.warmMs, 1)} | ${fmt(r.contextBuildMs, 2)} | ${fmt(r.changeServedMs)} | ${fmt(r.fullReloadMs)} |`)
  ]
  const problems = rows.flatMap(r => r.problems.map(p => `- ${r.server}, ${r.entries} entries: ${p}`))
  if (problems.length > 0) lines.push('', 'Problems:', ...problems)
  return lines.join('\n') + '\n'
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say } = ctx
  const place = placement(o.pin)
  pin([process.pid], place.client)
  say(`placement: ${place.why}`)
  const nginx = o.nginxMax > 0 && haveBinary('nginx')
  if (o.nginxMax > 0 && !nginx) say('SKIP nginx: not installed (apt-get install -y nginx)')
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-bench-certs-'))
  ctx.defer(() => rmSync(dir, { recursive: true, force: true }))
  const max = Math.max(...o.sizes)
  const make = (certDir: string, spki?: Buffer): ManyCerts => {
    const g0 = Date.now()
    say(`certificates: ${max.toLocaleString('en-US')} in ${certDir} …`)
    const made = makeManyCerts(certDir, max, ['ec'], done => say(`  ${done.toLocaleString('en-US')}`), spki)
    say(`certificates ready in ${((Date.now() - g0) / 1000).toFixed(1)} s`)
    return made
  }
  const rows: CertsRow[] = []
  for (const custody of o.custody) {
    let keyFile: string
    let certs: ManyCerts
    let keyd: ServerSetup['keyd']
    if (custody === 'in-process') {
      certs = make(o.keepCerts ?? join(dir, 'certs'))
      keyFile = certs.keys.ec
    } else {
      // keyd with its development certificates: every entry names the ECDSA key reference, the
      // certificates are made here over the public key keyd holds for it.
      const stack = await startStack()
      ctx.defer(async () => await stack.stop())
      const leaf = stack.certs.leaves.find(l => l.keyType === 'ec-p256')
      if (leaf === undefined) throw new Error('no ECDSA development certificate in keyd')
      const { spki } = await stack.keyd.admin.getPublicKey(leaf.keyName)
      certs = make(join(dir, 'certs-keyd'), spki)
      keyFile = leaf.keyRefFile
      keyd = { socket: stack.keyd.paths.socket, secretFile: join(stack.keyd.paths.secretsDir, 'proxy.secret') }
    }
    const ca = readFileSync(certs.caFile)
    for (const n of o.sizes) {
      const setup: ServerSetup = { dir, certs, keyFile, ...(keyd !== undefined ? { keyd } : {}), n, cpus: place.server, startTimeoutMs: Math.max(60_000, n * 3) }
      const label = custody === 'keyd' ? 'this build, key in keyd' : 'this build'
      const starts: Array<[string, () => Promise<CertsServer>]> = [[`keyedge (${label})`, async () => await startKeyedgeCerts(setup, label, CLI)]]
      if (custody === 'in-process' && o.baseline !== undefined && n <= o.baselineMax) starts.push(['keyedge (baseline)', async () => await startKeyedgeCerts({ ...setup, startTimeoutMs: Math.max(120_000, n * 60) }, 'baseline', join(o.baseline as string, 'dist', 'src', 'cli', 'main.js'))])
      if (custody === 'in-process' && nginx && n <= o.nginxMax) starts.push(['nginx', async () => await startNginxCerts({ ...setup, startTimeoutMs: Math.max(120_000, n * 20) })])
      for (const [what, start] of starts) {
        say(`${n.toLocaleString('en-US')} entries · ${what}: starting …`)
        let server: CertsServer
        try {
          server = await start()
        } catch (err) {
          rows.push({ entries: n, server: what, listenMs: NaN, primaryMiB: NaN, primarySettledMiB: NaN, workerMiB: NaN, workerSettledMiB: NaN, coldMs: NaN, warmMs: NaN, contextBuildMs: null, changeServedMs: null, fullReloadMs: null, problems: [errorMessage(err).slice(0, 300)] })
          say(`  FAIL ${errorMessage(err).slice(0, 300)}`)
          continue
        }
        try {
          const row = await measure(server, n, o, certs, ca, say)
          rows.push(row)
          say(`  listening in ${(row.listenMs / 1000).toFixed(1)} s; worker ${fmt(row.workerMiB)} MB at listen, ${fmt(row.workerSettledMiB)} MB settled; primary ${fmt(row.primaryMiB)} → ${fmt(row.primarySettledMiB)} MB; cold handshake ${fmt(row.coldMs, 1)} ms (warm ${fmt(row.warmMs, 1)}, context build ${fmt(row.contextBuildMs, 2)}); renewed → served ${fmt(row.changeServedMs)} ms`)
          for (const p of row.problems) say(`  FAIL ${p}`)
        } finally {
          await server.stop()
        }
      }
    }
  }
  const env = { ...runtimeEnv(), placement: place.why, nginx: nginx ? 'yes' : 'no' }
  const md = markdown(rows, env, o)
  const files = writeResultFiles(o.out, 'certs', ctx.startedAt, { benchmark: 'certs', startedAt: ctx.startedAt.toISOString(), env, options: o, rows }, md)
  process.stdout.write(`\n${md}`)
  say(`results: ${files.json}\n         ${files.md}`)
  return rows.some(r => r.problems.length > 0) ? 1 : 0
}

export async function main (argv: string[]): Promise<number> {
  return await runBench({
    name: 'certs',
    usage: USAGE,
    options: {
      sizes: { type: 'string' },
      custody: { type: 'string' },
      'nginx-max': { type: 'string' },
      baseline: { type: 'string' },
      'baseline-max': { type: 'string' },
      cold: { type: 'string' },
      settle: { type: 'string' },
      'keep-certs': { type: 'string' },
      'no-pin': { type: 'boolean' },
      out: { type: 'string' }
    },
    parse,
    run
  }, argv)
}
