// The V8 heap flag every proxy worker starts with: a young generation of at most 2 MiB per
// semi-space instead of V8's default (16 MiB on Node 24).
//
// Why: a worker streaming a response allocates little JavaScript but a fresh ArrayBuffer for every
// read from the upstream socket (64 KiB each). With a large young generation, scavenges are rare,
// so those buffers' memory is only handed back by full mark-compact collections, which V8 starts
// every ~16 MiB of such memory and which cost in proportion to the whole heap: about half the
// worker's CPU for a 1 MiB response went into them (docs/benchmarks.md, "1 MiB streaming, session
// 4"). A 2 MiB semi-space scavenges often enough to free those buffers young: measured on a 1 MiB
// streamed response, CPU per response -45 % and peak worker RSS -40 MB, keep-alive GETs within
// noise (+0–4 %). An operator's own --max-semi-space-size (command line or NODE_OPTIONS) wins.

/** Semi-space size, in MiB, of the workers' young generation (V8 `--max-semi-space-size`). */
export const WORKER_SEMI_SPACE_MB = 2

/**
 * The flags to put in front of a worker's exec arguments: `--max-semi-space-size=2`, unless
 * `execArgv` or `nodeOptions` (the NODE_OPTIONS the worker inherits) already set a semi-space size.
 */
export function workerHeapArgv (execArgv: readonly string[], nodeOptions: string = process.env.NODE_OPTIONS ?? ''): string[] {
  const own = [...execArgv, ...nodeOptions.split(/\s+/)].some(a => /^--max[-_]semi[-_]space[-_]size(=|$)/.test(a))
  return own ? [] : [`--max-semi-space-size=${WORKER_SEMI_SPACE_MB}`]
}
