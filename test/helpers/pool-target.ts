// A pool target run as its own process (so a test can kill it): `node pool-target.js NAME [MODE]`
// prints `{"msg":"listening","port":N}` and answers every request with `{"name":NAME}`:
// `/healthz` → 200 (503 in mode `sick`), mode `fail` → 503 to everything else, mode `slow` → 200 after 300 ms.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

const name = process.argv[2] ?? 'target'
const mode = process.argv[3] ?? 'ok'
const server = createServer((req, res) => {
  req.resume()
  const send = (status: number): void => {
    const body = JSON.stringify({ name })
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
  if (req.url === '/healthz') send(mode === 'sick' ? 503 : 200)
  else if (mode === 'fail') send(503)
  else if (mode === 'slow') setTimeout(() => send(200), 300)
  else send(200)
})
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port })}\n`)
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
