// `bench rotation`: N certificate rotations (`cert renew`: new keyd key version, new certificate,
// files swapped atomically) while autocannon drives keep-alive connections and a second load opens
// new ones; prints failed requests and whether clients saw each new certificate.
import { cpus, release } from 'node:os'
import { startStack, startProxy } from '../test/helpers/edge.js'
import { runRotationLoad, type RotationOptions, type RotationResult } from './rotation-load.js'
import { intOption, outOption, runBench, writeResultFiles, type BenchContext, type OptionValues } from './runner.js'

export const USAGE = `usage: node dist/bench/run.js rotation [options]

Certificate rotations under load: each rotation is \`keyedge cert renew\` (a new key version in keyd,
a new dev-CA certificate, files replaced by atomic renames) picked up by the proxy's file watcher.

options:
  --rotations N         rotations (default 50)
  --workers N           proxy workers (default 2)
  --connections N       autocannon keep-alive connections (default 8)
  --new-connections N   concurrent loops opening a new TLS connection per request (default 4)
  --pause-ms N          pause after each rotation is served (default 200)
  --out DIR             results directory (default bench/results)
  -h, --help            this help
`

interface Options extends RotationOptions { workers: number, out: string }

function parseOptions (values: OptionValues): Options {
  return {
    rotations: intOption('rotations', values.rotations, 50, 1, 10_000),
    workers: intOption('workers', values.workers, 2, 1, 64),
    connections: intOption('connections', values.connections, 8, 1, 1000),
    newConnections: intOption('new-connections', values['new-connections'], 4, 0, 256),
    pauseMs: intOption('pause-ms', values['pause-ms'], 200, 0, 60_000),
    rotationTimeoutMs: 10_000,
    out: outOption(values.out)
  }
}

/** The result as a markdown report. */
export function rotationReport (r: RotationResult, o: Options, at: Date): string {
  const failed = r.keepAlive.errors + r.keepAlive.timeouts + r.keepAlive.non2xx + r.newConnections.failed
  return [
    `# Certificate rotation under load — ${at.toISOString()}`,
    '',
    `Node ${process.versions.node} (OpenSSL ${process.versions.openssl}), ${cpus().length} × ${cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'CPU'}, ` +
      `${o.workers} proxy workers, ${o.connections} keep-alive connections (autocannon), ${o.newConnections} new-connection loops, ${Math.round(r.durationMs / 1000)} s.`,
    '',
    '| measure | value |',
    '| --- | ---: |',
    `| rotations (new key version + certificate, files swapped) | ${r.rotations} |`,
    `| rotations seen by a new connection | ${r.rotationsSeen} |`,
    `| file swap → served, p50 / max | ${r.swapMs.p50} ms / ${r.swapMs.max} ms |`,
    `| keep-alive requests (2xx) | ${r.keepAlive.requests} (${r.keepAlive.ok}) |`,
    `| keep-alive errors / timeouts / non-2xx / resets | ${r.keepAlive.errors} / ${r.keepAlive.timeouts} / ${r.keepAlive.non2xx} / ${r.keepAlive.resets} |`,
    `| new-connection requests (ok / failed) | ${r.newConnections.requests} (${r.newConnections.ok} / ${r.newConnections.failed}) |`,
    `| new connections after a swap served an older certificate | ${r.staleAfterSwap} |`,
    `| **failed requests** | **${failed}** |`,
    ''
  ].join('\n')
}

export async function main (argv: string[]): Promise<number> {
  return await runBench({
    name: 'rotation',
    usage: USAGE,
    options: {
      rotations: { type: 'string' },
      workers: { type: 'string' },
      connections: { type: 'string' },
      'new-connections': { type: 'string' },
      'pause-ms': { type: 'string' },
      out: { type: 'string' }
    },
    parse: parseOptions,
    run
  }, argv)
}

async function run (o: Options, ctx: BenchContext): Promise<number> {
  const { say, startedAt: at } = ctx
  say('setting up: keyd, dev certificates, demo upstream, proxy with an admin listener …')
  const stack = await startStack()
  ctx.defer(async () => { await stack.stop().catch(() => {}) })
  const proxy = await startProxy(stack, { workers: o.workers, admin: {}, name: 'bench-rotation' })
  ctx.defer(async () => { await proxy.stop().catch(() => {}) })
  const r = await runRotationLoad(stack, proxy, o, say)
  const md = rotationReport(r, o, at)
  writeResultFiles(o.out, 'rotation', at, { at: at.toISOString(), node: process.versions.node, os: release(), options: o, result: r }, md)
  process.stdout.write(md)
  const failed = r.keepAlive.errors + r.keepAlive.timeouts + r.keepAlive.non2xx + r.newConnections.failed
  return failed === 0 && r.rotationsSeen === r.rotations && r.staleAfterSwap === 0 ? 0 : 1
}
