// The crash-safe writes live in lib/atomic-file.ts (one copy for keyd and the proxy); re-exported for keyd's modules.
export { writeFileAtomic, writeFileAtomicAsync, fsyncDir } from '../../lib/atomic-file.js'
