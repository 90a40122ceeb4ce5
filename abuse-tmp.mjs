// Before/after: a normal client's handshake+request latency while attackers send 64 KB ClientHellos
// in one-byte records to a 1-worker proxy (keys in keyd). Usage: node abuse-tmp.mjs <cli.js> <attackers> <seconds>
import { spawn, execFile } from 'node:child_process'
import { writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from 'node:net'
const { startStack } = await import('./dist/test/helpers/edge.js')
const F = await import('./dist/test/helpers/hello-forge.js')
const [cli, attackers = '4', seconds = '10'] = process.argv.slice(2)
const stack = await startStack()
const config = {
  listen: { host: '127.0.0.1', port: 0 }, workers: 1,
  keyd: { socket: stack.keyd.paths.socket, clientName: 'proxy', secretFile: join(stack.keyd.paths.secretsDir, 'proxy.secret'), timeoutMs: 1000 },
  tls: { defaultCertificate: 'localhost' },
  certificates: [
    { name: 'localhost', serverNames: ['localhost', '127.0.0.1'], files: stack.certs.leaves.map(l => ({ cert: l.certFile, key: l.keyRefFile })) },
    { name: 'other', serverNames: ['other.test'], files: [{ cert: stack.other.certFile, key: stack.other.keyRefFile }] }],
  routes: [{ upstream: stack.upstream.url }]
}
const file = join(stack.keyd.paths.home, 'abuse.json')
writeFileSync(file, JSON.stringify(config))
const proc = spawn(process.execPath, [cli, 'proxy', '--config', file], { env: { ...process.env, KEYEDGE_HOME: stack.keyd.paths.home }, stdio: ['ignore', 'pipe', 'pipe'] })
let out = ''
const port = await new Promise(resolve => proc.stdout.on('data', d => { out += d; const m = /"port":(\d+),"workers"/.exec(out); if (m) resolve(Number(m[1])) }))
const workerPid = Number(readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/)[0])
const cpu = () => { const f = readFileSync(`/proc/${workerPid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 10 }
const hello = F.frame(F.growHello(F.firstHandshakeMessage(await F.captureFirstFlight({ servername: 'localhost' })), 65_000), 1)
const curlOnce = () => new Promise(resolve => execFile('curl', ['-sS', '-o', '/dev/null', '--max-time', '60', '-w', '%{time_total}', '--cacert', stack.caFile, `https://localhost:${port}/`], (err, so) => resolve(err ? 60 : Number(so))))
const base = []
for (let i = 0; i < 5; i++) base.push(await curlOnce())
let stop = false, sent = 0
const attack = async () => {
  while (!stop) {
    await new Promise(resolve => {
      const s = connect(port, '127.0.0.1')
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.on('data', () => { s.destroy() })
      s.on('connect', () => { s.write(hello); sent++ })
      setTimeout(() => s.destroy(), 30_000)
    })
  }
}
const cpu0 = cpu()
const t0 = Date.now()
const runs = Array.from({ length: Number(attackers) }, attack)
const during = []
while (Date.now() - t0 < Number(seconds) * 1000) during.push(await curlOnce())
stop = true
const wall = Date.now() - t0
const used = cpu() - cpu0
await Promise.allSettled(runs)
const med = a => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
console.log(JSON.stringify({ cli, attackers: Number(attackers), hellos: sent, helloBytes: hello.length, workerCpuMsPerHello: Math.round(used / Math.max(sent, 1)), workerCpuPct: Math.round(100 * used / wall),
  normalClient: { idleMedianMs: Math.round(med(base) * 1000), duringMedianMs: Math.round(med(during) * 1000), duringMaxMs: Math.round(Math.max(...during) * 1000), requests: during.length } }))
proc.kill('SIGTERM')
await new Promise(r => proc.on('exit', r))
await stack.stop()
