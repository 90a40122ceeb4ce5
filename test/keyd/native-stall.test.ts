// keyd's native SIGN path with small limits, in-process on a real unix socket: a client that pipelines
// SIGNs its signing thread answers and never reads the answers is stopped at its free allowance and
// closed after the stall timeout (the thread looks at it again while it is stopped, and sleeps without
// a timeout otherwise), while a well-behaved client on the same keyd is signed for all along.
import t from 'tap'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import { KeydServer } from '../../keyd/server/server.js'
import { ClientRegistry } from '../../keyd/server/clients.js'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { AuditLog } from '../../keyd/audit/audit-log.js'
import { KeydClient } from '../../keyd/client/client.js'
import { Op, Tag, encodeFrame, itemStr, itemU16, itemBytes } from '../../keyd/protocol/codec.js'
import { tempHome } from '../helpers/paths.js'
import { tls13Input } from '../helpers/tls-inputs.js'
import { openSocket, helloFrame } from '../helpers/keyd-abuse.js'

const home = tempHome()
const logger = pino({ level: 'silent' })
const clients = new ClientRegistry(join(home, 'clients.json'))
const secretFile = clients.ensure('proxy', ['sign'], join(home, 'secrets'))
const keystore = new FileKeystore(join(home, 'keys'), randomBytes(32))
await keystore.create('stall-ec', 'ec-p256', 'tls-server')
const audit = await AuditLog.open({ file: join(home, 'audit.log'), checkpointFile: join(home, 'audit.checkpoint'), key: randomBytes(32), logger, durability: 'buffered', failClosed: true })
const server = new KeydServer({
  socketPath: join(home, 'keyd.sock'),
  keystore,
  clients,
  logger,
  devMode: true,
  audit,
  nativeSign: { threads: 1 },
  limits: { writeHighWater: 16 * 1024, stallTimeoutMs: 300, maxConnectionBytes: 256 * 1024, freeBytesPerConnection: 16 * 1024, sharedBytes: 512 * 1024 }
})
await server.listen()
t.teardown(async () => { await server.close(); await audit.close() })
const good = new KeydClient({ socketPath: join(home, 'keyd.sock'), clientName: 'proxy', secretFile, timeoutMs: 5000 })
t.teardown(() => good.close())

t.test('a client that never reads its native answers is closed after the stall timeout', async t => {
  t.ok(server.nativeSign, 'the native path is on')
  await good.sign('stall-ec', 'ecdsa-sha256', tls13Input())
  const before = server.nativeSignatures
  t.ok(before >= 1, 'the well-behaved client is signed for natively')
  const sign = encodeFrame(Op.SIGN, 1, [itemStr(Tag.KEY_NAME, 'stall-ec'), itemU16(Tag.ALGORITHM, 0x0001), itemBytes(Tag.MESSAGE, tls13Input())])
  const frames = Buffer.concat(Array.from({ length: 200 }, () => sign))
  // HELLO answered first: the connection is then its signing thread's, which reads what follows.
  const socket = await openSocket(join(home, 'keyd.sock'))
  t.teardown(() => socket.destroy())
  const gone = new Promise<void>(resolve => socket.once('close', () => resolve()))
  socket.write(helloFrame('proxy', secretFile))
  await new Promise(resolve => socket.once('data', resolve))
  socket.pause() // and never reads again
  const started = Date.now()
  const until = started + 3000
  while (Date.now() < until && !socket.destroyed) {
    if (!socket.write(frames)) {
      const drained = new Promise<boolean>(resolve => socket.once('drain', () => resolve(true)))
      const late = new Promise<boolean>(resolve => setTimeout(() => resolve(false), until - Date.now()).unref())
      if (!await Promise.race([drained, gone.then(() => false), late])) break
    }
  }
  const closed = await Promise.race([gone.then(() => true), new Promise<boolean>(resolve => setTimeout(() => resolve(false), 15_000).unref())])
  t.comment(`closed ${Date.now() - started} ms after it started pipelining`)
  t.ok(closed, 'keyd closed the stalled connection')
  t.ok(server.nativeSignatures - before > 100, `its SIGNs were answered natively until it stopped (${server.nativeSignatures - before})`)
  await good.sign('stall-ec', 'ecdsa-sha256', tls13Input())
  t.pass('the well-behaved client is still signed for')
})
