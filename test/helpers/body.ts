// A large response body written the way a well-behaved upstream writes one.

import type { ServerResponse } from 'node:http'

/** Writes `chunk` `count` times to `res`, waiting for 'drain' whenever its buffer is full, then ends it. */
export function writeRepeated (res: ServerResponse, chunk: Buffer, count: number): void {
  let left = count
  const more = (): void => {
    while (left > 0) {
      left--
      if (!res.write(chunk)) { res.once('drain', more); return }
    }
    res.end()
  }
  more()
}
