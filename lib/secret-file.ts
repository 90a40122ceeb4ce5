// Secret files (keyd client secrets, token caller secrets): what counts as the secret is the file's
// bytes without trailing whitespace, so an editor's final newline never changes the secret.

/** Trims trailing whitespace (LF, CR, space, tab) from a secret file's bytes; returns a view, no copy. */
export function secretBytes (raw: Buffer): Buffer {
  let end = raw.length
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d || raw[end - 1] === 0x20 || raw[end - 1] === 0x09)) end--
  return raw.subarray(0, end)
}
