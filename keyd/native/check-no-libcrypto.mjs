// Run by npm's install script right after node-gyp: keyd's native SIGN addon must not depend on any
// libcrypto/libssl: it runs inside keyd's Node, whose own OpenSSL it uses (keys never meet another one).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const so = path.join(path.dirname(fileURLToPath(import.meta.url)), 'build', 'Release', 'keyd_native.node')

function fail (message) {
  console.error(`keyd native: ${message}`)
  process.exit(1)
}

/** Names of the shared libraries the .so needs: readelf -d, else ldd. */
function neededLibraries (file) {
  try {
    const out = execFileSync('readelf', ['-d', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])
  } catch (err) {
    if (err.code !== 'ENOENT') fail(`readelf -d ${file} failed: ${err.message}`)
  }
  try {
    const out = execFileSync('ldd', [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return out.split('\n').map((line) => line.trim().split(/\s+/)[0]).filter(Boolean)
  } catch (err) {
    return fail(`cannot list the dependencies of ${file} (neither readelf nor ldd worked): ${err.message}`)
  }
}

if (!fs.existsSync(so)) fail(`${so} is missing: node-gyp rebuild -C keyd/native did not produce it`)
const needed = neededLibraries(so)
const bad = needed.filter((lib) => /^lib(crypto|ssl)\b/.test(path.basename(lib)))
if (bad.length > 0) fail(`${so} depends on ${bad.join(', ')}; it must use the host process's OpenSSL only`)
console.log(`keyd native: ${path.basename(so)} ok (needs ${needed.join(', ') || 'nothing'})`)
