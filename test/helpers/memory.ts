// Reads a live process's memory (/proc/PID/mem) to prove a secret is, or is not, in it.
import { readFileSync, openSync, readSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { createPrivateKey } from 'node:crypto'
import { open } from '../../keyd/keystore/aead.js'

/** Recovers private-key needles (EC: d; RSA: d, p, q) of keyd key `name` from a dev-mode store, for the scan. */
export function privateNeedles (home: string, name: string): Buffer[] {
  const master = Buffer.from(readFileSync(join(home, 'keyd', 'master.key'), 'utf8').trim(), 'hex')
  const stored = JSON.parse(readFileSync(join(home, 'keyd', 'keys', `${name}.json`), 'utf8'))
  const v = stored.versions[stored.versions.length - 1]
  const der = open(master, v.privateKey, `keyedge-key-v1|${name}|${v.version as number}|${stored.type as string}`)
  return jwkNeedles(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' }))
}

/**
 * The secret parts of a private JWK as 32-byte needles, each both big-endian (DER, JWK) and
 * byte-reversed (an OpenSSL BIGNUM on a little-endian machine keeps its limbs that way).
 */
export function jwkNeedles (jwk: { d?: string, p?: string, q?: string }): Buffer[] {
  return [jwk.d, jwk.p, jwk.q].filter((s): s is string => s !== undefined).flatMap(s => {
    const be = Buffer.from(s, 'base64url')
    return [be.subarray(0, 32), Buffer.from(be.subarray(be.length - 32)).reverse()]
  })
}

/** Which needles occur anywhere in the readable memory of `pid` (regions over 2 GiB skipped). */
export function scanMemory (pid: number, needles: Buffer[]): boolean[] {
  const found = needles.map(() => false)
  const fd = openSync(`/proc/${pid}/mem`, 'r')
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (r)/.exec(line)
      if (m === null || line.includes('[vvar]') || line.includes('[vsyscall]')) continue
      const start = BigInt('0x' + m[1]); const end = BigInt('0x' + m[2])
      if (end - start > 2n ** 31n) continue
      const chunk = 8 * 1024 * 1024
      const overlap = 64
      for (let pos = start; pos < end; pos += BigInt(chunk - overlap)) {
        const len = Number(end - pos < BigInt(chunk) ? end - pos : BigInt(chunk))
        const buf = Buffer.alloc(len)
        let n = 0
        try { n = readSync(fd, buf, 0, len, pos) } catch { break }
        const view = buf.subarray(0, n)
        needles.forEach((needle, i) => { if (!found[i] && view.includes(needle)) found[i] = true })
        if (len < chunk) break
      }
    }
  } finally {
    closeSync(fd)
  }
  return found
}
