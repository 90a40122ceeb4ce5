// One full garbage collection after a large certificate load. Checking 100,000 entries (and loading
// their config) leaves ~100 MB of garbage in a young heap that V8 sized generously for it; with no
// full collection afterwards, V8's memory reducer never starts and the worker keeps that memory
// (measured: 266 MB resident at 100,000 entries). One full collection (~4 ms per 1,000 entries)
// lets the reducer hand the pages back within seconds (156 MB). Node exposes no collection call
// without --expose-gc: the flag is set for a new context only, which then holds `gc`.

import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

let gc: (() => void) | undefined

/** Runs a full garbage collection; false when this V8 did not expose one. */
export function collectGarbage (): boolean {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc')
      gc = runInNewContext('gc') as (() => void) | undefined
    } catch {
      gc = undefined
    }
    if (typeof gc !== 'function') { gc = undefined; return false }
  }
  gc()
  return true
}
