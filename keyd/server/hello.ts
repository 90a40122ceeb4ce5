// HELLO, the first frame of a connection: who the client is (name and secret, checked in constant
// time by the registry) and keyd's answer. The connection loop in server.ts keeps the state.
import { ErrorCode, Tag } from '../protocol/spec.js'
import { readStr, type Item, type ItemMap } from '../protocol/codec.js'
import { decodeHelloRequest, encodeHelloResponse } from '../protocol/messages.js'
import { Refusal } from '../errors.js'
import type { Client, ClientRegistry } from './clients.js'

/** A HELLO's outcome: the authenticated client, or the refusal (and the name it claimed, for the log). */
export type HelloOutcome = { ok: true, client: Client } | { ok: false, name: string, refusal: Refusal }

/** Authenticates a HELLO: UNKNOWN_CLIENT for a wrong name or secret, MISSING_ITEM / BAD_FRAME for a malformed one. */
export function hello (clients: ClientRegistry, items: ItemMap): HelloOutcome {
  let req
  try {
    req = decodeHelloRequest(items)
  } catch (err) {
    if (!(err instanceof Refusal)) throw err
    // A malformed HELLO is still logged and audited under the name it claimed, if any.
    return { ok: false, name: readStr(items, Tag.CLIENT_NAME)?.slice(0, 64) ?? '', refusal: err }
  }
  const client = clients.authenticate(req.clientName, req.clientSecret)
  if (client === undefined) return { ok: false, name: req.clientName.slice(0, 64), refusal: new Refusal(ErrorCode.UNKNOWN_CLIENT, 'unknown client or wrong secret') }
  return { ok: true, client }
}

/** HELLO's answer: SERVER_INFO. */
export function helloAnswer (devMode: boolean): Item[] {
  return encodeHelloResponse({ serverInfo: JSON.stringify({ name: 'keyd', version: 1, devMode }) })
}
