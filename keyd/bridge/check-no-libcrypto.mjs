// Run by npm's install script right after node-gyp: the bridge, and keyd's native SIGN addon
// (`node check-no-libcrypto.mjs keyd/native/build/Release/keyd_native.node "keyd native"`), must not
// depend on any libcrypto/libssl: they run inside Node and use the OpenSSL it exports (keys never meet
// another one).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const so = process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), 'build', 'Release', 'keyedge_provider.so')
const label = process.argv[3] ?? 'keyedge bridge'

function fail (message) {
  console.error(`${label}: ${message}`)
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

if (!fs.existsSync(so)) fail(`${so} is missing: node-gyp rebuild -C ${path.relative(process.cwd(), path.resolve(path.dirname(so), '..', '..'))} did not produce it`)
const needed = neededLibraries(so)
const bad = needed.filter((lib) => /^lib(crypto|ssl)\b/.test(path.basename(lib)))
if (bad.length > 0) fail(`${so} depends on ${bad.join(', ')}; it must use the host process's OpenSSL only`)
console.log(`${label}: ${path.basename(so)} ok (needs ${needed.join(', ') || 'nothing'})`)
