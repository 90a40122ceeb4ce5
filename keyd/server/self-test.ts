// Start-up self-tests: known answers for the primitives keyd's custody rests on, and a pairwise
// sign/verify test for every signature algorithm. keyd refuses to serve if one fails.
import { createHash, createHmac, createCipheriv, hkdfSync, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { ALGORITHMS, signOptions, type KeyFamily } from '../algorithms.js'
import { KeydError } from '../errors.js'
import { errorMessage } from '../../lib/errors.js'

export class SelfTestError extends KeydError {
  constructor (message: string) { super('KEYD_ERR_SELF_TEST', message) }
}

export interface Kat { name: string, run: () => string, want: string }

// Published vectors: FIPS 180-2 ("abc"), RFC 4231 test case 2, RFC 5869 test case 1, and the
// GCM test case 13 of McGrew & Viega (256-bit zero key, zero IV, 16 zero bytes).
export const KATS: readonly Kat[] = [
  { name: 'SHA-256', run: () => createHash('sha256').update('abc').digest('hex'), want: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' },
  { name: 'SHA-384', run: () => createHash('sha384').update('abc').digest('hex').slice(0, 32), want: 'cb00753f45a35e8bb5a03d699ac65007' },
  { name: 'SHA-512', run: () => createHash('sha512').update('abc').digest('hex').slice(0, 32), want: 'ddaf35a193617abacc417349ae204131' },
  { name: 'HMAC-SHA-256', run: () => createHmac('sha256', 'Jefe').update('what do ya want for nothing?').digest('hex'), want: '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' },
  {
    name: 'HKDF-SHA-256',
    run: () => Buffer.from(hkdfSync('sha256', Buffer.alloc(22, 0x0b), Buffer.from('000102030405060708090a0b0c', 'hex'), Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex'), 42)).toString('hex').slice(0, 32),
    want: '3cb25f25faacd57a90434f64d0362f2a'
  },
  {
    name: 'AES-256-GCM',
    run: () => {
      const c = createCipheriv('aes-256-gcm', Buffer.alloc(32), Buffer.alloc(12))
      const ct = Buffer.concat([c.update(Buffer.alloc(16)), c.final()])
      return ct.toString('hex') + c.getAuthTag().toString('hex')
    },
    want: 'cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919'
  }
]

const PAIRWISE_KEYS: Record<KeyFamily, () => KeyObject[]> = {
  ec: () => [generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey],
  rsa: () => [generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey],
  ed25519: () => [generateKeyPairSync('ed25519').privateKey]
}

/**
 * Runs every self-test; returns how many passed and how long they took.
 * @throws SelfTestError naming the first failing test.
 */
export function runSelfTests (kats: readonly Kat[] = KATS): { tests: number, ms: number } {
  const t0 = performance.now()
  let tests = 0
  for (const k of kats) {
    let got: string
    try { got = k.run() } catch (err) { throw new SelfTestError(`self-test ${k.name} threw: ${errorMessage(err)}`) }
    if (got !== k.want) throw new SelfTestError(`self-test ${k.name}: wrong answer`)
    tests++
  }
  const keys = { ec: PAIRWISE_KEYS.ec(), rsa: PAIRWISE_KEYS.rsa(), ed25519: PAIRWISE_KEYS.ed25519() }
  const msg = Buffer.from('keyedge keyd pairwise consistency test')
  const other = Buffer.from('keyedge keyd pairwise consistency tesT')
  for (const alg of ALGORITHMS.values()) {
    for (const key of keys[alg.family]) {
      for (const p1363 of alg.family === 'ec' ? [false, true] : [false]) {
        const opts = signOptions(alg, p1363)
        const sig = sign(alg.hash, msg, { key, ...opts })
        if (!verify(alg.hash, msg, { key, ...opts }, sig)) throw new SelfTestError(`self-test ${alg.name}: a fresh signature does not verify`)
        if (verify(alg.hash, other, { key, ...opts }, sig)) throw new SelfTestError(`self-test ${alg.name}: a signature verifies over another message`)
        tests++
      }
    }
  }
  return { tests, ms: Math.round(performance.now() - t0) }
}
