// `keyedge keyd backup export|restore`: moves an encrypted bundle to and from keyd's admin socket in chunks.
// keyd builds and opens the bundle; this side only ever holds ciphertext (and the passphrase or shares it forwards).
// Usage texts: keyd-help.ts.
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { Op, Tag, itemStr, itemBytes, readStr } from '../../keyd/protocol/codec.js'
import type { KeydClient } from '../../keyd/client/client.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { parseBundle, BACKUP_DEFAULTS, type BundleWrap } from '../../keyd/backup/index.js'
import { BackupError } from '../../keyd/errors.js'

export interface BackupCommandValues {
  in?: string
  out?: string
  'passphrase-file'?: string
  shares?: string
  threshold?: string
  share?: string[]
}

/** A command-line mistake: exit code 2. */
export class BackupUsageError extends Error {}

function readPassphrase (file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
}

async function call (c: KeydClient, op: number, req: Record<string, unknown>, chunk?: Uint8Array): Promise<{ json: Record<string, unknown>, payload: Buffer }> {
  const items = [itemStr(Tag.JSON, JSON.stringify(req))]
  if (chunk !== undefined) items.push(itemBytes(Tag.PAYLOAD, chunk))
  const r = await c.request(op, items)
  return { json: JSON.parse(readStr(r, Tag.JSON) ?? '{}') as Record<string, unknown>, payload: Buffer.from(r.get(Tag.PAYLOAD) ?? []) }
}

/** `backup export`: asks keyd for a bundle, fetches it chunk by chunk, checks its SHA-256 and writes it 0600. */
export async function backupExport (c: KeydClient, v: BackupCommandValues): Promise<number> {
  if (v.out === undefined) throw new BackupUsageError('backup export needs --out FILE')
  let req: Record<string, unknown>
  if (v['passphrase-file'] !== undefined && v.shares === undefined) {
    req = { wrap: 'passphrase', passphrase: readPassphrase(v['passphrase-file']) }
  } else if (v.shares !== undefined && v.threshold !== undefined && v['passphrase-file'] === undefined) {
    req = { wrap: 'shamir', shares: Number(v.shares), threshold: Number(v.threshold) }
  } else {
    throw new BackupUsageError('backup export needs either --passphrase-file F or --shares N --threshold M')
  }
  const first = await call(c, Op.BACKUP_EXPORT, req)
  const head = first.json as { transfer: string, size: number, sha256: string, keys: number, versions: number, policy: boolean, unreadable: number, shares?: string[] }
  const chunks = [first.payload]
  let got = first.payload.length
  while (got < head.size) {
    const next = await call(c, Op.BACKUP_EXPORT, { transfer: head.transfer, offset: got })
    if (next.payload.length === 0) break
    chunks.push(next.payload)
    got += next.payload.length
  }
  const bundle = Buffer.concat(chunks)
  if (bundle.length !== head.size || createHash('sha256').update(bundle).digest('hex') !== head.sha256) {
    throw new BackupError('KEYD_ERR_BACKUP_BAD_REQUEST', 'the bundle received does not match the size and SHA-256 keyd announced; nothing written')
  }
  writeFileAtomic(v.out, bundle, 0o600)
  process.stdout.write(`backup written to ${v.out}: ${head.keys} keys, ${head.versions} versions, policy.json ${head.policy ? 'included' : 'absent'}; ${bundle.length} bytes, sha256 ${head.sha256}\n`)
  if (head.unreadable > 0) process.stderr.write(`WARNING: ${head.unreadable} key file(s) did not open when keyd started and are NOT in this bundle (see keyd's log: "keyd could not open a key file")\n`)
  if (head.shares !== undefined) {
    process.stdout.write(`\nThe bundle's key is split into ${head.shares.length} shares; any ${String(req.threshold)} restore it.\n` +
      'Give each share to a different person now: they are shown once and stored nowhere.\n\n' +
      head.shares.map((s, i) => `share ${i + 1}: ${s}\n`).join(''))
  }
  return 0
}

/** Up to `max` non-empty lines from a stream (shares typed or piped), or every line until EOF. */
async function readLines (stream: NodeJS.ReadableStream, max: number | undefined): Promise<string[]> {
  let text = ''
  const lines = (): string[] => text.split('\n').map(l => l.trim()).filter(l => l !== '')
  for await (const chunk of stream) {
    text += String(chunk)
    if (max !== undefined && text.endsWith('\n') && lines().length >= max) break
  }
  return max === undefined ? lines() : lines().slice(0, max)
}

/** The bundle's wrap from its cleartext header, or undefined if it does not parse (keyd then says why). */
function wrapOf (bytes: Buffer): BundleWrap | undefined {
  try { return parseBundle(bytes).header.wrap } catch { return undefined }
}

/** `backup restore`: uploads the bundle in chunks, then commits with the passphrase or the shares. */
export async function backupRestore (c: KeydClient, v: BackupCommandValues, stdin: NodeJS.ReadableStream = process.stdin): Promise<number> {
  if (v.in === undefined) throw new BackupUsageError('backup restore needs --in FILE')
  const bytes = readFileSync(v.in)
  let credentials: Record<string, unknown>
  if (v['passphrase-file'] !== undefined) {
    credentials = { passphrase: readPassphrase(v['passphrase-file']) }
  } else if (v.share !== undefined && v.share.length > 0) {
    credentials = { shares: v.share }
  } else {
    const wrap = wrapOf(bytes)
    if (wrap?.kind === 'passphrase') throw new BackupUsageError('this bundle is sealed by a passphrase: give --passphrase-file F')
    if (wrap !== undefined) process.stderr.write(`type ${wrap.threshold} shares, one a line:\n`)
    credentials = { shares: await readLines(stdin, wrap?.threshold) }
  }
  const step = BACKUP_DEFAULTS.chunkBytes
  let transfer: string | undefined
  let offset = 0
  do {
    const chunk = bytes.subarray(offset, offset + step)
    const r = await call(c, Op.BACKUP_RESTORE, transfer === undefined ? { offset, size: bytes.length } : { transfer, offset }, chunk)
    transfer = r.json.transfer as string
    offset += chunk.length
  } while (offset < bytes.length)
  const done = (await call(c, Op.BACKUP_RESTORE, { transfer, commit: true, ...credentials })).json as { keys: number, versions: number, policy: string }
  process.stdout.write(`restored ${done.keys} keys (${done.versions} versions), each re-sealed under this keyd's master key; policy.json: ${done.policy}\n`)
  return 0
}
