// A SoftHSM2 token in a temporary directory, served by `p11-kit server` on a unix socket there, and a
// keyd whose keystore is that token (reached through p11-kit-client.so, as in production).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { join } from 'node:path'
import { startKeyd, type TestKeyd } from './keyd.js'
import { tempHome } from './paths.js'

const SOFTHSM_MODULES = ['/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/lib/softhsm/libsofthsm2.so']
const CLIENT_MODULES = ['/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so', '/usr/lib/pkcs11/p11-kit-client.so']

export const softhsmModule = SOFTHSM_MODULES.find(p => existsSync(p))
export const p11KitClientModule = CLIENT_MODULES.find(p => existsSync(p))

function onPath (tool: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true } catch { return false }
}

/**
 * Why the SoftHSM2 tests cannot run here, or undefined if they can. Under CI=true they always run
 * (a missing package then fails them): .ci/run installs softhsm2, p11-kit and opensc.
 */
export function softhsmSkipReason (): string | undefined {
  if (process.env.CI === 'true') return undefined
  const missing = [
    softhsmModule === undefined ? 'libsofthsm2.so (apt-get install softhsm2)' : '',
    p11KitClientModule === undefined ? 'p11-kit-client.so (apt-get install p11-kit-modules)' : '',
    onPath('p11-kit') ? '' : 'p11-kit (apt-get install p11-kit)',
    onPath('softhsm2-util') ? '' : 'softhsm2-util (apt-get install softhsm2)'
  ].filter(s => s !== '')
  return missing.length === 0 ? undefined : `SoftHSM2 tests skipped: missing ${missing.join(', ')}`
}

export interface SoftHsm {
  dir: string
  tokenLabel: string
  pinFile: string
  /** SOFTHSM2_CONF, for softhsm2-util and pkcs11-tool run against the same token. */
  conf: string
  /** P11_KIT_SERVER_ADDRESS for p11-kit-client.so. */
  address: string
  server: ChildProcess
  stop: () => Promise<void>
}

/**
 * Creates a token labelled `tokenLabel` in `dir` (or reuses the one a previous call made there) and
 * serves it with `p11-kit server` on a unix socket in `dir`, ended by pid in `stop`.
 */
export async function startSoftHsm (dir = tempHome('keyedge-softhsm-'), tokenLabel = 'keyedge'): Promise<SoftHsm> {
  if (softhsmModule === undefined) throw new Error('libsofthsm2.so not found: apt-get install softhsm2')
  mkdirSync(join(dir, 'tokens'), { recursive: true, mode: 0o700 })
  const conf = join(dir, 'softhsm2.conf')
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`)
  const env = { ...process.env, SOFTHSM2_CONF: conf }
  const pinFile = join(dir, 'pin')
  if (!existsSync(pinFile)) {
    const pin = '1234-' + Math.random().toString(36).slice(2)
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', tokenLabel, '--so-pin', 'so-' + pin, '--pin', pin], { env, stdio: 'pipe' })
    writeFileSync(pinFile, pin + '\n', { mode: 0o600 })
  }
  const socket = join(dir, 'p11-kit.sock')
  rmSync(socket, { force: true })
  const server = spawn('p11-kit', ['server', '-f', '-n', socket, '--provider', softhsmModule, `pkcs11:token=${tokenLabel}`], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  server.stdout?.on('data', (b: Buffer) => { output += b.toString() })
  server.stderr?.on('data', (b: Buffer) => { output += b.toString() })
  const deadline = Date.now() + 10000
  while (!existsSync(socket)) {
    if (server.exitCode !== null || Date.now() > deadline) { server.kill(); throw new Error(`p11-kit server did not start: ${output}`) }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  const stop = async (): Promise<void> => {
    if (server.exitCode !== null || server.signalCode !== null) return
    const gone = once(server, 'exit')
    server.kill('SIGTERM')
    await gone
  }
  return { dir, tokenLabel, pinFile, conf, address: `unix:path=${socket}`, server, stop }
}

export interface Pkcs11Keyd extends TestKeyd { hsm: SoftHsm }

/** A development-mode keyd whose keystore is a fresh SoftHSM2 token (master key still seals audit and ticket keys). */
export async function startPkcs11Keyd (home = tempHome()): Promise<Pkcs11Keyd> {
  const hsm = await startSoftHsm(join(home, 'softhsm'))
  const keyd = await startKeyd(home, ['--pkcs11-module', p11KitClientModule as string, '--pkcs11-token', hsm.tokenLabel, '--pkcs11-pin-file', hsm.pinFile],
    { P11_KIT_SERVER_ADDRESS: hsm.address, SOFTHSM2_CONF: hsm.conf })
  const stop = async (signal?: NodeJS.Signals): Promise<void> => { await keyd.stop(signal); await hsm.stop() }
  return { ...keyd, stop, hsm }
}
