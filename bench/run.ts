// `node dist/bench/run.js <name> [options]`: runs one of keyedge's side-by-side benchmarks.

const BENCHES: Record<string, { module: string, summary: string }> = {
  handshakes: { module: './handshakes.js', summary: 'server CPU per full TLS handshake: keys in keyd vs in process, SCHED_NONE vs round-robin' },
  tokens: { module: './tokens.js', summary: 'token endpoint under a 10× load spike: spike absorption on vs off, TLS handshake latency meanwhile' },
  rotation: { module: './rotation.js', summary: 'certificate rotations under keep-alive and new-connection load: failed requests, new certificate seen' },
  resumption: { module: './resumption.js', summary: 'full vs resumed TLS 1.3 and 1.2 handshakes: rate, server CPU, keyd signatures per 1,000' },
  keyd: { module: './keyd.js', summary: 'keyd signatures/s and CPU per signature with the audit log off, buffered and fsync' },
  peers: { module: './peers.js', summary: 'keyedge beside nginx, HAProxy, h2o and a minimal Node proxy: CPU per handshake/request, memory per connection' },
  abuse: { module: './abuse.js', summary: 'slowloris, idle conns, HTTP/2 rapid reset, huge bodies, odd ClientHellos: a normal client\'s latency, keyedge beside nginx' },
  pool: { module: './pool.js', summary: 'per-request CPU of a 3-target pool with health checks and the access log against the plain single-upstream route' },
  certs: { module: './certs.js', summary: 'many certificate entries (1k, 10k, 100k) beside nginx: time to listen, memory per worker, cold-name handshake, reload of one change' },
  testssl: { module: './testssl.js', summary: 'testssl.sh scan of keyedge beside nginx (same certificates, Mozilla intermediate): every finding whose severity differs' }
}

function usage (): string {
  const lines = Object.entries(BENCHES).map(([n, b]) => `  ${n.padEnd(12)} ${b.summary}`)
  return `usage: node dist/bench/run.js <name> [options]   (or: npm run bench -- <name> [options])\n\nbenchmarks:\n${lines.join('\n')}\n\nRun "node dist/bench/run.js <name> --help" for a benchmark's options. Results go to bench/results/.\n`
}

async function run (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return name === undefined ? 2 : 0
  }
  const bench = BENCHES[name]
  if (bench === undefined) {
    process.stderr.write(`bench: unknown benchmark "${name}"\n\n${usage()}`)
    return 2
  }
  const mod = await import(bench.module) as { main: (argv: string[]) => Promise<number> }
  return await mod.main(rest)
}

run(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
})
