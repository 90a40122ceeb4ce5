// keyd's token worker thread: it alone loads the PKCS#11 module and calls the token (TokenStore), one
// operation at a time, so a slow or hung token holds this thread, never keyd's event loop.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads'
import { KEY_TYPES } from '../algorithms.js'
import type { TokenOptions } from './pkcs11-token.js'
import { TokenStore, type KeySnapshot } from './pkcs11-token-store.js'
import { errorCode } from '../../lib/errors.js'

/** What the event-loop side sends: one operation, to be skipped if it is still queued past `expiresAt`. */
export interface TokenRequest { id: number, op: TokenOp, args: unknown[], expiresAt: number }
export type TokenOp = 'sign' | 'create' | 'rotate' | 'setState' | 'destroy' | 'close'

/** The answer: a result or an error (code and message only), and the keys whose mirror must change. */
export interface TokenReply {
  id: number
  result?: unknown
  error?: { code?: string, name: string, message: string }
  /** Keys to mirror; `full` = replace the whole mirror (after a reconnect). */
  snapshot?: KeySnapshot[]
  full?: boolean
  /** The request expired in the queue and was not run. */
  skipped?: boolean
}

/** The result of start-up, posted on `initPort`. */
export interface TokenInit {
  error?: { code?: string, name: string, message: string }
  snapshot?: KeySnapshot[]
  loadErrors?: Array<{ key: string, reason: string }>
  types?: string[]
}

export interface TokenWorkerData { opts: TokenOptions, initPort: MessagePort, initFlag: Int32Array }

function describe (err: unknown): { code?: string, name: string, message: string } {
  const o = typeof err === 'object' && err !== null ? err : {}
  const code = errorCode(err)
  const name = 'name' in o && typeof o.name === 'string' ? o.name : 'Error'
  const message = 'message' in o && typeof o.message === 'string' ? o.message : String(err)
  return { ...(code !== undefined ? { code } : {}), name, message }
}

const { opts, initPort, initFlag } = workerData as TokenWorkerData
let store: TokenStore | undefined
try {
  store = new TokenStore(opts)
  initPort.postMessage({ snapshot: store.snapshot(), loadErrors: store.loadErrors, types: KEY_TYPES.filter(t => store?.supportsType(t) === true) } satisfies TokenInit)
} catch (err) {
  initPort.postMessage({ error: describe(err) } satisfies TokenInit)
}
Atomics.store(initFlag, 0, 1)
Atomics.notify(initFlag, 0)

parentPort?.on('message', (req: TokenRequest) => {
  const s = store
  if (s === undefined) return
  if (req.op === 'close') { s.close(); parentPort?.close(); return }
  if (Date.now() > req.expiresAt) { parentPort?.postMessage({ id: req.id, skipped: true } satisfies TokenReply); return }
  const reconnects = s.reconnects
  try {
    const [name] = req.args as [string]
    let result: unknown
    switch (req.op) {
      case 'sign': {
        const [, version, alg, message, p1363] = req.args as Parameters<TokenStore['sign']>
        result = s.sign(name, version, alg, message, p1363)
        break
      }
      case 'create': result = s.create(...(req.args as Parameters<TokenStore['create']>)); break
      case 'rotate': result = s.rotate(...(req.args as Parameters<TokenStore['rotate']>)); break
      case 'setState': result = s.setState(...(req.args as Parameters<TokenStore['setState']>)); break
      case 'destroy': result = s.destroy(...(req.args as Parameters<TokenStore['destroy']>)); break
    }
    const full = s.reconnects !== reconnects
    const snapshot = full ? s.snapshot() : req.op === 'sign' ? undefined : s.snapshot(name)
    parentPort?.postMessage({ id: req.id, result, ...(snapshot !== undefined ? { snapshot } : {}), ...(full ? { full } : {}) } satisfies TokenReply)
  } catch (err) {
    // A failed change may still have changed the token (a record written before the failure): resend the key.
    const full = s.reconnects !== reconnects
    const snapshot = full ? s.snapshot() : req.op === 'sign' ? undefined : s.snapshot((req.args as [string])[0])
    parentPort?.postMessage({ id: req.id, error: describe(err), ...(snapshot !== undefined ? { snapshot } : {}), ...(full ? { full } : {}) } satisfies TokenReply)
  }
})
