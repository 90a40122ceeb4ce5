// Readiness of the key daemon, as the primary sees it: every second a short-bounded request to keyd
// with the proxy's own client (the public key of a served key reference, or a PING when every key
// is in process). keyd unreachable, stuck or sealed means new full handshakes fail, so /ready fails;
// resumed handshakes and established connections keep working (docs/admin.md says what to do).

import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { Gauge, type Registry } from 'prom-client'
import type { CertificateConfig, KeydConfig } from '../config/types.js'
import { KeydClient } from '../../keyd/client/client.js'
import { decodeKeyReference } from '../../keyd/protocol/codec.js'
import { errorCode } from '../../lib/errors.js'

export interface KeydHealth {
  /** Null when keyd answers; else why not: `keyd_unreachable` or `keyd_sealed`. */
  problem: 'keyd_unreachable' | 'keyd_sealed' | null
  /** When the current state began (ISO time), and the last error code, for operators. */
  since: string
  error?: string
}

export interface KeydProbe {
  health: () => KeydHealth
  close: () => void
}

/** The first key reference among the served certificate files (undefined: no key is in keyd). */
function firstKeyReference (certificates: readonly CertificateConfig[]): { name: string, version: number } | undefined {
  // Each key file read once: thousands of entries may share one.
  const seen = new Set<string>()
  for (const entry of certificates) {
    for (const files of entry.files) {
      if (seen.has(files.key)) continue
      seen.add(files.key)
      try {
        const ref = decodeKeyReference(readFileSync(files.key, 'utf8'))
        if (ref !== null) return { name: ref.name, version: ref.version }
      } catch {
        // An unreadable file is the workers' problem to report; keep looking.
      }
    }
  }
  return undefined
}

/**
 * Probes keyd every `intervalMs` (1 s), each probe bounded by `timeoutMs` (the smaller of
 * keyd.timeoutMs and 500 ms), and keeps the last answer; `edge_keyd_up` is 1 or 0. A state change
 * is logged (warn when keyd goes away, info when it is back).
 */
export function startKeydProbe (o: {
  keyd: KeydConfig
  certificates: readonly CertificateConfig[]
  log: Logger
  registry: Registry
  intervalMs?: number
  timeoutMs?: number
}): KeydProbe {
  const timeoutMs = o.timeoutMs ?? Math.min(o.keyd.timeoutMs, 500)
  const client = new KeydClient({ socketPath: o.keyd.socket, clientName: o.keyd.clientName, secretFile: o.keyd.secretFile, timeoutMs })
  const key = firstKeyReference(o.certificates)
  const up = new Gauge({ name: 'edge_keyd_up', help: 'Whether keyd answered the last readiness probe of the primary (1) or not (0)', registers: [o.registry] })
  let health: KeydHealth = { problem: null, since: new Date().toISOString() }
  up.set(1)
  let timer: NodeJS.Timeout | undefined
  let closed = false

  const set = (problem: KeydHealth['problem'], error?: string): void => {
    up.set(problem === null ? 1 : 0)
    if (problem === health.problem) {
      if (error !== undefined) health.error = error
      return
    }
    health = { problem, since: new Date().toISOString(), ...(error !== undefined ? { error } : {}) }
    if (problem === null) o.log.info({ keydSocket: o.keyd.socket }, 'keyd answers again: /ready is ready')
    else o.log.warn({ keydSocket: o.keyd.socket, problem, error }, 'keyd does not answer: /ready answers 503; new full TLS handshakes fail, resumed ones and open connections still work')
  }

  const probe = async (): Promise<void> => {
    try {
      if (key !== undefined) await client.getPublicKey(key.name, key.version)
      else await client.ping()
      set(null)
    } catch (err) {
      const code = errorCode(err) ?? 'error'
      // Any other refusal (a missing key, a right) is keyd answering: the workers report those.
      if (code === 'KEYD_ERR_SEALED') set('keyd_sealed', code)
      else if (code === 'KEYD_ERR_UNAVAILABLE' || code === 'KEYD_ERR_TIMEOUT') set('keyd_unreachable', code)
      else set(null)
    }
  }
  const loop = (): void => {
    void probe().finally(() => {
      if (closed) return
      timer = setTimeout(loop, o.intervalMs ?? 1000)
      timer.unref()
    })
  }
  loop()

  return {
    health: () => health,
    close: () => {
      closed = true
      clearTimeout(timer)
      client.close()
      o.registry.removeSingleMetric('edge_keyd_up')
    }
  }
}
