// keyd's start-up self-tests: they pass on this machine, a wrong known answer stops them, and keyd reports them.
import t from 'tap'
import { runSelfTests, KATS, SelfTestError } from '../../keyd/server/self-test.js'
import { startKeyd } from '../helpers/keyd.js'

t.test('every known answer and pairwise test passes', async t => {
  const r = runSelfTests()
  t.ok(r.tests >= KATS.length + 10, `${r.tests} tests`)
})

t.test('a wrong known answer fails with KEYD_ERR_SELF_TEST', async t => {
  const broken = KATS.map((k, i) => i === 2 ? { ...k, want: '00' + k.want.slice(2) } : k)
  t.throws(() => runSelfTests(broken), SelfTestError)
  t.throws(() => runSelfTests(broken), { code: 'KEYD_ERR_SELF_TEST', message: /SHA-512: wrong answer/ })
})

t.test('keyd runs them before serving and says so', async t => {
  const keyd = await startKeyd()
  t.teardown(() => keyd.stop())
  const ready = await keyd.waitFor(o => o.msg === 'keyd ready')
  t.ok((ready.selfTests as number) >= KATS.length, 'self-test count in the ready line')
})
