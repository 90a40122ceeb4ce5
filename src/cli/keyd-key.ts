// `keyedge keyd key …` lifecycle commands: every one goes through keyd's admin socket except the two
// offline helpers (`key wrap`, `key verify-attestation`), which only read public keys and files.
import { readFileSync, writeFileSync } from 'node:fs'
import { createPublicKey } from 'node:crypto'
import type { KeydClient } from '../../keyd/client/client.js'
import { pemToPkcs8, wrapForImport, encodeBundle, decodeBundle } from '../../keyd/keystore/key-import.js'
import { verifyAttestation } from '../../keyd/protocol/attestation.js'

export const KEY_USAGE = `key commands (all through keyd's admin socket, except wrap and verify-attestation):
  key create --name N --type T [--usage U]      generate a key inside keyd
  key list                                      name, type, versions, usage, state, origin, created, SHA-256 SPKI fingerprint
  key show --name N                             JSON detail, every version (also for a destroyed key's tombstone)
  key public --name N [--version V] [--format pem|jwk]
  key rotate --name N [--grace-seconds S|unlimited]
                                                new current version; older ones keep verifying and may sign for
                                                S seconds after the rotation (then KEY_VERSION_RETIRED); unset = no limit
  key disable --name N | key enable --name N    a disabled key refuses SIGN with KEY_DISABLED
  key destroy --name N --yes                    remove every private key of N for good (a tombstone keeps the name)
  key import --name N --file key.pem [--usage U]
                                                migrate an existing private key (marked origin: imported forever)
  key import --name N --wrapped BUNDLE [--usage U]
                                                bring-your-own-key: a bundle made by "key wrap", unwrapped inside keyd
  key wrapping-key [--out F]                    keyd's RSA-OAEP (SHA-256) wrapping public key, PEM
  key wrap --wrapping-key pub.pem --in key.pem --out BUNDLE
                                                operator side (offline): AES-256 key under RSA-OAEP, private key under
                                                RFC 5649 AES key wrap with padding; base64(RSA ciphertext || KWP)
  key attest --name N [--version V] [--out F]   attestation statement signed by keyd's Ed25519 attestation key
  key attestation-key [--out F]                 keyd's attestation public key, PEM
  key verify-attestation --in F [--attestation-key pem]
                                                check a statement offline (or against the running keyd's key)
`

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
