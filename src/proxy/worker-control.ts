// The worker's half of the primary's control messages: two-phase reloads (certificates prepared
// beside the served set, then committed or aborted; routes, pools, trusted proxies and the access
// log swapped in on commit) and the certificate view for the admin API.

import { setImmediate as yieldToLoop } from 'node:timers/promises'
import type { Logger } from 'pino'
import { errorMessage } from '../../lib/errors.js'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { describeEntry, type CertEntryInfo } from '../tls/cert-info.js'
import type { EntryResult, LiveConfig, ProxyServer, ReloadPlan } from './server.js'

/** Messages the primary sends to workers (and their answers), all tagged `edge:`. */
export type ControlRequest =
  /**
   * `certificates` absent: the entries served, their files looked at again; `changedFiles` present:
   * only the entries naming one of these files (what the primary's file watcher saw change).
   */
  | {
    type: 'edge:reload-prepare'
    id: number
    certificates?: CertificateConfig[]
    tls: TlsConfig
    changedFiles?: string[]
    /** Present when routes, trusted proxies, the access log, timeouts or limits changed (validated by the primary): applied on commit. */
    live?: LiveConfig
  }
  | { type: 'edge:reload-commit', id: number }
  | { type: 'edge:reload-abort', id: number }
  | { type: 'edge:certs', id: number }

export type ControlReply =
  | { type: 'edge:reply', id: number, ok: boolean, results?: EntryResult[], unchanged?: number, certificates?: CertEntryInfo[], error?: string }

const REQUEST_TYPES = new Set(['edge:reload-prepare', 'edge:reload-commit', 'edge:reload-abort', 'edge:certs'])

/** Entries described per event-loop turn for `/certs` (each costs a certificate parse): handshakes go on meanwhile. */
const DESCRIBE_BATCH = 200

export function isControlRequest (msg: unknown): msg is ControlRequest {
  const type = (msg as { type?: unknown } | null)?.type
  return typeof type === 'string' && REQUEST_TYPES.has(type) && typeof (msg as { id?: unknown }).id === 'number'
}

/** Answers control requests from the primary on `send` for `server`; `onLive` hears the live settings a committed reload applied. */
export function createWorkerControl (opts: { server: ProxyServer, log: Logger, send: (reply: ControlReply) => void, onLive?: (live: LiveConfig) => void }): (msg: ControlRequest) => void {
  const { server, log, send } = opts
  const pending = new Map<number, { plan: ReloadPlan, live: LiveConfig | undefined }>()
  const describe = async (names?: readonly string[]): Promise<CertEntryInfo[]> => {
    const out: CertEntryInfo[] = []
    const entries = names === undefined ? [...server.certs.entries()] : names.flatMap(n => server.certs.get(n) ?? [])
    for (let i = 0; i < entries.length; i++) {
      if (i > 0 && i % DESCRIBE_BATCH === 0) await yieldToLoop()
      const entry = entries[i]
      if (entry !== undefined && server.certs.get(entry.name) === entry) out.push(describeEntry(server.certs, entry))
    }
    return out
  }
  const fail = (id: number, err: unknown): void => { send({ type: 'edge:reply', id, ok: false, error: errorMessage(err) }) }
  return (msg) => {
    switch (msg.type) {
      case 'edge:reload-prepare': {
        for (const p of pending.values()) p.plan.abort()
        pending.clear()
        const plan = server.reload(msg.certificates, msg.tls, msg.changedFiles)
        if (plan.ok) pending.set(msg.id, { plan, live: msg.live })
        for (const r of plan.results) {
          if (!r.ok) log.error({ certificate: r.name, code: r.code, err: r.error }, 'certificate refused')
        }
        send({ type: 'edge:reply', id: msg.id, ok: plan.ok, results: plan.results, unchanged: plan.unchanged })
        return
      }
      case 'edge:reload-commit': {
        const prepared = pending.get(msg.id)
        pending.delete(msg.id)
        if (prepared === undefined) {
          send({ type: 'edge:reply', id: msg.id, ok: false, error: 'no prepared reload with this id' })
          return
        }
        const { plan, live } = prepared
        try {
          plan.commit()
          if (live !== undefined) {
            server.applyLive(live)
            opts.onLive?.(live)
            log.info({ routes: live.routes.length }, 'routes reloaded: new requests use them (and new connections the timeouts and limits), requests in flight finish on the old ones')
          }
        } catch (err) {
          fail(msg.id, err)
          return
        }
        // The report describes what this reload loaded; GET /certs describes everything served.
        describe(plan.loaded).then(certificates => send({ type: 'edge:reply', id: msg.id, ok: true, certificates }), (err: unknown) => fail(msg.id, err))
        return
      }
      case 'edge:reload-abort':
        pending.get(msg.id)?.plan.abort()
        pending.delete(msg.id)
        return
      case 'edge:certs':
        describe().then(certificates => send({ type: 'edge:reply', id: msg.id, ok: true, certificates }), (err: unknown) => fail(msg.id, err))
    }
  }
}
