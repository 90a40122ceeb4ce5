// How an upstream target's URL names the host to connect to and the TLS server name to send.

import { isIP } from 'node:net'

/**
 * The host of `url` to connect to (an IPv6 literal without its URL brackets) and the TLS server
 * name for it: the name itself, or none for an address (RFC 6066 forbids an IP as SNI; the target's
 * certificate is then checked against its IP SANs). Used wherever keyedge opens its own connection
 * to a target (HTTP/2 sessions, WebSocket upgrades); undici's pools derive the same from the origin.
 */
export function targetHost (url: URL): { host: string, servername: string | undefined } {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  return { host, servername: isIP(host) === 0 ? host : undefined }
}
