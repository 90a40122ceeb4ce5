// The crash-safe write lives in lib/atomic-file.ts (one copy for keyd and the proxy); re-exported for keyd's modules.
export { writeFileAtomic, fsyncDir } from '../../lib/atomic-file.js'
