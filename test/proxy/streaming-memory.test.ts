// Backpressure on both protocols, end to end with curl: the worker's memory stays flat while large
// bodies stream through it, uploads and downloads, HTTP/1.1 (chunked) and HTTP/2, an upload echoed
// back while it is still being sent, and a client that reads slowly.
import { execFile } from 'node:child_process'
import t from 'tap'
import { countingUpstream, rssSampler, startFront } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const MiB = 1024 * 1024
const SIZE = 200 * MiB
const WARM_UP = 20 * MiB
/**
 * Growth allowed over the worker's RSS peak while a tenth of the data went through (the warm-up):
 * memory that grows with the body grows tenfold here, and anything holding even a quarter of a
 * body fails. Before backpressure held on HTTP/1.1, a 50 MB echo grew the worker by 400 MB. What
 * remains is allocator and heap sizing noise: measured +0–8 MiB on Node 20, up to +33 on Node 24.
 */
const ALLOWED_GROWTH_MIB = 48

const upstream = await countingUpstream()
// A small young generation keeps V8's garbage from looking like growth (Node 24 sizes it larger
// than Node 20 by default); memory the proxy holds on to shows all the same.
const front = await startFront({ upstream: upstream.url, env: { NODE_OPTIONS: '--max-semi-space-size=2' } })
const dir = tempHome('keyedge-mem-')
const caFile = join(dir, 'ca.pem')
writeFileSync(caFile, front.ca)
t.teardown(async () => {
  await front.stop()
  await upstream.close()
  rmSync(dir, { recursive: true, force: true })
})

const base = ['--cacert', caFile, '--resolve', `localhost:${front.port}:127.0.0.1`]
const url = (path: string): string => `https://localhost:${front.port}${path}`

/** Runs curl through a shell, with `bytes` zero bytes piped to it when given (bounded to 90 s). */
async function transfer (args: string[], bytes?: number): Promise<{ code: number, out: string, ms: number }> {
  const quoted = args.map(a => `'${a}'`).join(' ')
  const command = bytes === undefined ? `curl -sS ${quoted}` : `head -c ${bytes} /dev/zero | curl -sS ${quoted}`
  const started = Date.now()
  return await new Promise(resolve => {
    execFile('sh', ['-c', command], { encoding: 'utf8', timeout: 90_000 }, (err, stdout) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: stdout, ms: Date.now() - started })
    })
  })
}

const worker = front.workerPid()
// Warm up both protocols and both directions with a tenth of the size: the reference peak.
const warm = rssSampler(worker)
await transfer(['--http1.1', ...base, '-T', '-', '-o', '/dev/null', url('/echo')], WARM_UP)
await transfer(['--http2', ...base, '-T', '-', '-o', '/dev/null', url('/echo')], WARM_UP)
const reference = warm.stop()

const cases: Array<{ name: string, args: string[], bytes?: number, expect: (out: string) => boolean }> = [
  { name: 'HTTP/1.1 chunked upload', args: ['--http1.1', ...base, '-T', '-', '-w', ' %{http_code}', url('/sink')], bytes: SIZE, expect: out => out === `${SIZE} 200` },
  { name: 'HTTP/2 upload', args: ['--http2', ...base, '-T', '-', '-w', ' %{http_code}', url('/sink')], bytes: SIZE, expect: out => out === `${SIZE} 200` },
  { name: 'HTTP/1.1 download', args: ['--http1.1', ...base, '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url(`/bytes?n=${SIZE}`)], expect: out => out === `${SIZE} 200` },
  { name: 'HTTP/2 download', args: ['--http2', ...base, '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url(`/bytes?n=${SIZE}`)], expect: out => out === `${SIZE} 200` },
  { name: 'HTTP/1.1 chunked upload echoed back', args: ['--http1.1', ...base, '-T', '-', '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url('/echo')], bytes: SIZE / 2, expect: out => out === `${SIZE / 2} 200` },
  { name: 'HTTP/2 upload echoed back', args: ['--http2', ...base, '-T', '-', '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url('/echo')], bytes: SIZE / 2, expect: out => out === `${SIZE / 2} 200` },
  { name: 'HTTP/1.1 download to a slow reader (16 MB/s)', args: ['--http1.1', ...base, '--limit-rate', '16M', '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url(`/bytes?n=${32 * MiB}`)], expect: out => out === `${32 * MiB} 200` },
  { name: 'HTTP/2 download to a slow reader (16 MB/s)', args: ['--http2', ...base, '--limit-rate', '16M', '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url(`/bytes?n=${32 * MiB}`)], expect: out => out === `${32 * MiB} 200` }
]

for (const c of cases) {
  t.test(c.name, async t => {
    const sampler = rssSampler(worker)
    const r = await transfer(c.args, c.bytes)
    const peak = sampler.stop()
    t.equal(r.code, 0, 'curl succeeded')
    t.ok(c.expect(r.out.trim()), `every byte went through (${r.out.trim()})`)
    t.ok(peak - reference < ALLOWED_GROWTH_MIB, `worker RSS peak ${peak.toFixed(0)} MiB, ${reference.toFixed(0)} MiB with a tenth of the data (${r.ms} ms)`)
  })
}
