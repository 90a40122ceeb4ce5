// Hostile keyd clients for the robustness tests: a pipelining client that never reads its answers,
// many connections holding unfinished frames, and the RSS of the keyd process they aim at.
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { readFileSync } from 'node:fs'
import { Op, Tag, encodeFrame, itemStr, itemBytes } from '../../keyd/protocol/codec.js'
import { secretBytes } from '../../lib/secret-file.js'
import { errorCode } from '../../lib/errors.js'

/** Resident set size of `pid` in bytes (VmRSS). */
export function rssBytes (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (m === null) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1]) * 1024
}

/** A HELLO frame for client `name` with the secret in `secretFile`. */
export function helloFrame (name: string, secretFile: string): Buffer {
  return encodeFrame(Op.HELLO, 1, [itemStr(Tag.CLIENT_NAME, name), itemBytes(Tag.CLIENT_SECRET, secretBytes(readFileSync(secretFile)))])
}

/**
 * Connects to the unix socket `path`. EAGAIN means its listen backlog is full (more than 511
 * connections not yet accepted, e.g. two batches of 300 opened back to back while keyd is busy):
 * like any client, retry until `deadlineMs` has passed.
 */
export async function openSocket (path: string, deadlineMs = 10_000): Promise<Socket> {
  const until = Date.now() + deadlineMs
  for (;;) {
    const s = connect(path)
    s.on('error', () => {})
    try {
      await once(s, 'connect')
      return s
    } catch (err) {
      s.destroy()
      if (errorCode(err) !== 'EAGAIN' || Date.now() > until) throw err
      await delay(10)
    }
  }
}

/**
 * Authenticates as `name`, then writes `frames` (built once, sent over and over) as fast as keyd
 * reads them, never reading an answer, until `ms` have passed. Returns the bytes keyd accepted.
 */
export async function pipelineWithoutReading (path: string, name: string, secretFile: string, frames: Buffer, ms: number): Promise<{ sentBytes: number, socket: Socket, closed: Promise<void> }> {
  const s = await openSocket(path)
  const gone = new Promise<void>(resolve => s.once('close', () => resolve()))
  s.write(helloFrame(name, secretFile))
  let sentBytes = 0
  const until = Date.now() + ms
  const closed = gone.then(() => false)
  const timeout = new Promise<boolean>(resolve => setTimeout(() => resolve(false), ms).unref())
  while (Date.now() < until && !s.destroyed) {
    sentBytes += frames.length
    if (!s.write(frames)) {
      // keyd stopped reading (or closed): wait for it to read again, up to the deadline.
      const drained = new Promise<boolean>(resolve => s.once('drain', () => resolve(true)))
      if (!await Promise.race([drained, closed, timeout])) break
    }
  }
  return { sentBytes, socket: s, closed: gone }
}

export interface HeldConnection { socket: Socket, closed: Promise<void>, received: () => Buffer }

/**
 * `count` connections that each send the first `sendBytes` of a frame declaring `frameBytes`, after
 * a HELLO if `hello` is given. They read what keyd answers (kept for `received`) so its close is seen.
 */
export async function unfinishedFrames (path: string, count: number, frameBytes: number, sendBytes: number, hello?: Buffer): Promise<HeldConnection[]> {
  const head = Buffer.alloc(12)
  head.writeUInt32BE(frameBytes - 4, 0)
  head[4] = 1
  head[5] = Op.PING
  const body = Buffer.concat([head, Buffer.alloc(sendBytes - 12, 0x41)])
  return await Promise.all(Array.from({ length: count }, async () => {
    const socket = await openSocket(path)
    const chunks: Buffer[] = []
    socket.on('data', (b: Buffer) => chunks.push(b))
    const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
    if (hello !== undefined) socket.write(hello)
    socket.write(body)
    return { socket, closed, received: () => Buffer.concat(chunks) }
  }))
}
