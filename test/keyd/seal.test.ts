// Sealing: Shamir shares (m of n) and passphrase; a sealed keyd refuses key operations with a clear error.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { split, combine, encodeShare, decodeShare, type Share } from '../../keyd/keystore/shamir.js'
import { homePaths } from '../../lib/home.js'
import { KeydClient } from '../../keyd/client/client.js'
import { Op, Tag, itemStr, readStr } from '../../keyd/protocol/codec.js'
import { spawnCli } from '../helpers/processes.js'
import { tempHome, CLI } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { defined } from '../helpers/defined.js'

async function cli (args: string[], env: Record<string, string>): Promise<{ code: number, out: string }> {
  return await new Promise(resolve => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), out: stdout + stderr })
    })
  })
}

t.test('split/combine: any m of n rebuild the secret, fewer do not', async t => {
  const secret = randomBytes(32)
  const shares = split(secret, 5, 3)
  const share = (i: number): Share => defined(shares[i], `share ${i + 1}`)
  for (let a = 0; a < 5; a++) {
    for (let b = a + 1; b < 5; b++) {
      for (let c = b + 1; c < 5; c++) t.same(combine([share(a), share(b), share(c)]), secret)
    }
  }
  t.notSame(combine([share(0), share(1)]), secret)
  const text = encodeShare(share(0))
  t.same(decodeShare(text), share(0))
  const typo = text.slice(0, 10) + (text[10] === 'a' ? 'b' : 'a') + text.slice(11)
  t.throws(() => decodeShare(typo), { code: 'KEYD_ERR_BAD_SHARE' })
  t.throws(() => decodeShare('hello'), { code: 'KEYD_ERR_BAD_SHARE' })
  t.throws(() => split(secret, 2, 3), RangeError)
})

t.test('a Shamir-sealed keyd refuses until the threshold of shares arrives', async t => {
  const home = tempHome()
  const env = { KEYEDGE_HOME: home }
  const init = await cli(['keyd', 'init', '--shares', '3', '--threshold', '2'], env)
  t.equal(init.code, 0, init.out)
  const shares = [...init.out.matchAll(/share \d: (ks1-\S+)/g)].map(m => defined(m[1], 'a printed share'))
  t.equal(shares.length, 3)
  const shareText = (i: number): string => defined(shares[i], `share ${i + 1}`)
  const foreignHome = tempHome()
  const foreign = [...(await cli(['keyd', 'init', '--shares', '2', '--threshold', '2'], { KEYEDGE_HOME: foreignHome })).out.matchAll(/share \d: (ks1-\S+)/g)].map(m => defined(m[1], 'a printed share'))

  const start = async (): Promise<ReturnType<typeof spawnCli>> => {
    const k = spawnCli(['keyd', 'serve', '--metrics-port', '0'], env)
    const ready = await k.waitFor(o => o.msg === 'keyd ready')
    t.equal(ready.sealed, true, 'starts sealed')
    const health = await fetch(`http://127.0.0.1:${ready.metricsPort as number}/healthz`)
    t.equal(health.status, 503, 'unhealthy while sealed')
    t.match(await (await fetch(`http://127.0.0.1:${ready.metricsPort as number}/metrics`)).text(), /keyd_sealed 1/)
    return k
  }
  let keyd = await start()
  // Whichever keyd runs when the test ends (a failed assertion included) is stopped.
  t.teardown(() => keyd.stop())
  const paths = homePaths(home)
  // Unsealing rebuilds the master key and opens the store and audit log: on a loaded machine that
  // can take over the client's default 1 s.
  const admin = new KeydClient({ socketPath: paths.socket, clientName: 'admin', secretFile: join(paths.secretsDir, 'admin.secret'), timeoutMs: 10_000 })
  t.teardown(() => admin.close())
  await t.rejects(admin.createKey('k1', 'ec-p256', 'tls-server'), { code: 'KEYD_ERR_SEALED' })
  const unseal = async (s: string): Promise<{ sealed: boolean, shares: number }> =>
    JSON.parse(readStr(await admin.request(Op.UNSEAL, [itemStr(Tag.SHARE, s)]), Tag.JSON) ?? '{}')
  await t.rejects(unseal('ks1-1-00-00000000'), { code: 'KEYD_ERR_BAD_SHARE' })
  t.match(await unseal(shareText(0)), { sealed: true, shares: 1 })
  await t.rejects(unseal(defined(foreign[1], 'a foreign share')), { code: 'KEYD_ERR_BAD_SHARE', message: /do not rebuild/ }, 'a share of another keystore')
  t.match(await unseal(shareText(0)), { sealed: true, shares: 1 }, 'shares were discarded after the failure')
  t.match(await unseal(shareText(2)), { sealed: false })
  await admin.createKey('k1', 'ec-p256', 'tls-server')
  admin.close()
  await keyd.stop()

  keyd = await start()
  const u1 = await cli(['keyd', 'unseal', '--share', shareText(1)], env)
  t.match(u1.out, /still sealed: 1 of 2/)
  const u2 = await cli(['keyd', 'unseal', '--share', shareText(2)], env)
  t.match(u2.out, /keyd unsealed/)
  const proxy = new KeydClient({ socketPath: paths.socket, clientName: 'proxy', secretFile: join(paths.secretsDir, 'proxy.secret') })
  t.teardown(() => proxy.close())
  t.equal((await proxy.sign('k1', 'ecdsa-sha256', tls13Input())).version, 1, 'the key made before the restart signs after unseal')
  t.match((await cli(['keyd', 'status'], env)).out, /"sealed":false/)
})

t.test('passphrase sealing: a wrong passphrase is a clear error, never a crash', async t => {
  const home = tempHome()
  const first = spawnCli(['keyd', 'serve'], { KEYEDGE_HOME: home, KEYEDGE_KEYD_PASSPHRASE: 'correct horse battery' })
  await first.waitFor(o => o.msg === 'keyd ready')
  await first.stop()
  const wrong = await cli(['keyd', 'serve'], { KEYEDGE_HOME: home, KEYEDGE_KEYD_PASSPHRASE: 'wrong horse battery' })
  t.equal(wrong.code, 1)
  t.match(wrong.out, /wrong passphrase.*KEYD_ERR_WRONG_PASSPHRASE/)
  const dev = await cli(['keyd', 'serve', '--dev'], { KEYEDGE_HOME: home })
  t.equal(dev.code, 1)
  t.match(dev.out, /sealed by a passphrase/)
})
