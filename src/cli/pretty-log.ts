// Human-readable log lines for `keyedge start` on a terminal. keyd and the proxy always log JSON
// (what services and log shippers read); only the development supervisor rewrites their lines,
// and only when its own output is a terminal (or KEYEDGE_LOG_FORMAT=pretty).
import type { Readable, Writable } from 'node:stream'

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' }
const COLORS: Record<number, string> = { 40: '\x1b[33m', 50: '\x1b[31m', 60: '\x1b[31m' }
/** Fields every line has, or that the line's head already shows. */
const HEAD = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'v'])

/** `HH:MM:SS.mmm LEVEL name: msg key=value …`, or the line unchanged when it is not a JSON log line. */
export function prettyLogLine (line: string, color = false): string {
  if (!line.startsWith('{')) return line
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line
  }
  if (typeof o.level !== 'number' || typeof o.msg !== 'string') return line
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : ''
  const name = typeof o.name === 'string' ? `${o.name}: ` : ''
  const rest = Object.entries(o).filter(([k]) => !HEAD.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
  const level = LEVELS[o.level] ?? String(o.level)
  const paint = color ? COLORS[o.level] : undefined
  const head = paint === undefined ? level : `${paint}${level}\x1b[0m`
  return `${time} ${head} ${name}${o.msg}${rest.length > 0 ? '  ' + rest.join(' ') : ''}`
}

/** Whether `keyedge start` rewrites its children's logs: KEYEDGE_LOG_FORMAT=pretty|json, else on a terminal. */
export function wantsPretty (env: NodeJS.ProcessEnv = process.env, tty = process.stdout.isTTY === true): boolean {
  if (env.KEYEDGE_LOG_FORMAT === 'pretty') return true
  if (env.KEYEDGE_LOG_FORMAT === 'json') return false
  return tty
}

/** Copies `from` to `to` line by line through prettyLogLine. */
export function pipePretty (from: Readable, to: Writable, color: boolean): void {
  let partial = ''
  from.setEncoding('utf8')
  from.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n')
    partial = lines.pop() ?? ''
    if (lines.length > 0) to.write(lines.map(l => prettyLogLine(l, color)).join('\n') + '\n')
  })
  from.on('end', () => { if (partial !== '') to.write(prettyLogLine(partial, color) + '\n') })
}
