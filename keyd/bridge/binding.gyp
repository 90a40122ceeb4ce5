# Builds the keyedge OpenSSL provider as build/Release/keyedge_provider.so.
# Compiled against Node's own OpenSSL headers; it must not link libcrypto/libssl
# (check-no-libcrypto.mjs verifies that after the build).
{
  'targets': [
    {
      'target_name': 'keyedge_provider',
      'type': 'shared_library',
      'product_dir': '<(PRODUCT_DIR)',
      'product_prefix': '',
      'product_extension': 'so',
      'sources': ['provider.c', 'transport.c', 'breaker.c', 'wire.c', 'params.c', 'keymgmt.c', 'signature.c', 'decoder.c'],
      'cflags': ['-std=gnu11', '-Wall', '-Wextra', '-Werror', '-fvisibility=hidden', '-O2'],
      'cflags!': ['-Wno-unused-parameter'],
      'ldflags': ['-Wl,--no-undefined', '-Wl,-z,defs']
    }
  ]
}
