// A plain Node TLS server with its private keys in process: what OpenSSL negotiates on its own, to
// compare the keyd bridge with. Run as a child (`node reference-tls-server.js <config.json>`) so the
// same script serves under Node 20 and Node 24; prints {"port":N} once listening.
import { createServer, createSecureContext } from 'node:tls'
import { readFileSync } from 'node:fs'

interface Pair { key: string, cert: string }
interface ReferenceConfig { ciphers: string, default: Pair[], sni: Record<string, Pair[]> }

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ReferenceConfig
const options = (pairs: Pair[]): { key: string[], cert: string[], ciphers: string } => ({
  key: pairs.map(p => readFileSync(p.key, 'utf8')),
  cert: pairs.map(p => readFileSync(p.cert, 'utf8')),
  ciphers: config.ciphers
})
const sni = new Map(Object.entries(config.sni).map(([name, pairs]) => [name, createSecureContext(options(pairs))]))
const server = createServer({
  ...options(config.default),
  SNICallback: (name, cb) => { cb(null, sni.get(name)) }
}, socket => { socket.end('reference\n') })
server.on('tlsClientError', () => {})
server.listen(0, '127.0.0.1', () => {
  const address = server.address()
  process.stdout.write(JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 }) + '\n')
})
process.on('SIGTERM', () => { server.close(); process.exit(0) })
