// kill -9 at random moments while keys are created and signatures audited: the store always reopens
// consistent (every key file opens, every listed key signs) and the audit log always verifies.
import t from 'tap'
import { execFile } from 'node:child_process'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome, CLI } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'

const ROUNDS = 10
const home = tempHome()
let created = 0

async function auditVerify (): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, 'keyd', 'audit', 'verify', '--dev'], { env: { ...process.env, KEYEDGE_HOME: home } }, (err, stdout) => {
      resolve({ code: err === null ? 0 : (err.code as number), out: stdout })
    })
  })
}

for (let round = 0; round < ROUNDS; round++) {
  const keyd = await startKeyd(home)
  t.notOk(keyd.lines.some(l => l.includes('could not open a key file')), `round ${round}: every key file opens`)
  const keys = await keyd.admin.listKeys()
  t.ok(keys.length >= created, `round ${round}: ${keys.length} keys, at least the ${created} acknowledged`)
  const proxy = keyd.client('proxy')
  for (const k of keys) {
    const msg = k.usage === 'tls-server' ? tls13Input() : Buffer.from('x')
    const alg = k.type.startsWith('rsa') ? 'rsa-pss-sha256' : 'ecdsa-sha256'
    const { signature } = await proxy.sign(k.name, alg, msg)
    if (signature.length === 0) t.fail(`${k.name} did not sign`)
  }
  // Work in flight when the kill lands: key creation (file writes) and audited signatures.
  const work = (async () => {
    for (let i = 0; ; i++) {
      await keyd.admin.createKey(`r${round}-${i}`, i % 2 === 0 ? 'ec-p256' : 'rsa-2048', 'tls-server')
      created = keys.length + i + 1
      await Promise.all(Array.from({ length: 20 }, async () => await proxy.sign(`r${round}-${i}`, i % 2 === 0 ? 'ecdsa-sha256' : 'rsa-pss-sha256', tls13Input())))
    }
  })().catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 20 + Math.floor(Math.random() * 250)))
  await keyd.stop('SIGKILL')
  await work
  proxy.close()
  const verify = await auditVerify()
  t.equal(verify.code, 0, `round ${round}: audit log verifies after kill -9: ${verify.out.trim()}`)
}
