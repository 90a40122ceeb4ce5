// How the front's bytes reach Node's TLS socket: in pieces smaller than the first buffer of the
// connection's TLS input (Node's NodeBIO `enc_in`, 1 KiB on a server), so that buffer is never
// filled whole while the ClientHello is fed to it.
//
// Why: a TLS socket built on a socket that already holds data receives that data with
// `socket.read()` in its first tick (Node's `initRead`); in paused mode that is every byte at once,
// one chunk. Node sizes the input BIO's first buffer to the chunk (max(1 KiB, chunk)); a chunk that
// fills it exactly makes the BIO allocate a 16 KiB "throughput" buffer at once, and the BIO keeps
// its two newest buffers for the connection's whole life. A ClientHello over 1 KiB is what every
// client offering a post-quantum hybrid key share sends (X25519MLKEM768, the default of OpenSSL
// 3.5, Node 24, current browsers and curl): 1.2-1.9 KiB. Fed whole, each such connection kept
// 16 KiB of native memory for nothing (measured: 57.2 → 41.2 KiB of live malloc per idle HTTP/1.1
// connection). In pieces, OpenSSL drains each one before the next arrives and the first 1 KiB
// buffer is reused from its start.
//
// Only a flight that starts like TLS is split (a handshake record, major version 3). Node feeds
// every piece in the same tick, even after OpenSSL refused an earlier one, and OpenSSL refuses a
// first record that does not look like TLS (a record version other than 3.x, an HTTP request)
// without an alert and without entering its error state: fed the next piece, it would go on with
// the handshake (measured: a ClientHello whose record says version 4.0 got a ServerHello in two
// pieces, nothing in one). Anything else goes whole, exactly as before.

import { Socket } from 'node:net'

/** Bytes per piece: below Node's 1 KiB first input buffer, so that no piece fills it. */
export const HAND_OVER_PIECE = 1000

const HANDSHAKE_RECORD = 22
const TLS_MAJOR = 3

/**
 * Whether `bytes` (a connection's first bytes) are handed over in pieces: over one piece, and
 * starting with a handshake record of major version 3, which OpenSSL's first-record check accepts.
 */
export function splitsInPieces (bytes: Buffer): boolean {
  return bytes.length > HAND_OVER_PIECE && bytes[0] === HANDSHAKE_RECORD && bytes[1] === TLS_MAJOR
}

/** Node's own read on `socket`, past the patch below. */
function protoRead (socket: Socket, size?: number): Buffer | null {
  return Socket.prototype.read.call(socket, size) as Buffer | null
}

/**
 * Makes the next argument-less `socket.read()` calls return the buffered bytes in pieces of at most
 * HAND_OVER_PIECE bytes; once the buffer is empty the socket's own `read` is back (that call and
 * every later one behave exactly as Node's). Call it just before handing `socket` (paused, bytes
 * unshifted) to a TLS server, when `splitsInPieces` says so. `read(n)` with a size is never changed.
 */
export function readInPieces (socket: Socket): void {
  socket.read = function piecewise (this: Socket, size?: number): Buffer | null {
    if (size !== undefined) return protoRead(this, size)
    const buffered = this.readableLength
    if (buffered === 0) {
      // Nothing left to split: Node's own read from here on (it may start the handle's reading).
      delete (this as Partial<Socket>).read
      return protoRead(this)
    }
    return protoRead(this, Math.min(buffered, HAND_OVER_PIECE))
  }
}
