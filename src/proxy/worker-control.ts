// The worker's half of the primary's control messages: two-phase certificate reloads (prepare
// beside the served set, then commit or abort) and the certificate view for the admin API.

import type { Logger } from 'pino'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { describeCertificate, type CertEntryInfo } from '../tls/cert-info.js'
import type { EntryResult, ProxyServer, ReloadPlan } from './server.js'
import { errorMessage } from '../../lib/errors.js'

/** Messages the primary sends to workers (and their answers), all tagged `edge:`. */
export type ControlRequest =
  | { type: 'edge:reload-prepare', id: number, certificates: CertificateConfig[], tls: TlsConfig }
  | { type: 'edge:reload-commit', id: number }
  | { type: 'edge:reload-abort', id: number }
  | { type: 'edge:certs', id: number }

export type ControlReply =
  | { type: 'edge:reply', id: number, ok: boolean, results?: EntryResult[], certificates?: CertEntryInfo[], error?: string }

const REQUEST_TYPES = new Set(['edge:reload-prepare', 'edge:reload-commit', 'edge:reload-abort', 'edge:certs'])

export function isControlRequest (msg: unknown): msg is ControlRequest {
  const type = (msg as { type?: unknown } | null)?.type
  return typeof type === 'string' && REQUEST_TYPES.has(type) && typeof (msg as { id?: unknown }).id === 'number'
}

/** Answers control requests from the primary on `send` for `server`. */
export function createWorkerControl (opts: { server: ProxyServer, log: Logger, send: (reply: ControlReply) => void }): (msg: ControlRequest) => void {
  const { server, log, send } = opts
  const pending = new Map<number, ReloadPlan>()
  const describeAll = (): CertEntryInfo[] => server.certs.list().map(c => describeCertificate(c))
  return (msg) => {
    switch (msg.type) {
      case 'edge:reload-prepare': {
        pending.clear()
        const plan = server.reload(msg.certificates, msg.tls)
        if (plan.ok) pending.set(msg.id, plan)
        for (const r of plan.results) {
          if (!r.ok) log.error({ certificate: r.name, code: r.code, err: r.error }, 'certificate refused')
        }
        send({ type: 'edge:reply', id: msg.id, ok: plan.ok, results: plan.results })
        return
      }
      case 'edge:reload-commit': {
        const plan = pending.get(msg.id)
        pending.delete(msg.id)
        if (plan === undefined) {
          send({ type: 'edge:reply', id: msg.id, ok: false, error: 'no prepared reload with this id' })
          return
        }
        try {
          plan.commit()
        } catch (err) {
          send({ type: 'edge:reply', id: msg.id, ok: false, error: errorMessage(err) })
          return
        }
        send({ type: 'edge:reply', id: msg.id, ok: true, certificates: describeAll() })
        return
      }
      case 'edge:reload-abort':
        pending.delete(msg.id)
        return
      case 'edge:certs':
        send({ type: 'edge:reply', id: msg.id, ok: true, certificates: describeAll() })
    }
  }
}
