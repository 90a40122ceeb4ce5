// Backup test helpers: run `keyedge keyd …` to completion, and sign/verify with a key of any type and usage.
import { execFile } from 'node:child_process'
import { verify, constants, type KeyObject } from 'node:crypto'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { open } from '../../keyd/keystore/aead.js'
import type { KeydClient } from '../../keyd/client/client.js'
import { Op, Tag, itemStr, itemBytes, readStr } from '../../keyd/protocol/codec.js'
import { CLI } from './paths.js'
import { tls13Input } from './tls-inputs.js'

/** Runs the CLI with `env` added and `input` on stdin; resolves with its exit code and output. */
export async function runCli (args: string[], env: Record<string, string>, input = ''): Promise<{ code: number, out: string, err: string }> {
  return await new Promise(resolve => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), out: stdout, err: stderr })
    })
    child.stdin?.end(input)
  })
}

/** An algorithm each key type signs with. */
export function algFor (type: string): string {
  return type.startsWith('rsa') ? 'rsa-pss-sha256' : type === 'ed25519' ? 'ed25519' : type === 'ec-p384' ? 'ecdsa-sha384' : 'ecdsa-sha256'
}

/** Signs a message the key's usage allows with `client` and verifies it against `publicKey`. */
export async function signsFor (client: KeydClient, name: string, version: number, type: string, usage: string, publicKey: KeyObject): Promise<boolean> {
  const msg = usage === 'tls-server' ? tls13Input() : Buffer.from(`backup test ${name} v${version}`)
  const alg = algFor(type)
  const { signature } = await client.sign(name, alg, msg, { version })
  const hash = alg === 'ed25519' ? null : alg.endsWith('384') ? 'sha384' : 'sha256'
  const opts = type.startsWith('rsa') ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : { key: publicKey }
  return verify(hash, msg, opts, signature)
}

/** Every private key of a development-mode home, opened with its master.key (PKCS#8 DER): what a bundle must never show. */
export function devPrivateKeys (home: string): Buffer[] {
  const master = Buffer.from(readFileSync(join(home, 'keyd', 'master.key'), 'utf8').trim(), 'hex')
  const out: Buffer[] = []
  const dir = join(home, 'keyd', 'keys')
  for (const f of readdirSync(dir).filter(f => f.endsWith('.json'))) {
    const k = JSON.parse(readFileSync(join(dir, f), 'utf8'))
    for (const v of k.versions) {
      if (v.privateKey !== undefined) out.push(open(master, v.privateKey, `keyedge-key-v1|${k.name as string}|${v.version as number}|${k.type as string}`))
    }
  }
  return out
}

/** The shares `backup export --shares` printed. */
export function printedShares (out: string): string[] {
  return [...out.matchAll(/share \d+: (ks1-\S+)/g)].flatMap(m => m[1] ?? [])
}

/**
 * A restore straight over the protocol (what `backup restore` does, without a process): uploads `bytes`
 * in 512 KiB chunks, calls `onCommit` just before the commit request, and returns keyd's answer.
 * @throws KeydRemoteError with keyd's refusal
 */
export async function wireRestore (c: KeydClient, bytes: Buffer, credentials: Record<string, unknown>, onCommit?: () => void): Promise<Record<string, unknown>> {
  const step = 512 * 1024
  let transfer: string | undefined
  let offset = 0
  do {
    const chunk = bytes.subarray(offset, offset + step)
    const req = transfer === undefined ? { offset, size: bytes.length } : { transfer, offset }
    const r = await c.request(Op.BACKUP_RESTORE, [itemStr(Tag.JSON, JSON.stringify(req)), itemBytes(Tag.PAYLOAD, chunk)])
    transfer = JSON.parse(readStr(r, Tag.JSON) ?? '{}').transfer
    offset += chunk.length
  } while (offset < bytes.length)
  onCommit?.()
  const r = await c.request(Op.BACKUP_RESTORE, [itemStr(Tag.JSON, JSON.stringify({ transfer, commit: true, ...credentials }))])
  return JSON.parse(readStr(r, Tag.JSON) ?? '{}')
}
