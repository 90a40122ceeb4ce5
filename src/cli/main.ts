#!/usr/bin/env node
// The `keyedge` command: dispatches to one module per command, loaded lazily so each starts fast.

const COMMANDS: Record<string, { module: string, summary: string }> = {
  start: { module: './start.js', summary: 'run keyd, a demo upstream and the proxy with development certificates' },
  status: { module: './status.js', summary: 'show a running stack: certificates, keys, keyd latency and errors, handshakes, audit chain' },
  proxy: { module: './proxy.js', summary: 'run the TLS-terminating proxy (node:cluster)' },
  validate: { module: './validate.js', summary: 'check a proxy config file and list every error' },
  keyd: { module: './keyd.js', summary: 'run the key daemon or manage its keys' },
  cert: { module: './cert.js', summary: 'issue development certificates with keys held in keyd' },
  import: { module: './import.js', summary: 'move existing certificates and keys (an nginx config, or pairs) into keyd' },
  upstream: { module: './upstream.js', summary: 'run the built-in demo upstream' }
}

function usage (): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`)
  return `Usage: keyedge <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun "keyedge <command> --help" for a command's options.\n` +
    'From a checkout, after npm ci: npx keyedge <command> (keyedge is not on your PATH).\n'
}

async function run (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return name === undefined ? 2 : 0
  }
  const cmd = COMMANDS[name]
  if (cmd === undefined) {
    process.stderr.write(`keyedge: unknown command "${name}"\n\n${usage()}`)
    return 2
  }
  const mod = await import(cmd.module) as { main: (argv: string[]) => Promise<number> }
  return await mod.main(rest)
}

run(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`keyedge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
})
