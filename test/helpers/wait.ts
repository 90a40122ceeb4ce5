// Waiting for a condition in tests: poll with a deadline, never a fixed sleep.

/** Polls `probe` until it returns true, every 50 ms; false once `ms` passed. */
export async function until (probe: () => Promise<boolean> | boolean, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await probe()) return true
    if (Date.now() > deadline) return false
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** `p`, or a rejection naming `what` after `ms`: a wait that is never unbounded. */
export async function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms) })
  try {
    return await Promise.race([p, late])
  } finally { clearTimeout(timer) }
}
