// Active health checks over the gRPC health checking protocol (`healthCheck.protocol: "grpc"`):
// a real `keyedge proxy` checks real @grpc/grpc-js targets with grpc.health.v1.Health/Check. A
// target answering SERVING is eligible; NOT_SERVING, an unknown service (NOT_FOUND) or a dead
// target is marked down, and back up once it serves again. The health service is defined without
// a .proto: its messages are encoded by hand (field 1 of each), as the proxy does.
import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import t from 'tap'
import { validateConfig } from '../../src/config/index.js'
import { ConfigInvalidError } from '../../src/errors.js'
import { grpcHealthRequest, grpcServingStatus } from '../../src/proxy/health.js'
import { adminMetrics, metric } from '../helpers/http-front.js'
import { tempHome } from '../helpers/paths.js'
import { spawnCli } from '../helpers/processes.js'
import { selfSigned } from '../helpers/proxy-fixtures.js'
import { until } from '../helpers/wait.js'

t.test('the health request and response encodings', async t => {
  t.same(grpcHealthRequest(''), Buffer.from('0000000000', 'hex'), 'the whole server: an empty message')
  t.same(grpcHealthRequest('svc.A'), Buffer.from('00000000070a057376632e41', 'hex'), 'field 1, length 5, "svc.A"')
  t.equal(grpcServingStatus(Buffer.from('00000000020801', 'hex')), 1, 'SERVING')
  t.equal(grpcServingStatus(Buffer.from('00000000020802', 'hex')), 2, 'NOT_SERVING')
  t.equal(grpcServingStatus(Buffer.from('0000000000', 'hex')), 0, 'no field: UNKNOWN')
  t.equal(grpcServingStatus(Buffer.from('0000000005080112', 'hex')), -1, 'a length that does not match the body')
  t.equal(grpcServingStatus(Buffer.from('01000000020801', 'hex')), -1, 'a compressed message is not read')
  t.equal(grpcServingStatus(Buffer.alloc(0)), -1, 'nothing')
})

t.test('a grpc health check needs an HTTP/2 pool', async t => {
  const problems = (() => {
    try {
      validateConfig({ certificates: [{ name: 'a', serverNames: ['a.test'], files: [{ cert: 'a.crt', key: 'a.keyref' }] }], routes: [{ upstream: 'http://127.0.0.1:1', healthCheck: { protocol: 'grpc' } }] }, { baseDir: '/etc/keyedge' })
      return []
    } catch (err) {
      return err instanceof ConfigInvalidError ? err.problems : [String(err)]
    }
  })()
  t.match(problems.join('\n'), /routes\[0\]\.healthCheck\.protocol.*needs "upstreamProtocol": "h2c" or "h2"/)
})

/** grpc.health.v1.Health with Buffer (de)serializers: the messages stay as the wire has them. */
const pass = (b: Buffer): Buffer => b
const HEALTH: grpc.ServiceDefinition = {
  Check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: pass, requestDeserialize: pass, responseSerialize: pass, responseDeserialize: pass }
}

interface HealthTarget { server: grpc.Server, url: string, status: number, checks: number, services: string[] }
/** A gRPC target whose Health/Check answers `status` for the server ("") and for `services`; NOT_FOUND for any other. */
async function healthTarget (services: string[] = []): Promise<HealthTarget> {
  const server = new grpc.Server()
  const target: HealthTarget = { server, url: '', status: 1, checks: 0, services }
  server.addService(HEALTH, {
    Check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      target.checks++
      const req = call.request
      const service = req.length >= 2 && req[0] === 0x0a ? req.subarray(2, 2 + (req[1] ?? 0)).toString('utf8') : ''
      if (service !== '' && !target.services.includes(service)) {
        cb({ code: grpc.status.NOT_FOUND, details: `unknown service ${service}` })
        return
      }
      cb(null, Buffer.of(0x08, target.status))
    }
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  target.url = `http://127.0.0.1:${port}`
  return target
}

t.test('targets answering SERVING stay eligible; NOT_SERVING, an unknown service and a dead target go down', async t => {
  const home = tempHome('keyedge-grpc-health-')
  const cert = selfSigned(home, 'front', ['localhost'])
  const a = await healthTarget()
  const b = await healthTarget()
  const named = await healthTarget(['svc.A'])
  const unnamed = await healthTarget()
  const file = join(home, 'proxy.json')
  const check = { protocol: 'grpc', intervalMs: 200, timeoutMs: 1000, unhealthyThreshold: 1, healthyThreshold: 1 }
  writeFileSync(file, JSON.stringify({
    listen: { host: '127.0.0.1', port: 0 },
    workers: 1,
    certificates: [{ name: 'front', serverNames: ['localhost'], files: [{ cert: cert.cert, key: cert.key }] }],
    routes: [
      { pathPrefix: '/pool/', upstreams: [{ url: a.url }, { url: b.url }], upstreamProtocol: 'h2c', healthCheck: check },
      { pathPrefix: '/named/', upstreams: [{ url: named.url }, { url: unnamed.url }], upstreamProtocol: 'h2c', healthCheck: { ...check, grpcService: 'svc.A' } }
    ],
    admin: { port: 0, drainDelayMs: 0 },
    log: { level: 'info' }
  }))
  const proxy = spawnCli(['proxy', '--config', file])
  t.teardown(async () => {
    await proxy.stop('SIGKILL')
    for (const s of [a, b, named, unnamed]) s.server.forceShutdown()
    rmSync(home, { recursive: true, force: true })
  })
  await proxy.waitFor(o => o.msg === 'proxy listening', 30_000)
  const adminPort = (await proxy.waitFor(o => o.msg === 'admin listening', 10_000)).port as number
  const healthy = async (route: string, target: HealthTarget): Promise<number> => metric(await adminMetrics(adminPort), 'edge_upstream_healthy', { route, target: target.url })

  t.ok(await until(async () => a.checks >= 2 && b.checks >= 2 && named.checks >= 2 && unnamed.checks >= 2, 10_000), 'every target gets Health/Check calls')
  t.equal(await healthy('*/pool/', a), 1, 'SERVING: healthy')
  t.equal(await healthy('*/pool/', b), 1)
  t.ok(await until(async () => await healthy('*/named/', unnamed) === 0, 10_000), 'a target that does not know the checked service (NOT_FOUND) is down')
  await proxy.waitFor(o => o.msg === 'upstream target failed its health checks' && o.target === unnamed.url && o.reason === 'grpc-status 5', 5000)
  t.equal(await healthy('*/named/', named), 1, 'the target serving the named service stays up')

  b.status = 2 // NOT_SERVING
  t.ok(await until(async () => await healthy('*/pool/', b) === 0, 10_000), 'NOT_SERVING: down')
  await proxy.waitFor(o => o.msg === 'upstream target failed its health checks' && o.target === b.url && o.reason === 'NOT_SERVING', 5000)
  t.equal(await healthy('*/pool/', a), 1, 'the other target stays up')
  b.status = 1
  t.ok(await until(async () => await healthy('*/pool/', b) === 1, 10_000), 'SERVING again: back up')

  a.server.forceShutdown()
  t.ok(await until(async () => await healthy('*/pool/', a) === 0, 10_000), 'a dead target: down')
  t.equal(await healthy('*/pool/', b), 1)
})
