// Public surface of the admin subsystem: the loopback admin listener.

export { startAdminServer, reloadStatus } from './admin-server.js'
export type { AdminBackend, AdminReload, AdminServer } from './admin-server.js'
