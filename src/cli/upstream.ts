// `keyedge upstream [--host H] [--port N]`: runs the built-in demo upstream until SIGINT/SIGTERM.

import { once } from 'node:events'
import { parseArgs } from 'node:util'
import { errorMessage } from '../../lib/errors.js'
import { startDemoUpstream } from '../proxy/demo-upstream.js'

export const UPSTREAM_USAGE = `usage: keyedge upstream [--host H] [--port N]

Runs the demo upstream (plain HTTP): / , /echo, /headers, /slow?ms=N, /status/NNN.

options:
  --host H      address to listen on (default 127.0.0.1)
  --port N      port (default 8080; 0 picks a free one)
  -h, --help    show this help
`

/** Runs the demo upstream; resolves 0 after SIGINT/SIGTERM. */
export async function main (argv: string[]): Promise<number> {
  let values: { host?: string, port?: string, help?: boolean }
  try {
    values = parseArgs({
      args: argv,
      options: { host: { type: 'string' }, port: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false
    }).values
  } catch (err) {
    process.stderr.write(`${errorMessage(err)}\n\n${UPSTREAM_USAGE}`)
    return 2
  }
  if (values.help === true) {
    process.stdout.write(UPSTREAM_USAGE)
    return 0
  }
  const port = Number(values.port ?? '8080')
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write('--port must be an integer between 0 and 65535\n')
    return 2
  }
  const upstream = await startDemoUpstream({ host: values.host ?? '127.0.0.1', port })
  process.stdout.write(`${JSON.stringify({ msg: 'demo upstream listening', url: upstream.url, port: upstream.port })}\n`)
  await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')])
  await upstream.close()
  return 0
}
