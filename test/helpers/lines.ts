// Splitting a child's output into lines. A pipe delivers bytes in chunks of any size, so a JSON log
// line (or a multi-byte UTF-8 character) can be cut in two; the cut part waits for the next chunk.
import { StringDecoder } from 'node:string_decoder'

/** Turns a byte stream into complete lines, holding a partial last line until its newline arrives. */
export class LineSplitter {
  readonly #decoder = new StringDecoder('utf8')
  #partial = ''

  /** The lines completed by `chunk` (with what was held before), without line ends; empty lines are dropped. */
  push (chunk: Buffer | string): string[] {
    const text = this.#partial + (typeof chunk === 'string' ? chunk : this.#decoder.write(chunk))
    const parts = text.split('\n')
    // The last part has no newline yet: an empty string when the chunk ended on one.
    this.#partial = parts.pop() ?? ''
    return clean(parts)
  }

  /** At the end of the stream: what was held (a last line without a newline), if anything. */
  end (): string[] {
    const rest = this.#partial + this.#decoder.end()
    this.#partial = ''
    return clean(rest.split('\n'))
  }
}

function clean (parts: string[]): string[] {
  return parts.map(l => l.endsWith('\r') ? l.slice(0, -1) : l).filter(l => l !== '')
}
