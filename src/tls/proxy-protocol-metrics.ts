// Counters and logs of the PROXY protocol front: headers accepted (by version and command) and
// connections refused (by a bounded reason). The first refusal of each reason is a warning (a
// balancer that sends no header, or a header reaching the proxy from elsewhere, is a setup
// mistake an operator must see), the rest are debug lines: a flood cannot fill the log.

import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import { PROXY_REFUSALS, type ProxiedSource, type ProxyRefusal } from './proxy-protocol.js'

export interface ProxyProtocolMetrics {
  accepted: (source: ProxiedSource) => void
  refused: (reason: ProxyRefusal, ctx: { peer: string | undefined, detail: string }) => void
}

/** The PROXY protocol counters of a worker (registered once per registry). */
export function proxyProtocolMetrics (registry: Registry, log: Logger): ProxyProtocolMetrics {
  const accepted = (registry.getSingleMetric('edge_proxy_protocol_accepted_total') as Counter<string> | undefined) ??
    new Counter({ name: 'edge_proxy_protocol_accepted_total', help: 'PROXY protocol headers accepted from trusted balancers, by version (1, 2) and command (proxy; local: the balancer\'s own connection, such as a health check)', labelNames: ['version', 'command'], registers: [registry] })
  let refused = registry.getSingleMetric('edge_proxy_protocol_refused_total') as Counter<string> | undefined
  if (refused === undefined) {
    refused = new Counter({ name: 'edge_proxy_protocol_refused_total', help: `Connections closed at their PROXY protocol header, by reason (${PROXY_REFUSALS.join(', ')})`, labelNames: ['reason'], registers: [registry] })
    for (const reason of PROXY_REFUSALS) refused.inc({ reason }, 0)
  }
  const counter = refused
  const warned = new Set<ProxyRefusal>()
  return {
    accepted: source => accepted.inc({ version: String(source.version), command: source.command }),
    refused: (reason, ctx) => {
      counter.inc({ reason })
      const line = { reason, peer: ctx.peer, detail: ctx.detail.slice(0, 200) }
      if (warned.has(reason)) {
        log.debug(line, 'connection refused at its PROXY protocol header')
        return
      }
      warned.add(reason)
      log.warn(line, 'connection refused at its PROXY protocol header (further ones of this reason are logged at debug)')
    }
  }
}
