// Entry script of a proxy cluster worker: loads the config named by argv[2], starts the TLS
// listener, and stops gracefully on the primary's "shutdown" message or SIGINT/SIGTERM.

import cluster from 'node:cluster'
import type { Server as NetServer } from 'node:net'
import { AggregatorRegistry, collectDefaultMetrics, Registry } from 'prom-client'
import { loadConfig } from '../config/load.js'
import { createLogger } from '../logger.js'
import { startProxyServer, type ProxyServer } from './server.js'
import { createTokenServer, type TokenServer } from '../token/index.js'
import { createHttpRedirect, type HttpRedirect } from './http-redirect.js'
import { createWorkerControl, isControlRequest, type ControlRequest } from './worker-control.js'
import { listeningHandle, socketFromPrimary, WORKER_LISTENING } from './slot-sockets.js'
import { errorCode, errorMessage } from '../../lib/errors.js'

/** Exit code of a worker that could not start (EX_CONFIG): the primary does not restart it in a loop. */
export const WORKER_STARTUP_FAILED = 78

async function run (configFile: string): Promise<void> {
  let log = createLogger({ level: 'info', name: 'keyedge-proxy' }).child({ worker: cluster.worker?.id })
  let server: ProxyServer | undefined
  let token: TokenServer | undefined
  let redirect: HttpRedirect | undefined
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    const closing = Promise.all([server === undefined ? Promise.resolve() : server.close(), token?.close(), redirect?.close()])
    closing.then(() => {
      log.info('worker stopped')
      process.exit(0)
    }, (err: unknown) => {
      log.error({ err: errorMessage(err) }, 'worker shutdown failed')
      process.exit(1)
    })
  }
  let control: ((msg: ControlRequest) => void) | undefined
  process.on('message', (msg: unknown) => {
    if (typeof msg === 'object' && msg !== null && (msg as { type?: string }).type === 'shutdown') stop()
    else if (isControlRequest(msg)) control?.(msg)
  })
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  // Answers the primary's metrics requests (prom-client IPC) from the start, so a scrape during a
  // worker's start-up gets an empty answer rather than waiting for a timeout.
  void new AggregatorRegistry()
  // Reloads are coordinated by the primary (it relays SIGHUP); a worker must not die of one.
  process.on('SIGHUP', () => {})
  try {
    // The primary checked that every certificate file is readable; the certificate store reads them all.
    const config = loadConfig(configFile, { checkFiles: false })
    log = createLogger({ level: config.log.level, name: 'keyedge-proxy' }).child({ worker: cluster.worker?.id })
    const registry = new Registry()
    // 100 ms, not prom-client's 10 ms: the event-loop-delay histogram's timer otherwise wakes an idle worker
    // 100 times a second (4 ms of CPU a second per worker, idle; strace: 855 epoll_pwait in 5 s).
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 })
    AggregatorRegistry.setRegistries([registry])
    // Token keys are checked through keyd before anything listens; the token listener opens after the proxy's.
    if (config.token !== undefined) token = await createTokenServer({ config, log, registry })
    // `reuseport` scheduling: the primary holds this slot's socket (bound with SO_REUSEPORT); else
    // node:cluster shares the primary's one socket with every worker.
    const slotSocket = process.env.KEYEDGE_WORKER_LISTEN === 'primary' ? await socketFromPrimary() : undefined
    let listener: NetServer | undefined
    server = await startProxyServer({
      config,
      log,
      registry,
      ...(slotSocket === undefined ? {} : { listen: (l: NetServer) => { listener = l; l.listen(slotSocket.handle as NetServer) } })
    })
    await token?.listen()
    const live = server
    if (config.httpRedirect !== undefined) {
      redirect = createHttpRedirect({ config: config.httpRedirect, tlsPort: live.port, routes: config.routes, timeouts: config.timeouts, registry, log })
      await redirect.listen()
    }
    const redirecting = redirect
    control = createWorkerControl({
      server: live,
      log,
      send: reply => { if (process.connected) process.send?.(reply) },
      ...(redirecting === undefined ? {} : { onLive: l => redirecting.setRoutes(l.routes) })
    })
    // The primary counts a worker as serving once every listener is open; given its socket for the
    // first time, it keeps a duplicate so that a crash of this worker does not close the socket.
    const sendBack = slotSocket?.keep === true && listener !== undefined ? listeningHandle(listener) : undefined
    process.send?.({ type: WORKER_LISTENING, port: live.port }, sendBack as NetServer | undefined)
    if (stopping) await server.close()
  } catch (err) {
    log.fatal({ code: errorCode(err), err: errorMessage(err) }, 'worker failed to start')
    process.exit(WORKER_STARTUP_FAILED)
  }
}

const configFile = process.argv[2]
if (configFile === undefined) {
  process.stderr.write('worker-main: missing config file argument\n')
  process.exit(2)
}
await run(configFile)
