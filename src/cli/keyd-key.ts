// `keyedge keyd key …` lifecycle commands: every one goes through keyd's admin socket except the two
// offline helpers (`key wrap`, `key verify-attestation`), which only read public keys and files.
// Their usage texts are in keyd-help.ts.
import { readFileSync, writeFileSync } from 'node:fs'
import { createPublicKey } from 'node:crypto'
import type { KeydClient } from '../../keyd/client/client.js'
import { pemToPkcs8, wrapForImport, encodeBundle, decodeBundle } from '../../keyd/keystore/key-import.js'
import { verifyAttestation } from '../../keyd/protocol/attestation.js'
import { encodeKeyReference } from '../../keyd/protocol/codec.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'

export interface KeyCommandValues {
  name?: string
  type?: string
  usage?: string
  version?: string
  format?: string
  file?: string
  wrapped?: string
  in?: string
  out?: string
  'wrapping-key'?: string
  'attestation-key'?: string
  'grace-seconds'?: string
  yes?: boolean
}

/** A command-line mistake: exit code 2. */
export class KeyUsageError extends Error {}

function required (v: string | undefined, what: string): string {
  if (v === undefined || v === '') throw new KeyUsageError(what)
  return v
}

function version (v: string | undefined): number {
  const n = Number(v ?? 0)
  if (!Number.isInteger(n) || n < 0) throw new KeyUsageError('--version must be a whole number (0 = current)')
  return n
}

function emit (text: string, out: string | undefined): void {
  if (out === undefined) process.stdout.write(text)
  else writeFileSync(out, text, { mode: 0o644 })
}

/** Commands that need no keyd: true if `cmd` is one of them. */
export function isOfflineKeyCommand (cmd: string, v: KeyCommandValues): boolean {
  return cmd === 'key wrap' || (cmd === 'key verify-attestation' && v['attestation-key'] !== undefined)
}

/** Runs an offline key command. @returns exit code */
export function runOfflineKeyCommand (cmd: string, v: KeyCommandValues): number {
  if (cmd === 'key wrap') {
    const wrapping = createPublicKey(readFileSync(required(v['wrapping-key'], 'key wrap needs --wrapping-key (from "key wrapping-key")'), 'utf8'))
    if (wrapping.asymmetricKeyType !== 'rsa') throw new KeyUsageError('--wrapping-key must be keyd\'s RSA wrapping public key')
    const pkcs8 = pemToPkcs8(readFileSync(required(v.in, 'key wrap needs --in key.pem'), 'utf8'))
    try {
      writeFileSync(required(v.out, 'key wrap needs --out BUNDLE'), encodeBundle(wrapForImport(wrapping, pkcs8)), { mode: 0o600 })
    } finally {
      pkcs8.fill(0)
    }
    process.stdout.write(`wrapped ${v.in as string} into ${v.out as string}\n`)
    return 0
  }
  const doc = JSON.parse(readFileSync(required(v.in, 'key verify-attestation needs --in statement.json'), 'utf8')) as unknown
  const key = createPublicKey(readFileSync(required(v['attestation-key'], 'key verify-attestation needs --attestation-key pem offline'), 'utf8'))
  return reportAttestation(doc, verifyAttestation(doc, key))
}

function reportAttestation (doc: unknown, ok: boolean): number {
  const s = (doc as { statement?: { keyId?: string, version?: number, origin?: string } }).statement
  process.stdout.write(ok ? `attestation OK: key ${s?.keyId ?? '?'} v${s?.version ?? '?'} origin ${s?.origin ?? '?'}\n` : 'attestation FAILED: the signature or the statement does not check\n')
  return ok ? 0 : 1
}

/** Runs a `key …` command through the admin client. @returns exit code, or undefined for an unknown command */
export async function runKeyCommand (c: KeydClient, cmd: string, v: KeyCommandValues): Promise<number | undefined> {
  switch (cmd) {
    case 'key list': {
      process.stdout.write('NAME\tTYPE\tVERSIONS\tUSAGE\tSTATE\tORIGIN\tCREATED\tSHA256 FINGERPRINT\n')
      for (const k of await c.listKeys()) {
        process.stdout.write(`${k.name}\t${k.type}\t${k.versions.length} (current v${k.currentVersion})\t${k.usage}\t${k.state}\t${k.origin}\t${k.createdAt}\t${k.fingerprint ?? '-'}\n`)
      }
      return 0
    }
    case 'key show':
      process.stdout.write(JSON.stringify(await c.keyInfo(required(v.name, 'key show needs --name')), null, 2) + '\n')
      return 0
    case 'key public': {
      const format = v.format ?? 'pem'
      if (format !== 'pem' && format !== 'jwk') throw new KeyUsageError('--format must be pem or jwk')
      const k = await c.getPublicKey(required(v.name, 'key public needs --name'), version(v.version))
      emit(format === 'pem' ? k.publicKey.export({ format: 'pem', type: 'spki' }).toString() : JSON.stringify({ ...k.publicKey.export({ format: 'jwk' }), kid: `${k.name}-v${k.version}` }) + '\n', v.out)
      return 0
    }
    case 'key rotate': {
      const g = v['grace-seconds']
      let grace: number | null | undefined
      if (g === 'unlimited') grace = null
      else if (g !== undefined) {
        grace = Number(g)
        if (!Number.isInteger(grace) || grace < 0 || grace >= 0xffffffff) throw new KeyUsageError('--grace-seconds must be a whole number of seconds or "unlimited"')
      }
      const k = await c.rotateKey(required(v.name, 'key rotate needs --name'), grace === undefined ? {} : { signGraceSeconds: grace })
      process.stdout.write(`rotated ${k.name}: v${k.version} is current\n`)
      return 0
    }
    case 'key disable':
    case 'key enable':
    case 'key destroy': {
      const action = cmd.slice(4) as 'disable' | 'enable' | 'destroy'
      const name = required(v.name, `key ${action} needs --name`)
      if (action === 'destroy' && v.yes !== true) throw new KeyUsageError(`key destroy removes every private key of ${name} for good: add --yes`)
      const k = await c.setKeyState(name, action)
      process.stdout.write(`${k.name}: ${k.state}\n`)
      return 0
    }
    case 'key import': {
      const name = required(v.name, 'key import needs --name')
      const usage = v.usage ?? 'tls-server'
      if ((v.file === undefined) === (v.wrapped === undefined)) throw new KeyUsageError('key import needs exactly one of --file key.pem or --wrapped BUNDLE')
      let k
      if (v.file !== undefined) {
        const pkcs8 = pemToPkcs8(readFileSync(v.file, 'utf8'))
        try { k = await c.importKey(name, usage, { pkcs8 }) } finally { pkcs8.fill(0) }
      } else {
        const wrapping = await c.getWrappingKey()
        k = await c.importKey(name, usage, decodeBundle(readFileSync(v.wrapped as string, 'utf8'), wrapping.bits))
      }
      process.stdout.write(`imported ${k.name} v${k.version} (${k.type}, origin imported)\n`)
      return 0
    }
    case 'key ref': {
      const ref = await keyReference(c, required(v.name, 'key ref needs --name'), version(v.version))
      if (v.out === undefined) process.stdout.write(ref.pem)
      else {
        writeFileAtomic(v.out, ref.pem, 0o644)
        process.stdout.write(`key reference for ${ref.name} v${ref.version} (${ref.type}) written to ${v.out}\n`)
      }
      return 0
    }
    case 'key wrapping-key':
      emit((await c.getWrappingKey()).publicKey.export({ format: 'pem', type: 'spki' }).toString(), v.out)
      return 0
    case 'key attestation-key':
      emit((await c.getAttestationKey()).export({ format: 'pem', type: 'spki' }).toString(), v.out)
      return 0
    case 'key attest':
      emit(JSON.stringify(await c.attestKey(required(v.name, 'key attest needs --name'), version(v.version)), null, 2) + '\n', v.out)
      return 0
    case 'key verify-attestation': {
      // Online form: no --attestation-key given, so ask the running keyd for its attestation key.
      const doc = JSON.parse(readFileSync(required(v.in, 'key verify-attestation needs --in statement.json'), 'utf8')) as unknown
      return reportAttestation(doc, verifyAttestation(doc, await c.getAttestationKey()))
    }
    default: return undefined
  }
}

/**
 * The key reference PEM of key `name`, version `version` (0 = the current one, resolved to its
 * number: a reference pins its version), from what keyd says of the key's public half.
 */
export async function keyReference (c: KeydClient, name: string, version = 0): Promise<{ name: string, version: number, type: string, pem: string }> {
  const k = await c.getPublicKey(name, version)
  return { name: k.name, version: k.version, type: k.type, pem: encodeKeyReference({ name: k.name, version: k.version, type: k.type }) }
}
