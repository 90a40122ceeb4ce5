// Indexed reads in tests (noUncheckedIndexedAccess): a value the test expects to be there, checked,
// so that a missing one fails the test with what was missing instead of a TypeError further on.

/** `value`, typed as present; throws `expected <what>` when it is undefined. */
export function defined<T> (value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`expected ${what}, found nothing`)
  return value
}
