// The strict DER reader of the certificate checks: the same validity and public key as OpenSSL for
// real certificates (Node's root store, certificates made here), and never a certificate that
// OpenSSL refuses: every single-bit corruption of two certificates is tried against both.
import { X509Certificate } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import t from 'tap'
import { pemCertificateBlocks, readCertificateDer } from '../../src/tls/x509-der.js'
import { makeManyCerts } from '../helpers/many-certs.js'
import { tempHome } from '../helpers/paths.js'

const home = tempHome('keyedge-der-')
t.teardown(() => rmSync(home, { recursive: true, force: true }))
const made = makeManyCerts(join(home, 'certs'), 1, ['ec', 'rsa'])
const ours = [made.certFile('ec', 0), made.certFile('rsa', 0), made.caFile].map(f => Buffer.from(pemCertificateBlocks(readFileSync(f))[0] ?? []))

t.test('validity and public key as OpenSSL reads them, for the root store and our certificates', async t => {
  const ders = [...rootCertificates.map(pem => Buffer.from(pemCertificateBlocks(Buffer.from(pem))[0] ?? [])), ...ours]
  let same = 0
  for (const der of ders) {
    const x509 = new X509Certificate(der)
    const fields = readCertificateDer(der)
    if (fields.notAfter === Date.parse(x509.validTo) && fields.notBefore === Date.parse(x509.validFrom) &&
      fields.spki.equals(x509.publicKey.export({ type: 'spki', format: 'der' }))) same++
    else t.fail(`differs for ${x509.subject.replace(/\n/g, ', ')}`)
  }
  t.equal(same, ders.length, `${ders.length} certificates read alike`)
})

t.test('no single-bit corruption the reader accepts is refused by OpenSSL', async t => {
  let accepted = 0
  let refusedByBoth = 0
  const slips: string[] = []
  for (const der of ours.slice(0, 2)) {
    for (let i = 0; i < der.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(der)
        bad[i] = (bad[i] ?? 0) ^ (1 << bit)
        let ours = true
        try { readCertificateDer(bad) } catch { ours = false }
        let openssl = true
        try { void new X509Certificate(bad) } catch { openssl = false }
        if (ours && !openssl) slips.push(`byte ${i} bit ${bit}`)
        if (ours) accepted++
        else if (!openssl) refusedByBoth++
      }
    }
  }
  t.same(slips, [], 'the reader takes nothing OpenSSL refuses')
  t.ok(refusedByBoth > 1000, `${refusedByBoth} corruptions refused by both, ${accepted} accepted by both`)
})

t.test('PEM blocks: in order, text outside ignored, broken ones refused', async t => {
  const ec = readFileSync(made.certFile('ec', 0), 'utf8')
  const ca = readFileSync(made.caFile, 'utf8')
  const blocks = pemCertificateBlocks(Buffer.from(`Bag Attributes: x\n${ec}\nsome text\n${ca}`)).map(b => Buffer.from(b))
  t.same(blocks.map(b => new X509Certificate(b).subject), [new X509Certificate(ec).subject, new X509Certificate(ca).subject])
  t.throws(() => pemCertificateBlocks(Buffer.from('-----BEGIN CERTIFICATE-----\nno base64: at all\n-----END CERTIFICATE-----\n')), /not base64/)
  const [words] = pemCertificateBlocks(Buffer.from('-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n'))
  t.throws(() => readCertificateDer(words ?? Buffer.alloc(0)), 'words that happen to be base64 are no certificate')
  t.throws(() => pemCertificateBlocks(Buffer.from(ec.slice(0, 200))), /not closed/)
  t.throws(() => readCertificateDer(Buffer.from('30030201', 'hex')), /truncated/)
  t.same(pemCertificateBlocks(Buffer.from('no certificate here')), [])
})
