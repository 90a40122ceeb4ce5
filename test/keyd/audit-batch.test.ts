// A SIGN_BATCH is audited entry by entry: each signature's key, message hash and outcome, as if sent alone.
import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { tls13Input } from '../helpers/tls-inputs.js'

const keyd = await startKeyd()
await keyd.admin.createKey('ab-tok', 'ec-p256', 'token-sign')
await keyd.admin.createKey('ab-tls', 'ec-p256', 'tls-server')
const proxy = keyd.client('proxy')
const jwt = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0')
await proxy.signBatch([
  { name: 'ab-tok', algorithm: 'ecdsa-sha256', message: jwt },
  { name: 'ab-tls', algorithm: 'ecdsa-sha256', message: jwt },
  { name: 'ab-tls', algorithm: 'ecdsa-sha256', message: tls13Input() }
])
proxy.close()
await keyd.stop()

const entries = readFileSync(join(keyd.paths.keydDir, 'audit.log'), 'utf8').trim().split('\n').map(l => JSON.parse(l)).filter(e => e.op === 'SIGN_BATCH')
t.equal(entries.length, 3, 'one audit entry per batch entry')
t.match(entries[0], { key: 'ab-tok', result: 'ok', msgSha256: createHash('sha256').update(jwt).digest('hex') })
t.match(entries[1], { key: 'ab-tls', result: 'POLICY_DENIED_MESSAGE' })
t.match(entries[2], { key: 'ab-tls', result: 'ok' })
