// kill -9 keyd at random moments of a restore's commit (key derivation, decryption, re-sealing, staging,
// the moves into place), round after round: it always comes back either empty, and a new restore then
// succeeds, or with every key of the bundle, each with its original public key.
import t from 'tap'
import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { startKeyd } from '../helpers/keyd.js'
import { tempHome } from '../helpers/paths.js'
import { runCli, wireRestore } from '../helpers/backup.js'
import { defined } from '../helpers/defined.js'

const ROUNDS = 8
const KEY_COUNT = 24
const PASS = { passphrase: 'crash test passphrase' }
const work = tempHome('keyedge-backup-crash-')
writeFileSync(join(work, 'pass'), PASS.passphrase + '\n')
const bundlePath = join(work, 'crash.bundle')

const src = await startKeyd(tempHome())
for (let i = 0; i < KEY_COUNT; i++) await src.admin.createKey(`k${i}`, i % 8 === 0 ? 'rsa-2048' : 'ec-p256', 'token-sign')
await src.admin.rotateKey('k0')
const exp = await runCli(['keyd', 'backup', 'export', '--out', bundlePath, '--passphrase-file', join(work, 'pass')], { KEYEDGE_HOME: src.paths.home })
t.equal(exp.code, 0, exp.err)
const bundle = readFileSync(bundlePath)
const originals = new Map<string, string>()
for (const k of await src.admin.listKeys()) {
  for (const v of k.versions) originals.set(`${k.name}@${v.version}`, (await src.admin.getPublicKey(k.name, v.version)).spki.toString('base64'))
}
await src.stop()

// Calibrate: how long the commit (the only step that writes) takes when nothing interrupts it.
const calib = await startKeyd(tempHome())
let commitSent = 0
await wireRestore(calib.admin, bundle, PASS, () => { commitSent = performance.now() })
const commitMs = performance.now() - commitSent
t.comment(`an uninterrupted commit takes ${commitMs.toFixed(0)} ms`)
await calib.stop()

const outcomes = { empty: 0, complete: 0, rolledForward: 0, rolledBack: 0 }
for (let round = 0; round < ROUNDS; round++) {
  const home = tempHome()
  const k = await startKeyd(home)
  const delay = Math.floor(commitMs * 1.1 * Math.random())
  let killed: Promise<void> | undefined
  await wireRestore(k.admin, bundle, PASS, () => {
    killed = new Promise(resolve => setTimeout(() => { k.stop('SIGKILL').then(resolve, resolve) }, delay))
  }).catch(() => {})
  await (killed ?? k.stop('SIGKILL'))
  const k2 = await startKeyd(home)
  t.notOk(k2.lines.some(l => l.includes('could not open a key file')), `round ${round}: every key file opens`)
  const recovery = k2.lines.find(l => l.includes('interrupted restore'))
  if (recovery?.includes('rolled-forward') === true) outcomes.rolledForward++
  if (recovery?.includes('rolled-back') === true) outcomes.rolledBack++
  const keys = await k2.admin.listKeys()
  t.ok(keys.length === 0 || keys.length === KEY_COUNT, `round ${round} (kill ${delay} ms into the commit): ${keys.length} keys, either none or all ${KEY_COUNT}`)
  t.notOk(existsSync(join(k2.paths.keydDir, 'restore')), `round ${round}: no staging directory left`)
  if (keys.length === 0) {
    outcomes.empty++
    t.same(await wireRestore(k2.admin, bundle, PASS), { keys: KEY_COUNT, versions: KEY_COUNT + 1, policy: 'none' }, `round ${round}: a new restore into the empty keyd succeeds`)
  } else {
    outcomes.complete++
  }
  let same = 0
  for (const [id, spki] of originals) {
    const [name, v] = id.split('@')
    if ((await k2.admin.getPublicKey(defined(name, `the key name in ${id}`), Number(v))).spki.toString('base64') === spki) same++
  }
  t.equal(same, originals.size, `round ${round}: every version is there with its original public key`)
  await k2.stop()
}
t.comment(`kill -9 outcomes: ${outcomes.empty} came back empty, ${outcomes.complete} complete; staged restores found at start: ${outcomes.rolledForward} rolled forward, ${outcomes.rolledBack} rolled back`)
