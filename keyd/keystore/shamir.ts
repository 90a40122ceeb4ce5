// Shamir's secret sharing over GF(2^8): split the master key into n shares, any m of which rebuild it.
import { randomBytes, createHash } from 'node:crypto'
import { KeystoreError } from '../errors.js'

/** bytes[i], for an index the arithmetic keeps in range (a RangeError if a bug ever breaks that). */
function byteAt (bytes: Uint8Array, i: number): number {
  const v = bytes[i]
  if (v === undefined) throw new RangeError(`byte index ${i} out of range (length ${bytes.length})`)
  return v
}

// log/exp tables for GF(256) with the AES polynomial x^8+x^4+x^3+x+1 and generator 3.
const EXP = new Uint8Array(512)
const LOG = new Uint8Array(256)
{
  let x = 1
  for (let i = 0; i < 255; i++) {
    EXP[i] = x
    LOG[x] = i
    x ^= (x << 1) ^ ((x & 0x80) !== 0 ? 0x11b : 0)
    x &= 0xff
  }
  for (let i = 255; i < 512; i++) EXP[i] = byteAt(EXP, i - 255)
}

function mul (a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : byteAt(EXP, byteAt(LOG, a) + byteAt(LOG, b))
}
function div (a: number, b: number): number {
  return a === 0 ? 0 : byteAt(EXP, byteAt(LOG, a) + 255 - byteAt(LOG, b))
}

export interface Share { x: number, y: Buffer }

/** Splits `secret` into `n` shares with threshold `m` (2 ≤ m ≤ n ≤ 255). */
export function split (secret: Uint8Array, n: number, m: number): Share[] {
  if (!Number.isInteger(n) || !Number.isInteger(m) || m < 2 || n < m || n > 255) throw new RangeError('shares: need 2 <= threshold <= shares <= 255')
  const shares = Array.from({ length: n }, (_, i) => ({ x: i + 1, y: Buffer.alloc(secret.length) }))
  for (let b = 0; b < secret.length; b++) {
    const coeffs = Buffer.concat([Buffer.of(byteAt(secret, b)), randomBytes(m - 1)])
    for (const s of shares) {
      // Horner's rule: f(x) = c0 + x(c1 + x(c2 + ...))
      let y = 0
      for (let k = m - 1; k >= 0; k--) y = mul(y, s.x) ^ byteAt(coeffs, k)
      s.y[b] = y
    }
    coeffs.fill(0)
  }
  return shares
}

/**
 * Rebuilds the secret from at least threshold distinct shares (Lagrange interpolation at 0).
 * @throws KeystoreError KEYD_ERR_BAD_SHARE when the shares differ in length (not from one split)
 */
export function combine (shares: Share[]): Buffer {
  const first = shares[0]
  if (first === undefined) throw new RangeError('combine: no shares')
  const len = first.y.length
  if (shares.some(s => s.y.length !== len)) throw new KeystoreError('KEYD_ERR_BAD_SHARE', 'the shares differ in length: they are not shares of one secret')
  const out = Buffer.alloc(len)
  for (let b = 0; b < len; b++) {
    let acc = 0
    for (const si of shares) {
      let num = 1
      let den = 1
      for (const sj of shares) {
        if (sj.x === si.x) continue
        num = mul(num, sj.x)
        den = mul(den, sj.x ^ si.x)
      }
      acc ^= mul(byteAt(si.y, b), div(num, den))
    }
    out[b] = acc
  }
  return out
}

function checksum (x: number, y: Buffer): string {
  return createHash('sha256').update(Buffer.of(x)).update(y).digest('hex').slice(0, 8)
}

/** Text form of a share: `ks1-<x>-<hex>-<checksum>`, so a mistyped share is caught before use. */
export function encodeShare (s: Share): string {
  return `ks1-${s.x}-${s.y.toString('hex')}-${checksum(s.x, s.y)}`
}

/** @throws KeystoreError KEYD_ERR_BAD_SHARE for anything that is not a well-formed share. */
export function decodeShare (text: string): Share {
  const [, xText, hex, sum] = /^ks1-(\d{1,3})-([0-9a-f]{2,512})-([0-9a-f]{8})$/.exec(text.trim()) ?? []
  if (xText === undefined || hex === undefined || sum === undefined) throw new KeystoreError('KEYD_ERR_BAD_SHARE', 'not a keyedge share (expected ks1-<n>-<hex>-<checksum>)')
  const x = Number(xText)
  const y = Buffer.from(hex, 'hex')
  if (x < 1 || x > 255 || checksum(x, y) !== sum) throw new KeystoreError('KEYD_ERR_BAD_SHARE', 'share checksum does not match: mistyped or damaged share')
  return { x, y }
}
