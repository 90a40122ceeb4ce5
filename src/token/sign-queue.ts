// The bounded queue in front of keyd: jobs wait at most their deadline, distinct signatures that
// arrive within a short window go out together in one SIGN_BATCH, and only a few keyd calls are in
// flight per worker, so TLS handshakes sharing keyd never wait behind a token burst.
import type { KeydClient } from '../../keyd/client/client.js'
import { KeydError, KeydRemoteError } from '../../keyd/errors.js'
import { TokenRequestError } from '../errors.js'
import { retryAfterSeconds } from './admission.js'
import type { TokenMetrics } from './metrics.js'

export interface SignQueueOptions {
  keyd: KeydClient
  keyName: string
  /** keyd algorithm name and ECDSA output form. */
  algorithm: string
  ieeeP1363: boolean
  batch: boolean
  batchMaxSize: number
  batchWindowMs: number
  maxInFlight: number
  maxQueue: number
  metrics: TokenMetrics
}

interface Job {
  message: Buffer
  /** The key version whose kid the token names (0 = keyd's current). */
  version: number
  enqueuedAt: number
  timer: NodeJS.Timeout
  resolve: (signature: Buffer) => void
  reject: (err: Error) => void
}

/** 429 for a job the queue cannot take or cannot serve before its deadline. */
function tooBusy (reason: 'queue_full' | 'queue_deadline', retryMs: number): TokenRequestError {
  return new TokenRequestError('EDGE_ERR_TOKEN_RATE_LIMITED', 429, reason === 'queue_full'
    ? 'too many token signatures are waiting; retry later'
    : 'the token signer cannot serve this request within its deadline; retry later', { 'retry-after': String(retryAfterSeconds(retryMs)), 'x-keyedge-reject-reason': reason })
}

export class SignQueue {
  readonly #o: SignQueueOptions
  readonly #queue: Job[] = []
  #inFlight = 0
  #windowTimer: NodeJS.Timeout | undefined
  /** Moving average of one keyd call's duration, for the deadline estimate. */
  #callMs = 1

  constructor (opts: SignQueueOptions) {
    this.#o = opts
  }

  get queued (): number { return this.#queue.length }

  /**
   * Signs `message` with the key, or refuses at once with 429 (EDGE_ERR_TOKEN_RATE_LIMITED) when the
   * queue is full or the expected wait exceeds `deadlineMs`; a job still queued at its deadline is
   * refused then. `version` pins the key version, so the signature matches the kid in the header.
   * @throws TokenRequestError 503 EDGE_ERR_TOKEN_SIGNER_UNAVAILABLE when keyd fails.
   */
  async sign (message: Buffer, deadlineMs: number, version = 0): Promise<Buffer> {
    const o = this.#o
    if (this.#queue.length >= o.maxQueue) throw tooBusy('queue_full', this.#callMs)
    const perCall = o.batch ? o.batchMaxSize : 1
    const waves = Math.ceil((this.#queue.length + 1) / perCall / o.maxInFlight)
    const expectedMs = waves * this.#callMs + (o.batch ? o.batchWindowMs : 0)
    if (expectedMs > deadlineMs) throw tooBusy('queue_deadline', expectedMs)
    return await new Promise<Buffer>((resolve, reject) => {
      const job: Job = {
        message,
        version,
        enqueuedAt: performance.now(),
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.#queue.indexOf(job)
          if (i < 0) return
          this.#queue.splice(i, 1)
          reject(tooBusy('queue_deadline', this.#callMs))
        }, deadlineMs)
      }
      this.#queue.push(job)
      this.#pump()
    })
  }

  #pump (): void {
    const o = this.#o
    while (this.#inFlight < o.maxInFlight) {
      const oldest = this.#queue[0]
      if (oldest === undefined) return
      if (o.batch && this.#queue.length < o.batchMaxSize) {
        // The oldest job waits up to the window so that what arrives meanwhile joins its batch.
        const waitMs = oldest.enqueuedAt + o.batchWindowMs - performance.now()
        if (waitMs > 0) {
          this.#windowTimer ??= setTimeout(() => { this.#windowTimer = undefined; this.#pump() }, waitMs)
          return
        }
      }
      if (this.#windowTimer !== undefined) { clearTimeout(this.#windowTimer); this.#windowTimer = undefined }
      void this.#send(this.#queue.splice(0, o.batch ? o.batchMaxSize : 1))
    }
  }

  async #send (jobs: Job[]): Promise<void> {
    const o = this.#o
    this.#inFlight++
    const t0 = performance.now()
    for (const j of jobs) {
      clearTimeout(j.timer)
      o.metrics.signDuration.observe({ phase: 'queue' }, (t0 - j.enqueuedAt) / 1000)
    }
    o.metrics.batchSize.observe(jobs.length)
    o.metrics.keydSignatures.inc(jobs.length)
    try {
      if (o.batch) {
        const results = await o.keyd.signBatch(jobs.map(j => ({ name: o.keyName, algorithm: o.algorithm, message: j.message, version: j.version, ieeeP1363: o.ieeeP1363 })))
        // The client refuses an answer without one entry per request; were one missing, its job fails, never waits.
        for (const [i, job] of jobs.entries()) {
          const r = results[i]
          if (r === undefined || r instanceof KeydRemoteError) job.reject(unavailable(r)); else job.resolve(r.signature)
        }
      } else {
        // Without batching #pump hands over exactly one job.
        const [job] = jobs
        if (job !== undefined) {
          const r = await o.keyd.sign(o.keyName, o.algorithm, job.message, { version: job.version, ieeeP1363: o.ieeeP1363 })
          job.resolve(r.signature)
        }
      }
    } catch (err) {
      for (const j of jobs) j.reject(unavailable(err))
    } finally {
      const ms = performance.now() - t0
      this.#callMs = this.#callMs * 0.8 + ms * 0.2
      o.metrics.signDuration.observe({ phase: 'keyd' }, ms / 1000)
      this.#inFlight--
      this.#pump()
    }
  }
}

function unavailable (err: unknown): TokenRequestError {
  const code = err instanceof KeydError ? err.code : 'unknown'
  return new TokenRequestError('EDGE_ERR_TOKEN_SIGNER_UNAVAILABLE', 503, `keyd could not sign the token (${code})`, { 'retry-after': '1' })
}
