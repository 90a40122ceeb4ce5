// Public surface of the proxy configuration: schema, defaults, types, validation and loading.

export { configDefaults, DEFAULT_CIPHERS } from './defaults.js'
export { loadConfig } from './load.js'
export { validateConfig, normalizeName, isAddressOrCidr } from './validate.js'
export { EdgeConfigSchema } from './schema.js'
export type * from './types.js'
