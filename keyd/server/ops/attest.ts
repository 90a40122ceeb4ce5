// KEY_ATTEST and ATTESTATION_KEY (admin): statements about a key version signed by keyd's own
// Ed25519 attestation key, and that key's public half to check them with.
import { Op, ErrorCode } from '../../protocol/spec.js'
import { decodeKeyAttestRequest, encodeKeyAttestResponse, encodeAttestationKeyResponse } from '../../protocol/messages.js'
import { signStatement, spkiFingerprint, type AttestationStatement } from '../../protocol/attestation.js'
import type { ItemMap, Item } from '../../protocol/codec.js'
import { ALGORITHMS, keyFamily } from '../../algorithms.js'
import { Refusal } from '../../errors.js'
import { findKey, custodyKeys } from '../keys.js'
import type { OpContext, OpEntry } from '../context.js'

/** KEY_ATTEST: a statement about one key version, signed by keyd's attestation key. */
function keyAttest (ctx: OpContext, items: ItemMap): Item[] {
  const req = decodeKeyAttestRequest(items)
  const { info, version } = findKey(ctx, req.name, req.version ?? 0, 'read')
  const att = custodyKeys(ctx).get('attestation')
  const pub = ctx.keystore.publicKey(info.name, version)
  if (pub === undefined) throw new Refusal(ErrorCode.KEY_NOT_FOUND, `key ${info.name} version ${version} not found`)
  const rule = ctx.policy?.rule(info.name)
  const family = keyFamily(info.type)
  const statement: AttestationStatement = {
    format: 'keyedge-attestation-v1',
    keyId: info.name,
    version: pub.version,
    type: info.type,
    spki: pub.key.export({ format: 'der', type: 'spki' }).toString('base64'),
    spkiSha256: spkiFingerprint(pub.key),
    origin: info.origin,
    exportable: false,
    usage: info.usage,
    state: info.state ?? 'enabled',
    policy: {
      usage: info.usage,
      tlsMessageStructure: info.usage === 'tls-server',
      clients: rule?.clients ?? ['*'],
      algorithms: rule?.algorithms ?? [...ALGORITHMS.values()].filter(a => a.family === family).map(a => a.name),
      rateLimit: rule?.rateLimit ?? null,
      signGraceSeconds: info.signGraceSeconds ?? null
    },
    keyCreatedAt: info.createdAt,
    versionCreatedAt: info.versions.find(v => v.version === pub.version)?.createdAt ?? info.createdAt,
    keystore: ctx.keystore.kind,
    attestationKeySha256: spkiFingerprint(att.publicKey),
    issuedAt: new Date().toISOString()
  }
  const doc = signStatement(statement, att.privateKey)
  return encodeKeyAttestResponse({ name: info.name, version: pub.version, statement: JSON.stringify(doc) })
}

export const attestOps: OpEntry[] = [
  { op: Op.KEY_ATTEST, right: 'admin', handle: keyAttest },
  {
    op: Op.ATTESTATION_KEY,
    right: 'admin',
    handle: ctx => encodeAttestationKeyResponse({ publicKey: custodyKeys(ctx).get('attestation').publicKey.export({ format: 'der', type: 'spki' }) })
  }
]
