// The two sides of a proxied WebSocket joined both ways: the client's (an HTTP/1.1 socket after
// `Upgrade`, or an HTTP/2 stream of an extended CONNECT) and the upstream socket.

import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Counter, Gauge } from 'prom-client'

/** A client side: a duplex with an idle clock (a TCP or TLS socket, an HTTP/2 stream). */
export type ClientSide = Duplex & { setTimeout: (ms: number, callback?: () => void) => unknown }

/**
 * Pipes `client` and `upstream` into each other with one idle clock: a byte either way restarts both
 * sides' timers, and `onIdle` runs when neither moved for `idleMs`. The pair counts as open (the
 * caller incremented `open`) until either side closes: then it is counted `closed` once, `onClosed`
 * runs, and the other side is ended (`closeClient` for the client's). Bytes are counted into `count`
 * as they pass (`bytesIn` from the client, `bytesOut` from the upstream), for the access log.
 */
export function splice (client: ClientSide, upstream: Socket, o: {
  idleMs: number
  onIdle: () => void
  open: Gauge
  total: Counter<'event'>
  onClosed: () => void
  closeClient: () => void
  count: { bytesIn: number, bytesOut: number }
}): void {
  client.setTimeout(o.idleMs, o.onIdle)
  upstream.setTimeout(o.idleMs, o.onIdle)
  const touch = (): void => { client.setTimeout(o.idleMs); upstream.setTimeout(o.idleMs) }
  client.on('data', (chunk: Buffer) => { o.count.bytesIn += chunk.length; touch() })
  upstream.on('data', (chunk: Buffer) => { o.count.bytesOut += chunk.length; touch() })
  client.pipe(upstream)
  upstream.pipe(client)
  let counted = false
  const done = (): void => {
    if (counted) return
    counted = true
    o.onClosed()
    o.open.dec()
    o.total.inc({ event: 'closed' })
  }
  client.once('close', () => { done(); upstream.destroy() })
  upstream.once('close', () => { done(); o.closeClient() })
}
