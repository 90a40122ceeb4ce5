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
