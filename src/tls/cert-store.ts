// The live certificate store: name → loaded secure context, consulted on every new connection
// (from its ClientHello's server name), so certificates can be swapped without restarting (replace()).

import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { CertificateConfig, TlsConfig } from '../config/types.js'
import { loadCertificate, type LoadedCertificate } from './secure-context.js'
import { buildSniIndex, selectCertificate, type SniIndex } from './sni.js'

function counter (registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  const existing = registry.getSingleMetric(name)
  if (existing !== undefined) return existing as Counter<string>
  return new Counter({ name, help, labelNames, registers: [registry] })
}

/** Loaded certificate entries by name, with SNI selection over them. */
export class CertStore {
  #contexts = new Map<string, LoadedCertificate>()
  #index: SniIndex = buildSniIndex([])
  #tls: TlsConfig
  #log: Logger
  #selections: Counter<string>
  #refused: Counter<string>

  constructor (opts: { tls: TlsConfig, log: Logger, registry: Registry }) {
    this.#tls = opts.tls
    this.#log = opts.log
    this.#selections = counter(opts.registry, 'edge_tls_sni_selections_total',
      'Certificate selections by SNI, by how the certificate was chosen', ['match'])
    this.#refused = counter(opts.registry, 'edge_tls_sni_refused_total',
      'Handshakes refused because strict SNI found no certificate for the name', [])
  }

  /**
   * Loads every certificate entry and swaps them in at once; on any error nothing changes.
   * @throws the errors of loadCertificate (EDGE_ERR_CERT_LOAD, EDGE_ERR_KEY_LOAD,
   *   EDGE_ERR_CERT_KEY_MISMATCH, EDGE_ERR_SECURE_CONTEXT).
   */
  load (entries: readonly CertificateConfig[], tls: TlsConfig = this.#tls): LoadedCertificate[] {
    const loaded = entries.map(entry => loadCertificate(entry, tls, this.#log))
    this.replace(entries, loaded, tls)
    return loaded
  }

  /** Swaps in already loaded contexts; handshakes from now on see the new set. */
  replace (entries: readonly CertificateConfig[], loaded: readonly LoadedCertificate[], tls: TlsConfig = this.#tls): void {
    const contexts = new Map<string, LoadedCertificate>()
    for (const cert of loaded) contexts.set(cert.name, cert)
    this.#index = buildSniIndex(entries)
    this.#contexts = contexts
    this.#tls = tls
    for (const cert of loaded) {
      for (const pair of cert.pairs) {
        this.#log.info({ certificate: cert.name, certFile: pair.certFile, keyFile: pair.keyFile, custody: pair.custody,
          subject: pair.subject, notAfter: pair.notAfter.toISOString() }, 'certificate loaded')
      }
    }
  }

  /** The loaded certificate entry named `name`. */
  get (name: string): LoadedCertificate | undefined {
    return this.#contexts.get(name)
  }

  /**
   * The certificate entry for a ClientHello's server name (undefined: no SNI sent → the default
   * entry), or undefined when the handshake must be refused (strict mode); counts the outcome.
   */
  select (servername: string | undefined): LoadedCertificate | undefined {
    if (servername === undefined || servername === '') {
      this.#selections.inc({ match: 'no_sni' })
      return this.#contexts.get(this.#tls.defaultCertificate)
    }
    const selection = selectCertificate(this.#index, servername, {
      strict: this.#tls.strictSni,
      defaultCertificate: this.#tls.defaultCertificate
    })
    this.#selections.inc({ match: selection.match })
    const loaded = selection.certificate === undefined ? undefined : this.#contexts.get(selection.certificate)
    if (loaded === undefined) this.#refused.inc()
    return loaded
  }

  /** Certificate entries currently served, for admin views. */
  list (): LoadedCertificate[] {
    return [...this.#contexts.values()]
  }
}
