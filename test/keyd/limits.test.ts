// keyd's per-connection bounds with small limits, in-process on a real unix socket: a client that
// leaves its answers unread is closed after the stall timeout, a frame past the connection cap is
// refused with OVERLOADED, and a well-behaved client on the same keyd is served all along.
import t from 'tap'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import { KeydServer } from '../../keyd/server/server.js'
import { ClientRegistry } from '../../keyd/server/clients.js'
import { FileKeystore } from '../../keyd/keystore/file-keystore.js'
import { KeydClient } from '../../keyd/client/client.js'
import { Op, Tag, ErrorCode, encodeFrame, itemBytes } from '../../keyd/protocol/codec.js'
import { tempHome } from '../helpers/paths.js'
import { pipelineWithoutReading, unfinishedFrames, helloFrame } from '../helpers/keyd-abuse.js'
import { defined } from '../helpers/defined.js'

/** The ERROR_CODE item of an OVERLOADED answer. */
const OVERLOADED_ITEM = Buffer.from([Tag.ERROR_CODE, 0, 0, 0, 2, 0, ErrorCode.OVERLOADED])
const home = tempHome()
const clients = new ClientRegistry(join(home, 'clients.json'))
const secretFile = clients.ensure('proxy', ['sign'], join(home, 'secrets'))
const server = new KeydServer({
  socketPath: join(home, 'keyd.sock'),
  keystore: new FileKeystore(join(home, 'keys'), randomBytes(32)),
  clients,
  logger: pino({ level: 'silent' }),
  devMode: true,
  limits: { writeHighWater: 16 * 1024, stallTimeoutMs: 300, maxConnectionBytes: 256 * 1024, freeBytesPerConnection: 16 * 1024, sharedBytes: 512 * 1024 }
})
await server.listen()
t.teardown(() => server.close())
const good = new KeydClient({ socketPath: join(home, 'keyd.sock'), clientName: 'proxy', secretFile, timeoutMs: 2000 })
t.teardown(() => good.close())

t.test('a client that never reads its answers is paused, then closed after the stall timeout', async t => {
  const frames = Buffer.concat(Array.from({ length: 60 }, (_, i) => encodeFrame(Op.PING, i, [itemBytes(Tag.PAYLOAD, Buffer.alloc(1000, 7))])))
  const started = Date.now()
  const { socket, closed: gone } = await pipelineWithoutReading(join(home, 'keyd.sock'), 'proxy', secretFile, frames, 200)
  t.teardown(() => socket.destroy())
  const closed = await Promise.race([gone.then(() => true), new Promise<boolean>(resolve => setTimeout(() => resolve(false), 10_000))])
  t.comment(`closed ${Date.now() - started} ms after it started pipelining`)
  t.ok(closed, 'keyd closed the stalled connection')
  t.same(await good.ping(Buffer.from('still here')), Buffer.from('still here'), 'another client is served')
})

t.test('a frame past the connection cap is refused with OVERLOADED and the connection closed', async t => {
  const c = defined((await unfinishedFrames(join(home, 'keyd.sock'), 1, 512 * 1024, 300 * 1024, helloFrame('proxy', secretFile)))[0], 'a held connection')
  t.teardown(() => c.socket.destroy())
  await Promise.race([c.closed, new Promise(resolve => setTimeout(resolve, 10_000))])
  t.ok(c.socket.destroyed, 'closed')
  t.ok(c.received().includes(OVERLOADED_ITEM), 'told OVERLOADED')
  t.same(await good.ping(Buffer.from('x')), Buffer.from('x'), 'another client is served')
})

t.test('the shared budget: connections holding big partial frames are refused once it is spent', async t => {
  const conns = await unfinishedFrames(join(home, 'keyd.sock'), 8, 512 * 1024, 200 * 1024, helloFrame('proxy', secretFile))
  t.teardown(() => { for (const c of conns) c.socket.destroy() })
  for (const deadline = Date.now() + 5000; Date.now() < deadline && conns.filter(c => c.socket.destroyed).length < 6;) await new Promise(resolve => setTimeout(resolve, 20))
  const refused = conns.filter(c => c.received().includes(OVERLOADED_ITEM)).length
  // 512 KiB shared: at most two connections hold ~200 KiB each beyond their 16 KiB.
  t.ok(refused >= 5, `${refused} of 8 refused`)
  t.ok(refused < 8, 'some were held within the budget')
  t.same(await good.ping(Buffer.from('y')), Buffer.from('y'), 'a small request is still served')
})
