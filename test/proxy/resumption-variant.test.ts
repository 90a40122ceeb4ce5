// Which TLS server (resumption variant) a ClientHello goes to: the TLS 1.2 session-ID cache's
// servers get only the hellos that may look a session ID up — those that cannot negotiate TLS 1.3
// and carry no ticket (Node looks no session ID up for a hello with a ticket: the ticket resumes).
import t from 'tap'
import { rmSync } from 'node:fs'
import { Registry } from 'prom-client'
import { validateConfig } from '../../src/config/index.js'
import { createLogger } from '../../src/logger.js'
import { readClientHello } from '../../src/tls/client-hello.js'
import { startResumption } from '../../src/tls/resumption.js'
import { tempHome } from '../helpers/paths.js'
import { captureFirstFlight, firstHandshakeMessage, frame, withExtension } from '../helpers/hello-forge.js'

const home = tempHome('keyedge-variant-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const log = createLogger({ level: 'silent' })
const configOf = (tls: Record<string, unknown>): ReturnType<typeof validateConfig> => validateConfig({
  listen: { host: '127.0.0.1', port: 0 },
  tls: { defaultCertificate: 'a', ...tls },
  certificates: [{ name: 'a', serverNames: ['localhost'], files: [{ cert: 'a.crt', key: 'a.key' }] }],
  routes: [{ upstream: 'http://127.0.0.1:1' }]
}, { baseDir: home })

const hello13 = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost' })) as Buffer
const hello12 = firstHandshakeMessage(await captureFirstFlight({ servername: 'localhost', maxVersion: 'TLSv1.2' })) as Buffer
const EXT_SESSION_TICKET = 35
const verdict = (message: Buffer): { offersTls13: boolean, offersTicket: boolean } => {
  const v = readClientHello(frame(message, 16_384))
  if (v.status !== 'ok') throw new Error(`hello not read: ${v.status}`)
  return v
}

t.test('the ClientHello reader sees a TLS 1.2 ticket only when the extension carries one', async t => {
  t.equal(verdict(hello12).offersTicket, false, 'no ticket (an empty session_ticket extension at most)')
  t.equal(verdict(withExtension(hello12, EXT_SESSION_TICKET, Buffer.alloc(0))).offersTicket, false, 'empty extension: no ticket')
  t.equal(verdict(withExtension(hello12, EXT_SESSION_TICKET, Buffer.alloc(160, 7))).offersTicket, true, 'a 160-byte ticket')
})

t.test('session-ID cache servers get TLS 1.2-only hellos without a ticket, nothing else', async t => {
  const r = await startResumption({ config: configOf({}), log, registry: new Registry() })
  t.teardown(() => r.close())
  t.equal(r.needsHello, true, 'TLS 1.3 and the cache on: the hello decides')
  t.equal(r.variantFor(verdict(hello12)).cache, true, 'TLS 1.2 only, no ticket: a cache server')
  t.equal(r.variantFor(verdict(withExtension(hello12, EXT_SESSION_TICKET, Buffer.alloc(160, 7)))).cache, false, 'TLS 1.2 with a ticket: no cache server')
  t.equal(r.variantFor(verdict(hello13)).cache, false, 'TLS 1.3 offered: no cache server')
  t.equal(r.variantFor(undefined).cache, false, 'hello not read: no cache server')
  t.equal(r.variantFor(verdict(hello12)), r.variantFor(verdict(hello12)), 'the same variant object each time')

  const only12 = await startResumption({ config: configOf({ maxVersion: 'TLSv1.2' }), log, registry: new Registry() })
  t.teardown(() => only12.close())
  t.equal(only12.needsHello, false, 'TLS 1.2 only: nothing to decide')
  t.equal(only12.variantFor(undefined).cache, true, 'every connection on a cache server')
})
