// The per-route WebSocket count of route-limits.ts: places taken and given back per client and
// route, counted by host and path prefix (so a reload's new route objects share the count).
import { Registry } from 'prom-client'
import t from 'tap'
import { defaultsOf } from '../../src/config/defaults.js'
import { RouteSchema } from '../../src/config/schema.js'
import type { RouteConfig } from '../../src/config/types.js'
import { createRouteLimits } from '../../src/proxy/route-limits.js'

const route = (over: Partial<RouteConfig>): RouteConfig => ({ ...(defaultsOf(RouteSchema) as RouteConfig), upstream: 'http://127.0.0.1:1', ...over })

t.test('webSocketsPerClient: places per client, given back once each', async t => {
  const registry = new Registry()
  const limits = createRouteLimits({ registry })
  const r = route({ pathPrefix: '/ws', webSocketsPerClient: 2 })
  const a = limits.openWebSocket(r, '10.0.0.1')
  const b = limits.openWebSocket(r, '10.0.0.1')
  t.ok(a !== undefined && b !== undefined, 'two places')
  t.equal(limits.openWebSocket(r, '10.0.0.1'), undefined, 'no third')
  t.ok(limits.openWebSocket(r, '10.0.0.2') !== undefined, 'another client has its own')
  a?.()
  a?.()
  const c = limits.openWebSocket(r, '10.0.0.1')
  t.ok(c !== undefined, 'a place given back can be taken again')
  t.equal(limits.openWebSocket(r, '10.0.0.1'), undefined, 'giving one back twice freed only one')
  const hits = await registry.getSingleMetricAsString('edge_route_limit_hits_total')
  t.match(hits, /limit="websockets"\} 2/)
})

t.test('a reload\'s route object with the same host and prefix shares the count; 0 is no limit', async t => {
  const limits = createRouteLimits({ registry: new Registry() })
  const before = route({ pathPrefix: '/ws', webSocketsPerClient: 1 })
  t.ok(limits.openWebSocket(before, 'c') !== undefined)
  const after = route({ pathPrefix: '/ws', webSocketsPerClient: 1 })
  t.equal(limits.openWebSocket(after, 'c'), undefined, 'the WebSocket of the old config still counts')
  const other = route({ pathPrefix: '/other', webSocketsPerClient: 1 })
  t.ok(limits.openWebSocket(other, 'c') !== undefined, 'another route counts apart')
  const open = route({ pathPrefix: '/ws' })
  for (let i = 0; i < 1000; i++) if (limits.openWebSocket(open, 'c') === undefined) t.fail(`refused at ${i}`)
  t.pass('no limit at 0')
})
