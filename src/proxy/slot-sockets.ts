// One listening socket per worker slot, all bound to the proxy's port with SO_REUSEPORT (the
// `reuseport` cluster scheduling, the default on Linux). The kernel hashes each new connection to one
// slot's accept queue, so exactly one worker wakes for it: with one shared socket (SCHED_NONE) every
// worker's event loop wakes for every connection and all but one get EAGAIN.
//
// The primary binds the sockets (as root under `proxy --user`, so ports below 1024 work and only root
// can join the port's reuseport group), hands each to its slot's worker, and keeps a duplicate of the
// descriptor it never polls. A worker that dies therefore does not close its socket: connections
// already queued on it, and those the kernel hashes to it meanwhile, wait in its accept queue until
// the slot's next worker takes the same socket over (with one socket per worker and no duplicate,
// they would be reset, the caveat nginx documents for `reuseport`).

import type { Worker } from 'node:cluster'
import { lookup } from 'node:dns/promises'
import * as net from 'node:net'
import type { Server, Socket } from 'node:net'

/** `net.BoundSocket` (Node ≥ 24.19); absent on older runtimes, which then share one socket (`none`). */
const BoundSocket = (net as { BoundSocket?: typeof net.BoundSocket }).BoundSocket

/** Whether this runtime can bind a socket without listening on it (what `reuseport` scheduling needs). */
export const canBindSlotSockets = typeof BoundSocket === 'function'

/** Worker → primary: the worker is ready for its slot's socket. */
export const SOCKET_REQUEST = 'edge:socket-request'
/** Primary → worker, with the socket as the message's handle. */
export const SOCKET_GRANT = 'edge:socket'
/** Worker → primary, once it serves: `{ port }`, with its listening socket when the grant said `keep`. */
export const WORKER_LISTENING = 'edge:listening'
/** How long a worker waits for its socket before failing its start. */
const GRANT_TIMEOUT_MS = 10_000

/** A raw listening handle, as node:child_process passes it (`net.Native`): the primary never polls it. */
interface RawHandle { close: () => void }

export interface SlotSockets {
  /** The port every slot's socket is bound to (the configured one, or the one port 0 picked). */
  readonly port: number
  /**
   * Sends slot `index`'s socket to `worker`: the bound socket itself the first time (the worker
   * sends its listening handle back, `keep` is true), the primary's duplicate after that.
   * A slot whose socket was handed out and never came back is bound again.
   * @returns false when that bind or the send failed.
   */
  give: (index: number, worker: Worker) => boolean
  /** Keeps the listening handle a worker sent back for slot `index`. */
  keep: (index: number, handle: unknown) => void
  /** Closes every socket the primary still holds (the workers close their own). */
  close: () => void
}

type Slot = { bound: net.BoundSocket } | { held: RawHandle } | { gone: true }

/**
 * Binds `count` sockets to `host`:`port` with SO_REUSEPORT (port 0: the first one picks the port and
 * the others join it). A host name is resolved once, to its first address, as `server.listen` does.
 * @throws the bind error (EADDRINUSE, EACCES, ENOTSUP where the platform has no SO_REUSEPORT balancing).
 */
export async function bindSlotSockets (host: string, port: number, count: number): Promise<SlotSockets> {
  if (BoundSocket === undefined) throw new Error('this Node.js has no net.BoundSocket (Node 24.19 or later has it)')
  const address = net.isIP(host) !== 0 ? host : (await lookup(host)).address
  const slots: Slot[] = []
  try {
    let bindPort = port
    for (let i = 0; i < count; i++) {
      const bound = new BoundSocket({ host: address, port: bindPort, reusePort: true })
      bindPort = bound.address().port
      slots.push({ bound })
    }
  } catch (err) {
    for (const s of slots) if ('bound' in s) s.bound.close()
    throw err
  }
  const first = slots[0]
  const boundPort = first !== undefined && 'bound' in first ? first.bound.address().port : port
  let closed = false
  return {
    port: boundPort,
    give: (index, worker) => {
      let slot = slots[index]
      if (slot === undefined || closed) return false
      if ('gone' in slot) {
        // Its first worker died before sending its socket back: bind the slot again (this fails for
        // a port below 1024 once the primary dropped root).
        try {
          slot = slots[index] = { bound: new BoundSocket({ host: address, port: boundPort, reusePort: true }) }
        } catch {
          return false
        }
      }
      const keep = 'bound' in slot
      try {
        // A BoundSocket is transferred (node:child_process closes the primary's copy once the worker
        // has it); a raw handle is duplicated into the worker and stays open here.
        worker.send({ type: SOCKET_GRANT, keep }, ('bound' in slot ? slot.bound : slot.held) as unknown as Socket)
      } catch {
        return false
      }
      if (keep) slots[index] = { gone: true }
      return true
    },
    keep: (index, handle) => {
      const slot = slots[index]
      if (typeof (handle as RawHandle | null)?.close !== 'function') return
      if (closed || slot === undefined) {
        (handle as RawHandle).close()
        return
      }
      if ('held' in slot) slot.held.close()
      slots[index] = { held: handle as RawHandle }
    },
    close: () => {
      closed = true
      for (const [i, s] of slots.entries()) {
        if ('bound' in s) s.bound.close()
        else if ('held' in s) s.held.close()
        slots[i] = { gone: true }
      }
    }
  }
}

/**
 * A worker's side: asks the primary for its slot's socket and resolves it (a BoundSocket or a raw
 * listening handle, either one `server.listen(handle)` takes) and whether to send it back.
 * @throws Error when the primary does not answer within 10 s or sends no socket.
 */
export async function socketFromPrimary (): Promise<{ handle: unknown, keep: boolean }> {
  return await new Promise((resolve, reject) => {
    const done = (): void => { clearTimeout(timer); process.off('message', onMessage) }
    const onMessage = (msg: unknown, handle: unknown): void => {
      if ((msg as { type?: unknown } | null)?.type !== SOCKET_GRANT) return
      done()
      if (handle === undefined || handle === null) reject(new Error('the primary sent no listening socket'))
      else resolve({ handle, keep: (msg as { keep?: unknown }).keep === true })
    }
    const timer = setTimeout(() => { done(); reject(new Error('the primary did not send a listening socket within 10 s')) }, GRANT_TIMEOUT_MS)
    process.on('message', onMessage)
    process.send?.({ type: SOCKET_REQUEST })
  })
}

/** The listening handle of `server`, to send back to the primary (node:net keeps it in `_handle`). */
export function listeningHandle (server: Server): unknown {
  return (server as unknown as { _handle?: unknown })._handle
}
