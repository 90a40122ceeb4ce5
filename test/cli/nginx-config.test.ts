// The nginx reader of `keyedge import`: nginx's lexical rules, include, inheritance from http, and
// what cannot be carried over reported rather than guessed.
import t from 'tap'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadNginx, nginxTlsSites, parseNginx } from '../../src/migrate/nginx.js'
import { tempHome } from '../helpers/paths.js'

const dir = tempHome('keyedge-nginx-')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('lexing: comments, quotes, escapes, a # inside a word', async t => {
  const ds = parseNginx(`# top\nserver { # open\n  server_name "a.test" 'b.test' c\\ d.test e#f.test; # names\n  return 200 "x;}{";\n}\n`, 'x.conf')
  const s = ds[0]
  t.equal(s?.name, 'server')
  t.same(s?.block?.map(d => [d.name, d.args, d.line]), [['server_name', ['a.test', 'b.test', 'c d.test', 'e#f.test'], 3], ['return', ['200', 'x;}{'], 4]])
})

t.test('syntax errors name the file and line', async t => {
  t.throws(() => parseNginx('server {\n listen 443;\n', 'a.conf'), /a\.conf: unexpected end of file: a "}" is missing/)
  t.throws(() => parseNginx('server { listen 443 }\n', 'b.conf'), /b\.conf:1: unexpected "}" in directive "listen"/)
  t.throws(() => parseNginx('}\n', 'c.conf'), /c\.conf:1: unexpected "}"/)
  t.throws(() => parseNginx('server_name "open;\n', 'd.conf'), { code: 'EDGE_ERR_NGINX_CONFIG' })
})

t.test('sites: names, default server, pairs in order, inheritance, and what is refused', async t => {
  mkdirSync(join(dir, 'conf.d'))
  writeFileSync(join(dir, 'nginx.conf'), `http {
  ssl_certificate     /etc/ssl/shared.crt;
  ssl_certificate_key /etc/ssl/shared.key;
  include conf.d/*.conf;
}
`)
  writeFileSync(join(dir, 'conf.d', 'a.conf'), `server { listen 443 ssl http2 default_server; server_name .example.com Www.Example.org.;
  ssl_certificate ec.crt; ssl_certificate_key ec.key; ssl_certificate rsa.crt; ssl_certificate_key rsa.key; }
server { listen 443 ssl; server_name inherits.test; }
server { listen 80; server_name plain.test; }
server { listen 443 ssl; server_name ~^(?<app>.+)\\.regex\\.test$ mail.*; ssl_certificate r.crt; ssl_certificate_key r.key; }
server { listen 443 ssl; server_name _; ssl_certificate $ssl_server_name.crt; ssl_certificate_key $ssl_server_name.key; }
server { listen 443 ssl; server_name odd.test; ssl_certificate a.crt; ssl_certificate b.crt; ssl_certificate_key a.key; }
`)
  writeFileSync(join(dir, 'conf.d', 'skip.txt'), 'not included: the pattern is *.conf')
  const { sites, warnings } = nginxTlsSites(loadNginx(join(dir, 'nginx.conf')), dir)
  t.same(sites.map(s => s.serverNames), [['example.com', '*.example.com', 'www.example.org'], ['inherits.test'], []])
  t.same(sites[0]?.pairs, [{ cert: join(dir, 'ec.crt'), key: join(dir, 'ec.key') }, { cert: join(dir, 'rsa.crt'), key: join(dir, 'rsa.key') }], 'relative paths against the prefix, paired in order')
  t.equal(sites[0]?.defaultServer, true)
  t.same(sites[1]?.pairs, [{ cert: '/etc/ssl/shared.crt', key: '/etc/ssl/shared.key' }], 'inherited from http')
  t.equal(sites[2]?.catchAll, true, 'regex and trailing-wildcard names left out: names will come from the certificate')
  const all = warnings.join('\n')
  t.match(all, /regular expression/)
  t.match(all, /mail\.\*: keyedge has only leading "\*\." wildcards/)
  t.match(all, /holds a variable/)
  t.match(all, /2 ssl_certificate but 1 ssl_certificate_key/)
  t.notMatch(all, /plain\.test/, 'a plain-HTTP block is not a TLS site')
})

t.test('client certificates: ssl_verify_client on | optional with its CA become clientAuth; the rest is reported', async t => {
  const file = join(dir, 'mtls.conf')
  writeFileSync(file, `http {
  ssl_client_certificate ca/http.pem;
  server { listen 443 ssl; server_name req.test; ssl_certificate a.crt; ssl_certificate_key a.key; ssl_verify_client on; ssl_client_certificate /etc/ca/own.pem; ssl_crl r.crl; }
  server { listen 443 ssl; server_name opt.test; ssl_certificate b.crt; ssl_certificate_key b.key; ssl_verify_client optional; }
  server { listen 443 ssl; server_name off.test; ssl_certificate c.crt; ssl_certificate_key c.key; ssl_verify_client off; }
  server { listen 443 ssl; server_name noca.test; ssl_certificate d.crt; ssl_certificate_key d.key; ssl_verify_client optional_no_ca; ssl_crl crl.pem; }
}
server { listen 443 ssl; server_name lone.test; ssl_certificate e.crt; ssl_certificate_key e.key; ssl_verify_client on; ssl_crl x.crl; }
`)
  const { sites, warnings } = nginxTlsSites(loadNginx(file), dir)
  const auth = Object.fromEntries(sites.map(s => [s.serverNames[0], s.clientAuth ?? null]))
  t.same(auth['req.test'], { mode: 'require', caFile: '/etc/ca/own.pem' }, 'on = require, the block\'s own CA')
  t.same(auth['opt.test'], { mode: 'request', caFile: join(dir, 'ca', 'http.pem') }, 'optional = request, the CA inherited from http, relative to the prefix')
  t.equal(auth['off.test'], null, 'off: no clientAuth')
  t.equal(auth['noca.test'], null, 'optional_no_ca has no equivalent')
  t.equal(auth['lone.test'], null, 'on without a CA bundle is not guessed')
  const all = warnings.join('\n')
  t.match(all, /optional_no_ca .* no keyedge equivalent/)
  t.match(all, /ssl_verify_client on without ssl_client_certificate/)
  t.equal(all.match(/ssl_crl is not checked/g)?.length, 1, 'ssl_crl reported where clientAuth is carried over (no CRL check), not where it was left out anyway')
})

t.test('an include loop and an unreadable include are errors', async t => {
  writeFileSync(join(dir, 'loop.conf'), 'include loop.conf;\n')
  t.throws(() => loadNginx(join(dir, 'loop.conf')), /include loop/)
  writeFileSync(join(dir, 'missing.conf'), 'include nowhere.conf;\n')
  t.throws(() => loadNginx(join(dir, 'missing.conf')), /nowhere\.conf: cannot read \(ENOENT\)/)
})
