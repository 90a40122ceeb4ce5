// Option parsing shared by the benchmarks: bounded integers with a clear message naming the flag.

/** `v` as an integer in [min, max], `def` when absent. @throws Error naming `--name` otherwise. */
export function intOption (name: string, v: string | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer from ${min} to ${max}`)
  return n
}
