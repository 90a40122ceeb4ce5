// Public surface of the admin subsystem: the loopback admin listener and keyd's readiness probe.

export { startAdminServer, reloadStatus } from './admin-server.js'
export type { AdminBackend, AdminReload, AdminServer } from './admin-server.js'
export { startKeydProbe } from './keyd-probe.js'
export type { KeydHealth, KeydProbe } from './keyd-probe.js'
