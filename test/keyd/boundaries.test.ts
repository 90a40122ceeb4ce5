// Import boundaries: the proxy (src/) reaches keyd only through its client, its protocol and its
// errors; keyd's client never imports keyd's server. src/cli is the composition root (it starts
// keyd itself) and may import any of keyd.
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { ROOT } from '../helpers/paths.js'

function tsFiles (dir: string): string[] {
  return readdirSync(dir).flatMap(f => {
    const p = join(dir, f)
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : []
  })
}

function imports (file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map(m => m[1] ?? '')
}

t.test('src/ (but src/cli) imports keyd only through keyd/client, keyd/protocol and keyd/errors', async t => {
  const bad: string[] = []
  for (const f of tsFiles(join(ROOT, 'src'))) {
    const rel = relative(ROOT, f)
    if (rel.startsWith('src/cli/')) continue
    for (const spec of imports(f)) {
      if (!/(^|\/)keyd\//.test(spec)) continue
      if (!/\/keyd\/(client\/|protocol\/|errors\.js$)/.test(spec)) bad.push(`${rel} imports ${spec}`)
    }
  }
  t.same(bad, [], 'no src module reaches into keyd/server, keyd/keystore, keyd/audit …')
})

t.test('keyd/client and keyd/protocol do not import keyd/server', async t => {
  const bad: string[] = []
  for (const dir of ['client', 'protocol']) {
    for (const f of tsFiles(join(ROOT, 'keyd', dir))) {
      for (const spec of imports(f)) if (spec.includes('/server/')) bad.push(`${relative(ROOT, f)} imports ${spec}`)
    }
  }
  t.same(bad, [])
})
