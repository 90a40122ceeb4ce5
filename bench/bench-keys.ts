// Fresh in-process key material for the baseline: a throwaway EC P-256 CA and an ECDSA P-256 and an
// RSA-2048 leaf, made with the openssl CLI in a private temp dir at bench time (never committed).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface PlainPair { cert: string, key: string }
export interface BenchKeys { dir: string, caFile: string, ec: PlainPair, rsa: PlainPair, remove: () => void }

const LEAF_EXT = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature,keyEncipherment',
  'extendedKeyUsage=serverAuth',
  'subjectAltName=DNS:localhost,IP:127.0.0.1'
].join('\n') + '\n'

function openssl (dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 })
}

/** Generates the keys and certificates (valid 2 days) in a new 0700 temp dir; `remove()` deletes it. */
export function makeBenchKeys (): BenchKeys {
  const dir = mkdtempSync(join(tmpdir(), 'keyedge-bench-keys-'))
  chmodSync(dir, 0o700)
  try {
    openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ca.key'])
    openssl(dir, ['req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=keyedge bench CA', '-days', '2',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-out', 'ca.crt'])
    writeFileSync(join(dir, 'leaf.ext'), LEAF_EXT)
    const leaf = (name: string, genArgs: string[]): PlainPair => {
      openssl(dir, ['genpkey', ...genArgs, '-out', `${name}.key`])
      openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', '/CN=localhost', '-out', `${name}.csr`])
      openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
        '-days', '2', '-sha256', '-extfile', 'leaf.ext', '-out', `${name}.crt`])
      return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) }
    }
    const ec = leaf('ec', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'])
    const rsa = leaf('rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'])
    const remove = (): void => rmSync(dir, { recursive: true, force: true })
    return { dir, caFile: join(dir, 'ca.crt'), ec, rsa, remove }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}
