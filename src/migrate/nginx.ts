// Reads an nginx configuration far enough to migrate its TLS sites: the `server {}` blocks of the
// `http` context (or of a sites-enabled snippet), their server_name, listen and
// ssl_certificate / ssl_certificate_key pairs, following `include`. Nothing else of nginx is
// interpreted; what cannot be carried over (variables, regex names) is reported, never guessed.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { basename, dirname, isAbsolute, join, resolve } from 'node:path'
import { NginxConfigError } from '../errors.js'

/** One directive: `name args…;` or `name args… { block }`, with where it was written. */
export interface NginxDirective {
  name: string
  args: string[]
  block?: NginxDirective[]
  file: string
  line: number
}


interface Token { text: string, line: number, quoted: boolean }

/** nginx's lexer: words, quoted strings ('…' or "…", backslash escapes), `;`, `{`, `}`, `#` comments. */
function tokenize (text: string, file: string): Token[] {
  const tokens: Token[] = []
  let line = 1
  let i = 0
  while (i < text.length) {
    const c = text.charAt(i)
    if (c === '\n') { line++; i++; continue }
    if (/\s/.test(c)) { i++; continue }
    if (c === '#') { while (i < text.length && text.charAt(i) !== '\n') i++; continue }
    if (c === ';' || c === '{' || c === '}') { tokens.push({ text: c, line, quoted: false }); i++; continue }
    const start = line
    let word = ''
    if (c === '"' || c === '\'') {
      i++
      for (;;) {
        if (i >= text.length) throw new NginxConfigError(`${file}:${start}: unterminated ${c}quoted string${c}`)
        const d = text.charAt(i)
        if (d === c) { i++; break }
        if (d === '\\' && i + 1 < text.length) { word += text.charAt(i + 1); i += 2; continue }
        if (d === '\n') line++
        word += d
        i++
      }
      tokens.push({ text: word, line: start, quoted: true })
      continue
    }
    while (i < text.length) {
      const d = text.charAt(i)
      if (/\s/.test(d) || d === ';' || d === '{' || d === '}') break
      // `#` inside a word is part of it (nginx starts a comment only at a token's start).
      if (d === '\\' && i + 1 < text.length) { word += text.charAt(i + 1); i += 2; continue }
      word += d
      i++
    }
    tokens.push({ text: word, line: start, quoted: false })
  }
  return tokens
}

/** Parses nginx configuration text into directives. @throws NginxConfigError naming file and line */
export function parseNginx (text: string, file: string): NginxDirective[] {
  const tokens = tokenize(text, file)
  let pos = 0
  const block = (depth: number): NginxDirective[] => {
    const out: NginxDirective[] = []
    for (;;) {
      const t = tokens[pos]
      if (t === undefined) {
        if (depth > 0) throw new NginxConfigError(`${file}: unexpected end of file: a "}" is missing`)
        return out
      }
      if (t.text === '}' && !t.quoted) {
        if (depth === 0) throw new NginxConfigError(`${file}:${t.line}: unexpected "}"`)
        pos++
        return out
      }
      if (!t.quoted && (t.text === ';' || t.text === '{')) throw new NginxConfigError(`${file}:${t.line}: unexpected "${t.text}"`)
      const d: NginxDirective = { name: t.text, args: [], file, line: t.line }
      pos++
      for (;;) {
        const a = tokens[pos]
        if (a === undefined) throw new NginxConfigError(`${file}:${t.line}: directive "${d.name}" is not terminated by ";" or "{"`)
        pos++
        if (!a.quoted && a.text === ';') break
        if (!a.quoted && a.text === '{') { d.block = block(depth + 1); break }
        if (!a.quoted && a.text === '}') throw new NginxConfigError(`${file}:${a.line}: unexpected "}" in directive "${d.name}"`)
        d.args.push(a.text)
      }
      out.push(d)
    }
  }
  return block(0)
}

/** Files an `include` names: a path, or a `*` / `?` pattern in its last component (as nginx's glob). */
function includeFiles (pattern: string, baseDir: string): string[] {
  const abs = isAbsolute(pattern) ? pattern : resolve(baseDir, pattern)
  const name = basename(abs)
  if (!/[*?[]/.test(name)) return [abs]
  const dir = dirname(abs)
  const re = new RegExp('^' + name.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$')
  let entries: string[]
  try {
    entries = readdirSync(dir)
  } catch {
    return [] // nginx too accepts a pattern that matches nothing
  }
  return entries.filter(e => re.test(e)).sort().map(e => join(dir, e)).filter(f => statSync(f).isFile())
}

/**
 * Reads `file` and every file it includes, inlining the included directives where the `include`
 * stood. Relative include paths resolve against `prefix` (nginx's configuration directory:
 * default the directory of `file`).
 */
export function loadNginx (file: string, prefix = dirname(resolve(file))): NginxDirective[] {
  const seen: string[] = []
  const load = (f: string, depth: number): NginxDirective[] => {
    if (depth > 16 || seen.includes(f)) throw new NginxConfigError(`${f}: included from itself (include loop)`)
    let text: string
    try {
      text = readFileSync(f, 'utf8')
    } catch (err) {
      const code = err instanceof Error && 'code' in err ? String(err.code) : 'error'
      throw new NginxConfigError(`${f}: cannot read (${code})`)
    }
    seen.push(f)
    const expand = (ds: NginxDirective[]): NginxDirective[] => ds.flatMap(d => {
      if (d.name === 'include' && d.block === undefined) {
        const [path] = d.args
        if (d.args.length !== 1 || path === undefined) throw new NginxConfigError(`${d.file}:${d.line}: include takes one path`)
        return includeFiles(path, prefix).flatMap(g => load(g, depth + 1))
      }
      return [d.block === undefined ? d : { ...d, block: expand(d.block) }]
    })
    const out = expand(parseNginx(text, f))
    seen.pop()
    return out
  }
  return load(resolve(file), 0)
}

/** One certificate and key file pair of a site, absolute paths. */
export interface NginxPair { cert: string, key: string }

/** A TLS `server {}` block: what a keyedge certificate entry needs from it. */
export interface NginxTlsSite {
  /** Where the block starts, `file:line`. */
  at: string
  /** Usable names (exact, `*.` wildcards, addresses), lower-case, as keyedge accepts them. */
  serverNames: string[]
  /** A catch-all block (`server_name _;`, empty, or none): its names come from the certificates. */
  catchAll: boolean
  /** `listen … default_server`: the certificate for clients that send no (known) name. */
  defaultServer: boolean
  pairs: NginxPair[]
  /** `ssl_verify_client on | optional` with `ssl_client_certificate`: the entry's `clientAuth` (CA file absolute). */
  clientAuth?: { mode: 'require' | 'request', caFile: string }
}

function directives (ds: NginxDirective[] | undefined, name: string): NginxDirective[] {
  return (ds ?? []).filter(d => d.name === name)
}

/** nginx server_name values as keyedge server names; the others are reported. */
function serverNames (values: string[], at: string, warnings: string[]): { names: string[], catchAll: boolean } {
  const names: string[] = []
  for (const raw of values) {
    const v = raw.toLowerCase()
    if (v === '' || v === '_') continue
    if (v.startsWith('~')) { warnings.push(`${at}: server_name ${raw} is a regular expression: keyedge matches exact names and "*." wildcards only; list the names it should match`); continue }
    if (v.startsWith('.')) { names.push(v.slice(1), `*${v}`); continue }
    if (v.endsWith('.*') || (v.includes('*') && !v.startsWith('*.'))) { warnings.push(`${at}: server_name ${raw}: keyedge has only leading "*." wildcards; list the names instead`); continue }
    if (v.includes('$')) { warnings.push(`${at}: server_name ${raw} holds a variable; skipped`); continue }
    names.push(v.endsWith('.') ? v.slice(0, -1) : v)
  }
  return { names: [...new Set(names)], catchAll: names.length === 0 }
}

/** The certificate/key pairs of one context, paired in order as nginx does. */
function pairsOf (ds: NginxDirective[] | undefined, prefix: string, at: string): NginxPair[] | string {
  const certs = directives(ds, 'ssl_certificate').map(d => d.args[0] ?? '')
  const keys = directives(ds, 'ssl_certificate_key').map(d => d.args[0] ?? '')
  if (certs.length !== keys.length) return `${at}: ${certs.length} ssl_certificate but ${keys.length} ssl_certificate_key: nginx pairs them in order`
  const variable = [...certs, ...keys].find(p => p.includes('$'))
  if (variable !== undefined) return `${at}: ${variable} holds a variable (certificates chosen per request): give keyedge the files, one entry per name`
  const engine = keys.find(k => k.startsWith('engine:') || k.startsWith('data:') || k.startsWith('store:'))
  if (engine !== undefined) return `${at}: ssl_certificate_key ${engine} is not a key file; import the key with "keyedge keyd key import" by hand`
  return certs.map((c, i) => {
    const k = keys[i]
    if (k === undefined) throw new NginxConfigError(`${at}: ssl_certificate ${c} has no ssl_certificate_key`) // as many keys as certificates: checked above
    return { cert: resolve(prefix, c), key: resolve(prefix, k) }
  })
}

/**
 * The client-certificate settings of a server block (its own, else the `http` context's), as a
 * keyedge `clientAuth`; what keyedge cannot carry over is reported. nginx's `optional_no_ca` (ask,
 * never verify) has no keyedge equivalent: keyedge always verifies against a bundle.
 */
function clientAuthOf (own: NginxDirective[] | undefined, inherited: NginxDirective[] | undefined, prefix: string, at: string, warnings: string[]): NginxTlsSite['clientAuth'] {
  const pick = (name: string): NginxDirective | undefined => directives(own, name).at(-1) ?? directives(inherited, name).at(-1)
  const verify = pick('ssl_verify_client')?.args[0]
  if (verify === undefined || verify === 'off') return undefined
  if (verify === 'optional_no_ca') { warnings.push(`${at}: ssl_verify_client optional_no_ca (ask for a certificate, never verify it) has no keyedge equivalent; left out: add "clientAuth" by hand with a CA bundle`); return undefined }
  if (verify !== 'on' && verify !== 'optional') { warnings.push(`${at}: ssl_verify_client ${verify} is not an nginx value; left out`); return undefined }
  const ca = pick('ssl_client_certificate')?.args[0] ?? pick('ssl_trusted_certificate')?.args[0]
  if (ca === undefined) { warnings.push(`${at}: ssl_verify_client ${verify} without ssl_client_certificate; left out: add "clientAuth" with a CA bundle by hand`); return undefined }
  if (ca.includes('$')) { warnings.push(`${at}: ssl_client_certificate ${ca} holds a variable; left out`); return undefined }
  if (pick('ssl_crl') !== undefined) warnings.push(`${at}: ssl_crl is not checked by keyedge (no CRL or OCSP for client certificates)`)
  return { mode: verify === 'on' ? 'require' : 'request', caFile: resolve(prefix, ca) }
}

/**
 * The TLS sites of a loaded configuration: every `server {}` (in `http`, or at the top of a
 * snippet) that has certificate pairs of its own, or inherits the `http` context's and listens
 * with `ssl`. Relative certificate paths resolve against `prefix`.
 */
export function nginxTlsSites (config: NginxDirective[], prefix: string): { sites: NginxTlsSite[], warnings: string[] } {
  const warnings: string[] = []
  const sites: NginxTlsSite[] = []
  const http = directives(config, 'http')
  const contexts: Array<{ servers: NginxDirective[], inherited: NginxDirective[] | undefined }> = [
    { servers: directives(config, 'server'), inherited: undefined },
    ...http.map(h => ({ servers: directives(h.block, 'server'), inherited: h.block }))
  ]
  for (const { servers, inherited } of contexts) {
    for (const s of servers) {
      const at = `${s.file}:${s.line}`
      const listens = directives(s.block, 'listen')
      const ssl = listens.some(l => l.args.includes('ssl')) || directives(s.block, 'ssl').some(d => d.args[0] === 'on')
      const own = pairsOf(s.block, prefix, at)
      if (typeof own === 'string') { warnings.push(`${own}; block skipped`); continue }
      let pairs = own
      if (pairs.length === 0 && ssl && inherited !== undefined) {
        const up = pairsOf(inherited, prefix, `${at} (inherited from http)`)
        if (typeof up === 'string') { warnings.push(`${up}; block skipped`); continue }
        pairs = up
      }
      if (pairs.length === 0) {
        if (ssl) warnings.push(`${at}: listens with ssl but names no ssl_certificate; block skipped`)
        continue
      }
      const { names, catchAll } = serverNames(directives(s.block, 'server_name').flatMap(d => d.args), at, warnings)
      const clientAuth = clientAuthOf(s.block, inherited, prefix, at, warnings)
      sites.push({ at, serverNames: names, catchAll, defaultServer: listens.some(l => l.args.includes('default_server') || l.args.includes('default')), pairs, ...(clientAuth === undefined ? {} : { clientAuth }) })
    }
  }
  return { sites, warnings }
}
