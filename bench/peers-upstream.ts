// The upstream every peer of `bench peers` proxies to, run as its own process on the client's CPUs:
// plain HTTP/1.1 on 127.0.0.1, a short text body for any path and 1 MiB for /1mib (written in
// 64 KiB chunks, so a proxy has to stream it). Prints {"port":N} once listening.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { writeRepeated } from '../test/helpers/body.js'

/** The body of every request but /1mib (about the size of a small API answer). */
export const SMALL_BODY = Buffer.from('peers bench upstream: ok. This is a small response body of about a hundred bytes.\n')
export const LARGE_PATH = '/1mib'
export const LARGE_BYTES = 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 'x')

export function startUpstream (): ReturnType<typeof createServer> {
  const server = createServer((req, res) => {
    req.resume()
    if (req.url === LARGE_PATH) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE_BYTES })
      writeRepeated(res, CHUNK, LARGE_BYTES / CHUNK.length)
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL_BODY.length })
    res.end(SMALL_BODY)
  })
  // The proxies keep pooled connections open; never close them first (a race a proxy would retry or fail on).
  server.keepAliveTimeout = 600_000
  server.headersTimeout = 60_000
  server.requestTimeout = 0
  server.maxRequestsPerSocket = 0
  return server
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = startUpstream()
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n')
  })
  // Ends with its parent: the benchmark closes our stdin when it is done (or dies).
  process.stdin.resume()
  process.stdin.on('end', () => { server.closeAllConnections(); server.close(); process.exit(0) })
}
